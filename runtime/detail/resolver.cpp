#include "tact/runtime/detail/resolver.hpp"

#include <algorithm>
#include <cstring>
#include <mutex>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>

#include <ares.h>

#include "tact/runtime/detail/multiplexer.hpp"
#include "tact/runtime/errc.hpp"

namespace tact::detail {

namespace {

ares_channel as_channel(void* ptr) {
  return static_cast<ares_channel>(ptr);
}

// A numeric host as an address, without any lookup.
bool numeric(const std::string& host, uint16_t port, sock_address& out) {
  out = sock_address{};
  auto* v4 = reinterpret_cast<sockaddr_in*>(&out.storage);
  if (::inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    out.length = sizeof(sockaddr_in);
    return true;
  }
  // Brackets around an IPv6 host are accepted, as in URLs.
  auto bare = host.size() > 2 && host.front() == '[' && host.back() == ']'
                ? host.substr(1, host.size() - 2)
                : host;
  out = sock_address{};
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&out.storage);
  if (::inet_pton(AF_INET6, bare.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    out.length = sizeof(sockaddr_in6);
    return true;
  }
  return false;
}

std::vector<sock_address> any_addresses(uint16_t port) {
  sock_address v4;
  sock_address v6;
  numeric("0.0.0.0", port, v4);
  numeric("::", port, v6);
  return {v4, v6};
}

} // namespace

/// A socket c-ares asked the loop to watch. Kept for the resolver's life
/// under its descriptor number and reused when c-ares opens another
/// socket with that number: an event still queued for a closed one then
/// never reaches freed memory.
struct resolver::watched final : io_handler {
  resolver* owner = nullptr;
  int fd = -1;
  bool active = false;
  uint32_t events = 0;

  void handle_io(uint32_t ev) override {
    if (!active)
      return;
    bool in = (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) != 0;
    bool out = (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)) != 0;
    owner->process(in ? fd : ARES_SOCKET_BAD, out ? fd : ARES_SOCKET_BAD);
  }

  caf::strong_actor_ptr io_owner() override {
    // The resolver outlives its registrations: the loop owns it.
    return nullptr;
  }
};

resolver::resolver(multiplexer& mux, resolver_settings settings)
  : mux_(mux), settings_(std::move(settings)) {
  // nop
}

resolver::~resolver() {
  destroying_ = true;
  if (timer_ != 0)
    mux_.cancel_timer(timer_);
  if (channel_ != nullptr)
    // Calls each query's callback with ARES_EDESTRUCTION: every waiter is
    // answered with an error below.
    ares_destroy(as_channel(channel_));
  channel_ = nullptr;
  auto left = std::move(lookups_);
  for (auto& [key, waiters] : left)
    for (auto& [port, cb] : waiters)
      cb(make_error(errc::closed, "the loop stopped before '"
                                    + key.substr(2) + "' was resolved"));
}

caf::error resolver::init() {
  if (initialized_)
    return init_error_;
  initialized_ = true;
  static std::once_flag once;
  static int lib_rc = ARES_SUCCESS;
  std::call_once(once, [] { lib_rc = ares_library_init(ARES_LIB_INIT_ALL); });
  if (lib_rc != ARES_SUCCESS)
    return init_error_ = make_error(errc::name_resolution_failed,
                                    std::string{"c-ares: "}
                                      + ares_strerror(lib_rc));
  ares_options opts{};
  opts.sock_state_cb = [](void* data, ares_socket_t fd, int r, int w) {
    on_sock_state(data, fd, r, w);
  };
  opts.sock_state_cb_data = this;
  opts.timeout = static_cast<int>(
    std::clamp<int64_t>(settings_.timeout.count(), 1, 1 << 30));
  opts.tries = std::max(1, settings_.tries);
  ares_channel channel = nullptr;
  auto rc = ares_init_options(&channel, &opts,
                              ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS
                                | ARES_OPT_TRIES);
  if (rc != ARES_SUCCESS)
    return init_error_ = make_error(errc::name_resolution_failed,
                                    std::string{"c-ares: "}
                                      + ares_strerror(rc));
  channel_ = channel;
  if (!settings_.servers.empty()) {
    std::string csv;
    for (auto& s : settings_.servers)
      csv += (csv.empty() ? "" : ",") + s;
    rc = ares_set_servers_ports_csv(channel, csv.c_str());
    if (rc != ARES_SUCCESS)
      return init_error_ = make_error(errc::invalid_argument,
                                      "name servers '" + csv
                                        + "': " + ares_strerror(rc));
  }
  return caf::none;
}

void resolver::resolve(const std::string& host, uint16_t port, bool passive,
                       callback cb) {
  if (destroying_) {
    cb(make_error(errc::closed, "the loop stopped before '" + host
                                  + "' was resolved"));
    return;
  }
  sock_address addr;
  if (host.empty()) {
    if (passive) {
      cb(any_addresses(port));
      return;
    }
    cb(make_error(errc::name_resolution_failed, "empty host name"));
    return;
  }
  if (numeric(host, port, addr)) {
    cb(addresses{addr});
    return;
  }
  auto key = std::string{passive ? "p|" : "a|"} + host;
  if (auto i = cache_.find(key); i != cache_.end()) {
    if (i->second.expires > std::chrono::steady_clock::now()) {
      auto result = i->second.addrs;
      for (auto& a : result)
        set_port(a, port);
      cb(std::move(result));
      return;
    }
    ages_.erase(i->second.age);
    cache_.erase(i);
  }
  if (auto i = lookups_.find(key); i != lookups_.end()) {
    i->second.emplace_back(port, std::move(cb));
    return;
  }
  if (lookups_.size() >= settings_.max_pending) {
    cb(make_error(errc::out_of_resources,
                  "too many names being resolved at once ("
                    + std::to_string(lookups_.size()) + "): '" + host + "'"));
    return;
  }
  if (auto err = init()) {
    cb(std::move(err));
    return;
  }
  lookups_[key].emplace_back(port, std::move(cb));
  if (querying_ >= std::max<size_t>(settings_.max_queries, 1)) {
    waiting_.push_back(std::move(key));
    return;
  }
  start(key);
}

void resolver::start(const std::string& key) {
  ++querying_;
  ares_addrinfo_hints hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = key[0] == 'p' ? ARES_AI_PASSIVE : 0;
  auto host = key.substr(2);
  auto* arg = new query{this, key};
  // May answer before it returns (the hosts file, a malformed name).
  ares_getaddrinfo(as_channel(channel_), host.c_str(), nullptr, &hints,
                   [](void* data, int status, int timeouts,
                      ares_addrinfo* result) {
                     on_answer(data, status, timeouts, result);
                   },
                   arg);
  rearm();
}

void resolver::on_answer(void* arg, int status, int, void* res) {
  std::unique_ptr<query> q{static_cast<query*>(arg)};
  auto* result = static_cast<ares_addrinfo*>(res);
  auto* self = q->self;
  auto* key = &q->key;
  if (self->destroying_) {
    if (result != nullptr)
      ares_freeaddrinfo(result);
    return;
  }
  auto host = key->substr(2);
  if (status != ARES_SUCCESS || result == nullptr) {
    if (result != nullptr)
      ares_freeaddrinfo(result);
    std::string why = status == ARES_ETIMEOUT
                        ? "no name server answered in time"
                        : ares_strerror(status);
    self->finish(*key,
                 make_error(errc::name_resolution_failed,
                            "cannot resolve '" + host + "': " + why),
                 std::chrono::seconds{0});
    return;
  }
  addresses addrs;
  int ttl = -1;
  for (auto* n = result->nodes; n != nullptr; n = n->ai_next) {
    if (n->ai_family != AF_INET && n->ai_family != AF_INET6)
      continue;
    if (n->ai_addrlen > sizeof(sockaddr_storage))
      continue;
    sock_address a;
    std::memcpy(&a.storage, n->ai_addr, n->ai_addrlen);
    a.length = n->ai_addrlen;
    addrs.push_back(a);
    ttl = ttl < 0 ? n->ai_ttl : std::min(ttl, n->ai_ttl);
  }
  ares_freeaddrinfo(result);
  if (addrs.empty()) {
    self->finish(*key,
                 make_error(errc::name_resolution_failed,
                            "no IPv4 or IPv6 address for '" + host + "'"),
                 std::chrono::seconds{0});
    return;
  }
  self->finish(*key, std::move(addrs), std::chrono::seconds{std::max(ttl, 0)});
}

void resolver::finish(const std::string& key, caf::expected<addresses> result,
                      std::chrono::seconds ttl) {
  auto i = lookups_.find(key);
  if (i == lookups_.end())
    return;
  auto waiters = std::move(i->second);
  lookups_.erase(i);
  --querying_;
  // The next names waiting take the free slots. One may be answered at
  // once (the hosts file) and come back here: the loop of the outermost
  // call goes on, so the stack does not grow with the queue.
  if (!draining_) {
    draining_ = true;
    while (!waiting_.empty()
           && querying_ < std::max<size_t>(settings_.max_queries, 1)) {
      auto next = std::move(waiting_.front());
      waiting_.pop_front();
      start(next);
    }
    draining_ = false;
  }
  if (result && ttl.count() > 0 && settings_.cache_entries > 0) {
    while (cache_.size() >= settings_.cache_entries) {
      cache_.erase(ages_.front());
      ages_.pop_front();
    }
    ages_.push_back(key);
    cache_[key] = cached{*result, std::chrono::steady_clock::now() + ttl,
                         std::prev(ages_.end())};
  }
  for (auto& [port, cb] : waiters) {
    if (!result) {
      cb(result.error());
      continue;
    }
    auto copy = *result;
    for (auto& a : copy)
      set_port(a, port);
    cb(std::move(copy));
  }
}

void resolver::on_sock_state(void* data, int fd, int readable, int writable) {
  static_cast<resolver*>(data)->watch(fd, readable != 0, writable != 0);
}

void resolver::watch(int fd, bool readable, bool writable) {
  auto& w = sockets_[fd];
  if (!w) {
    w = std::make_unique<watched>();
    w->owner = this;
    w->fd = fd;
  }
  uint32_t events = (readable ? EPOLLIN : 0u) | (writable ? EPOLLOUT : 0u);
  if (events == 0) {
    if (w->active) {
      mux_.remove(fd);
      w->active = false;
    }
    return;
  }
  if (!w->active) {
    if (mux_.add(fd, events, w.get()) != 0) {
      mux_.warn("resolver: cannot watch descriptor " + std::to_string(fd));
      return;
    }
    w->active = true;
  } else if (w->events != events) {
    mux_.modify(fd, events, w.get());
  }
  w->events = events;
}

void resolver::process(int read_fd, int write_fd) {
  ares_process_fd(as_channel(channel_), read_fd, write_fd);
  rearm();
}

void resolver::rearm() {
  if (timer_ != 0) {
    mux_.cancel_timer(timer_);
    timer_ = 0;
  }
  if (lookups_.empty() || channel_ == nullptr)
    return;
  timeval tv{};
  if (ares_timeout(as_channel(channel_), nullptr, &tv) == nullptr)
    return;
  auto after = std::chrono::seconds{tv.tv_sec}
               + std::chrono::microseconds{tv.tv_usec};
  timer_ = mux_.add_timer(multiplexer::clock_type::now() + after, [this] {
    timer_ = 0;
    process(ARES_SOCKET_BAD, ARES_SOCKET_BAD);
  });
}

} // namespace tact::detail
