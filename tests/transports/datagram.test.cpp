// asyncio's contract for datagram transports, written
// once and run on UDP and on Unix datagram sockets, against a plain
// blocking socket as the peer; plus read-side backpressure.

#include <catch2/catch.hpp>

#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <caf/event_based_actor.hpp>

#include "support/harness.hpp"
#include "tact/runtime/endpoint.hpp"
#include "tact/protocols/echo.hpp"
#include "tact/runtime/messages.hpp"

using namespace tact;
using namespace tact::test;

namespace {

enum class dkind { udp, unix_dgram };

dkind any_dkind() {
  return GENERATE(dkind::udp, dkind::unix_dgram);
}

const char* name_of(dkind k) {
  return k == dkind::udp ? "udp" : "unix datagram";
}

// A plain blocking datagram socket: bound to 127.0.0.1:0 or a fresh path.
class dpeer {
public:
  explicit dpeer(dkind k) : k_(k) {
    if (k == dkind::udp) {
      fd_ = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      sockaddr_in in{};
      in.sin_family = AF_INET;
      in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&in), sizeof(in)) == 0);
      socklen_t len = sizeof(in);
      getsockname(fd_, reinterpret_cast<sockaddr*>(&in), &len);
      addr_ = endpoint::inet("127.0.0.1", ntohs(in.sin_port));
    } else {
      fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      auto path = temp_socket_path();
      sockaddr_un un{};
      un.sun_family = AF_UNIX;
      std::snprintf(un.sun_path, sizeof(un.sun_path), "%s", path.c_str());
      REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&un), sizeof(un)) == 0);
      addr_ = endpoint::unix_path(path);
    }
  }

  ~dpeer() { close(); }

  void close() {
    if (fd_ >= 0)
      ::close(fd_);
    fd_ = -1;
  }

  [[nodiscard]] const endpoint& addr() const { return addr_; }
  [[nodiscard]] int fd() const { return fd_; }

  // Sends `data` to `to` (a transport's sockname).
  void send_to(const std::string& data, const endpoint& to) {
    ssize_t n;
    if (k_ == dkind::udp) {
      sockaddr_in in{};
      in.sin_family = AF_INET;
      in.sin_port = htons(to.port);
      in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      n = ::sendto(fd_, data.data(), data.size(), 0,
                   reinterpret_cast<sockaddr*>(&in), sizeof(in));
    } else {
      sockaddr_un un{};
      un.sun_family = AF_UNIX;
      std::snprintf(un.sun_path, sizeof(un.sun_path), "%s", to.path.c_str());
      n = ::sendto(fd_, data.data(), data.size(), 0,
                   reinterpret_cast<sockaddr*>(&un), sizeof(un));
    }
    REQUIRE(n == static_cast<ssize_t>(data.size()));
  }

  // One datagram, or nothing within `timeout`.
  std::optional<std::string> recv(std::chrono::milliseconds timeout = 5s) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0)
      return std::nullopt;
    std::string buf(300 * 1024, '\0');
    auto n = ::recv(fd_, buf.data(), buf.size(), 0);
    if (n < 0)
      return std::nullopt;
    buf.resize(static_cast<size_t>(n));
    return buf;
  }

private:
  dkind k_;
  int fd_ = -1;
  endpoint addr_;
};

// What a datagram protocol saw: the journal's events, handle and reason,
// and the datagrams and errors, guarded by the journal's lock.
struct dlog : journal {
  std::vector<std::pair<std::string, endpoint>> datagrams;
  std::vector<caf::error> errors;
};

// Records every callback; `on_made` and `on_datagram` let a test react.
class drecorder : public datagram_protocol {
public:
  explicit drecorder(std::shared_ptr<dlog> log) : log_(std::move(log)) {
    // nop
  }

  void connection_made(transport& t) override {
    t_ = t;
    log_->set_handle(t);
    log_->add("connection_made");
    if (on_made)
      on_made(t_);
  }

  void datagram_received(bytes data, endpoint from) override {
    {
      std::lock_guard<journal> guard{*log_};
      log_->datagrams.emplace_back(std::string(data.begin(), data.end()), from);
    }
    log_->add("datagram_received");
    if (on_datagram)
      on_datagram(t_, data, from);
  }

  void error_received(const caf::error& reason) override {
    {
      std::lock_guard<journal> guard{*log_};
      log_->errors.push_back(reason);
    }
    log_->add("error_received");
  }

  void pause_writing() override { log_->add("pause_writing"); }

  void resume_writing() override { log_->add("resume_writing"); }

  void connection_lost(const caf::error& reason) override {
    log_->set_reason(reason);
    log_->set_handle(transport{});
    log_->add("connection_lost");
    t_ = transport{};
  }

  std::function<void(transport&)> on_made;
  std::function<void(transport&, const bytes&, const endpoint&)> on_datagram;

private:
  std::shared_ptr<dlog> log_;
  transport t_;
};

protocol_factory drecording(std::shared_ptr<dlog> log,
                            std::function<void(drecorder&)> setup = {}) {
  return [log, setup] {
    auto p = std::make_unique<drecorder>(log);
    if (setup)
      setup(*p);
    return p;
  };
}

// An endpoint of kind `k` in `rt`: bound (to 127.0.0.1:0 or a fresh path),
// connected to `remote` when given.
caf::expected<transport> open(runtime& rt, dkind k, protocol_factory f,
                              const std::optional<endpoint>& remote = {},
                              bool bind_local = true) {
  if (k == dkind::udp) {
    datagram_options opts;
    if (bind_local)
      opts.local_addr = endpoint::inet("127.0.0.1", 0);
    opts.remote_addr = remote;
    if (!bind_local && !remote)
      opts.family = address_family::ipv4;
    return rt.create_datagram_endpoint(std::move(f), opts);
  }
  return rt.create_unix_datagram_endpoint(
    std::move(f), bind_local ? temp_socket_path() : std::string{},
    remote ? remote->path : std::string{});
}

// The transport's own address, from its extra info.
endpoint sockname(const transport& t) {
  auto v = t.get_extra_info("sockname");
  REQUIRE(v);
  if (auto* path = caf::get_if<std::string>(&*v))
    return endpoint::unix_path(*path);
  auto& list = caf::get<caf::config_value::list>(*v);
  return endpoint::inet(caf::get<std::string>(list[0]),
                        static_cast<uint16_t>(caf::get<int64_t>(list[1])));
}

} // namespace

SCENARIO("datagram: connection_made comes first and connection_lost last, once") {
  auto k = any_dkind();
  INFO("transport: " << name_of(k));
  auto log = std::make_shared<dlog>();
  with_runtime([&](runtime& rt) {
    auto t = open(rt, k, drecording(log));
    REQUIRE(t);
    REQUIRE(log->wait_for("connection_made"));
    SECTION("close, abort, close") {
      t->close();
      t->abort();
      t->close();
    }
    SECTION("abort twice") {
      t->abort();
      t->abort();
    }
    REQUIRE(log->wait_for("connection_lost"));
    std::this_thread::sleep_for(50ms);
    auto ev = log->events();
    CHECK(ev.front() == "connection_made");
    CHECK(ev.back() == "connection_lost");
    CHECK(log->count("connection_made") == 1);
    CHECK(log->count("connection_lost") == 1);
    CHECK(log->lost_reason() == caf::none);
  });
}

SCENARIO("datagram: is_closing is true from close or abort on") {
  auto k = any_dkind();
  INFO("transport: " << name_of(k));
  auto log = std::make_shared<dlog>();
  with_runtime([&](runtime& rt) {
    auto t = open(rt, k, drecording(log));
    REQUIRE(t);
    REQUIRE(log->wait_for("connection_made"));
    CHECK_FALSE(t->is_closing());
    CHECK(t->is_reading());
    t->close();
    CHECK(t->is_closing());
    CHECK_FALSE(t->is_reading());
    REQUIRE(log->wait_for("connection_lost"));
    CHECK(t->is_closing());
  });
}

SCENARIO("datagram: sendto with and without an address; datagram_received "
         "names the sender") {
  auto k = any_dkind();
  INFO("transport: " << name_of(k));
  auto log = std::make_shared<dlog>();
  with_runtime([&](runtime& rt) {
    dpeer peer{k};
    auto t = open(rt, k, drecording(log));
    REQUIRE(t);
    REQUIRE(log->wait_for("connection_made"));
    // Unconnected: the address is needed.
    CHECK(t->sendto(to_bytes("one"), peer.addr()) == caf::none);
    CHECK(peer.recv() == "one");
    // Empty datagrams are sent (asyncio >= 3.13).
    CHECK(t->sendto(bytes{}, peer.addr()) == caf::none);
    CHECK(peer.recv() == "");
    // write() is not a datagram operation.
    CHECK(code_of(t->write(to_bytes("x"))) == errc::not_supported);
    CHECK_FALSE(t->can_write_eof());
    // No peername when not connected (asyncio's None).
    CHECK_FALSE(t->get_extra_info("peername"));
    CHECK(t->get_extra_info("sockname"));
    // The peer sends; the protocol hears it with the peer's address.
    peer.send_to("hello", sockname(*t));
    REQUIRE(log->wait_for("datagram_received"));
    {
      std::lock_guard<journal> guard{*log};
      CHECK(log->datagrams[0].first == "hello");
      CHECK(log->datagrams[0].second == peer.addr());
    }
    t->close();
    REQUIRE(log->wait_for("connection_lost"));
  });
}

SCENARIO("datagram: a connected endpoint sends without an address and "
         "refuses another one") {
  auto k = any_dkind();
  INFO("transport: " << name_of(k));
  auto log = std::make_shared<dlog>();
  with_runtime([&](runtime& rt) {
    dpeer peer{k};
    dpeer other{k};
    auto t = open(rt, k, drecording(log), peer.addr());
    REQUIRE(t);
    REQUIRE(log->wait_for("connection_made"));
    CHECK(t->sendto(to_bytes("no address")) == caf::none);
    CHECK(peer.recv() == "no address");
    CHECK(t->sendto(to_bytes("same address"), peer.addr()) == caf::none);
    CHECK(peer.recv() == "same address");
    CHECK(code_of(t->sendto(to_bytes("x"), other.addr()))
          == errc::invalid_argument);
    CHECK_FALSE(other.recv(100ms));
    auto pn = t->get_extra_info("peername");
    REQUIRE(pn);
    CHECK((caf::holds_alternative<caf::config_value::list>(*pn)
           || !caf::get<std::string>(*pn).empty()));
    t->close();
    REQUIRE(log->wait_for("connection_lost"));
  });
}

SCENARIO("datagram: an unconnected endpoint without an address is an error") {
  auto k = any_dkind();
  INFO("transport: " << name_of(k));
  auto log = std::make_shared<dlog>();
  with_runtime([&](runtime& rt) {
    auto t = open(rt, k, drecording(log));
    REQUIRE(t);
    REQUIRE(log->wait_for("connection_made"));
    CHECK(code_of(t->sendto(to_bytes("nowhere"))) == errc::invalid_argument);
    // Nor is an empty address (an unnamed socket) or a host name.
    CHECK(code_of(t->sendto(to_bytes("x"), endpoint{}))
          == errc::invalid_argument);
    CHECK(code_of(t->sendto(to_bytes("x"), endpoint::inet("localhost", 9)))
          == errc::invalid_argument);
    CHECK(log->count("error_received") == 0);
    CHECK_FALSE(t->is_closing());
    t->close();
    REQUIRE(log->wait_for("connection_lost"));
  });
}

SCENARIO("datagram: OS errors on send and receive are error_received and the "
         "transport stays open") {
  auto k = any_dkind();
  INFO("transport: " << name_of(k));
  auto log = std::make_shared<dlog>();
  with_runtime([&](runtime& rt) {
    dpeer peer{k};
    auto t = open(rt, k, drecording(log), peer.addr());
    REQUIRE(t);
    REQUIRE(log->wait_for("connection_made"));
    // Too big for one datagram: EMSGSIZE.
    CHECK(t->sendto(bytes(k == dkind::udp ? 70000 : 8 * 1024 * 1024, 'x'))
          == caf::none);
    REQUIRE(log->wait_for("error_received"));
    {
      std::lock_guard<journal> guard{*log};
      CHECK(code_of(log->errors[0]) == errc::message_too_long);
    }
    CHECK_FALSE(t->is_closing());
    CHECK(t->sendto(to_bytes("after")) == caf::none);
    CHECK(peer.recv() == "after");
    // The connected peer goes away: ICMP port unreachable (UDP) or a
    // refused send (Unix) comes back as connection_refused.
    peer.close();
    REQUIRE(eventually([&] {
      (void) t->sendto(to_bytes("anyone?"));
      return log->wait_for("error_received", 2, 100ms);
    }));
    {
      std::lock_guard<journal> guard{*log};
      CHECK(code_of(log->errors[1]) == errc::connection_refused);
    }
    CHECK_FALSE(t->is_closing());
    CHECK(log->count("connection_lost") == 0);
    t->close();
    REQUIRE(log->wait_for("connection_lost"));
    CHECK(log->lost_reason() == caf::none);
  });
}

SCENARIO("datagram: large datagrams arrive whole") {
  auto k = any_dkind();
  INFO("transport: " << name_of(k));
  auto log = std::make_shared<dlog>();
  with_runtime([&](runtime& rt) {
    dpeer peer{k};
    auto t = open(rt, k, drecording(log));
    REQUIRE(t);
    REQUIRE(log->wait_for("connection_made"));
    // UDP's largest payload over IPv4 is 65,507 bytes; a Unix datagram can
    // be as large as the sender's buffer allows.
    size_t size = k == dkind::udp ? 65000 : 200 * 1024;
    int buf = 1024 * 1024;
    setsockopt(peer.fd(), SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
    std::string payload(size, '\0');
    for (size_t i = 0; i < size; ++i)
      payload[i] = static_cast<char>(i * 31 % 251);
    peer.send_to(payload, sockname(*t));
    REQUIRE(log->wait_for("datagram_received"));
    {
      std::lock_guard<journal> guard{*log};
      CHECK(log->datagrams[0].first.size() == size);
      CHECK(log->datagrams[0].first == payload);
    }
    t->close();
    REQUIRE(log->wait_for("connection_lost"));
  });
}

SCENARIO("datagram: pause_reading holds datagrams back; pausing in "
         "connection_made reads none") {
  auto k = any_dkind();
  INFO("transport: " << name_of(k));
  auto log = std::make_shared<dlog>();
  with_runtime([&](runtime& rt) {
    dpeer peer{k};
    auto t = open(rt, k, drecording(log, [](drecorder& r) {
      r.on_made = [](transport& tr) {
        tr.pause_reading();
        tr.pause_reading();
      };
    }));
    REQUIRE(t);
    REQUIRE(log->wait_for("connection_made"));
    // on_made runs right after the journal entry.
    REQUIRE(eventually([&] { return !t->is_reading(); }));
    peer.send_to("a", sockname(*t));
    peer.send_to("b", sockname(*t));
    CHECK_FALSE(log->wait_for("datagram_received", 1, 200ms));
    t->resume_reading();
    t->resume_reading();
    CHECK(t->is_reading());
    REQUIRE(log->wait_for("datagram_received", 2));
    {
      std::lock_guard<journal> guard{*log};
      CHECK(log->datagrams[0].first == "a");
      CHECK(log->datagrams[1].first == "b");
    }
    t->close();
    t->pause_reading(); // a no-op once closing
    CHECK_FALSE(t->is_reading());
    REQUIRE(log->wait_for("connection_lost"));
  });
}

SCENARIO("datagram: set_protocol reroutes; get_protocol is empty after loss") {
  auto k = any_dkind();
  INFO("transport: " << name_of(k));
  auto first = std::make_shared<dlog>();
  auto second = std::make_shared<dlog>();
  with_runtime([&](runtime& rt) {
    dpeer peer{k};
    auto t = open(rt, k, drecording(first));
    REQUIRE(t);
    REQUIRE(first->wait_for("connection_made"));
    auto p1 = t->get_protocol();
    REQUIRE(p1);
    auto p2 = protocol_factory{drecording(second)}(rt.mux());
    t->set_protocol(p2);
    CHECK(t->get_protocol() == p2);
    peer.send_to("to the second", sockname(*t));
    REQUIRE(second->wait_for("datagram_received"));
    CHECK(first->count("datagram_received") == 0);
    t->close();
    REQUIRE(second->wait_for("connection_lost"));
    CHECK(first->count("connection_lost") == 0);
    CHECK_FALSE(t->get_protocol());
  });
}

SCENARIO("datagram: a callback that throws is fatal for its endpoint") {
  auto k = any_dkind();
  INFO("transport: " << name_of(k));
  auto log = std::make_shared<dlog>();
  std::vector<std::string> warnings;
  with_runtime(
    [&](runtime& rt) {
      dpeer peer{k};
      auto t = open(rt, k, drecording(log, [](drecorder& r) {
        r.on_datagram = [](transport&, const bytes&, const endpoint&) {
          throw std::runtime_error("boom");
        };
      }));
      REQUIRE(t);
      REQUIRE(log->wait_for("connection_made"));
      peer.send_to("x", sockname(*t));
      REQUIRE(log->wait_for("connection_lost"));
      CHECK(code_of(log->lost_reason()) == errc::protocol_failed);
    },
    &warnings);
  CHECK(warnings.size() == 1);
}

SCENARIO("datagram: write buffer limits follow asyncio's rules") {
  auto k = any_dkind();
  INFO("transport: " << name_of(k));
  auto log = std::make_shared<dlog>();
  with_runtime([&](runtime& rt) {
    auto t = open(rt, k, drecording(log));
    REQUIRE(t);
    using limits = std::pair<size_t, size_t>;
    CHECK(t->get_write_buffer_limits() == limits{16384, 65536});
    CHECK_FALSE(t->set_write_buffer_limits(1000));
    CHECK(t->get_write_buffer_limits() == limits{250, 1000});
    CHECK_FALSE(t->set_write_buffer_limits(std::nullopt, 300));
    CHECK(t->get_write_buffer_limits() == limits{300, 1200});
    CHECK(code_of(t->set_write_buffer_limits(100, 500))
          == errc::invalid_argument);
    CHECK(t->get_write_buffer_size() == 0);
    t->close();
    REQUIRE(log->wait_for("connection_lost"));
  });
}

// A UDP send on loopback never blocks (the kernel hands the datagram over
// at once), so the queue is only observable with Unix datagram sockets: a
// peer that does not read fills its receive queue and sends block.
SCENARIO("datagram: queued bytes pause and resume the protocol; close "
         "flushes the queue, abort drops it") {
  auto log = std::make_shared<dlog>();
  auto flush = GENERATE(true, false);
  INFO((flush ? "close" : "abort"));
  with_runtime([&](runtime& rt) {
    dpeer peer{dkind::unix_dgram};
    auto t = open(rt, dkind::unix_dgram, drecording(log), peer.addr());
    REQUIRE(t);
    REQUIRE(log->wait_for("connection_made"));
    // 400 datagrams of 1 KiB: the peer's queue takes a few hundred at
    // most, the rest waits in the transport.
    for (int i = 0; i < 400; ++i)
      CHECK(t->sendto(bytes(1024, static_cast<char>(i))) == caf::none);
    // The transport queued what the kernel refused, past the high
    // watermark.
    REQUIRE(log->wait_for("pause_writing"));
    CHECK(t->get_write_buffer_size() > 64 * 1024);
    if (flush) {
      t->close();
      CHECK(t->sendto(bytes(10, 'z')) == caf::none); // dropped, counted
      CHECK(t->dropped_writes() == 1);
      // Everything arrives, in order, before connection_lost.
      for (int i = 0; i < 400; ++i) {
        auto d = peer.recv();
        REQUIRE(d);
        CHECK(d->size() == 1024);
        CHECK((*d)[0] == static_cast<char>(i));
      }
      REQUIRE(log->wait_for("connection_lost"));
      CHECK(log->count("pause_writing") == 1);
      CHECK(log->count("resume_writing") == 1);
    } else {
      t->abort();
      REQUIRE(log->wait_for("connection_lost"));
      size_t got = 0;
      while (peer.recv(100ms))
        ++got;
      CHECK(got < 400);
    }
    CHECK(log->lost_reason() == caf::none);
  });
}

SCENARIO("datagram: a protocol that does not keep up has datagrams dropped "
         "and counted") {
  auto k = any_dkind();
  INFO("transport: " << name_of(k));
  std::vector<std::string> warnings;
  with_runtime(
    [&](runtime& rt) {
      dpeer peer{k};
      // A behaviour that never gives read credit back until told to.
      auto received = std::make_shared<std::atomic<size_t>>(0);
      auto count = std::make_shared<std::atomic<size_t>>(0);
      auto factory = [&rt, received, count] {
        return rt.spawn_on_loop([received, count](caf::event_based_actor* self)
                                  -> caf::behavior {
          auto t = std::make_shared<transport>();
          return {
            [=](connection_made& msg) { *t = msg.handle; },
            [=](datagram_received& msg) {
              *received += msg.data.size();
              ++*count;
            },
            [=](connection_lost&) { self->quit(); },
          };
        });
      };
      auto t = open(rt, k, factory);
      REQUIRE(t);
      for (int i = 0; i < 64; ++i)
        peer.send_to(std::string(1024, 'd'), sockname(*t));
      REQUIRE(eventually([&] {
        return *received + t->dropped_datagrams() * 1024 == 64 * 1024;
      }));
      // The credit (8 KiB here) bounds what was delivered, plus the one
      // datagram that crossed it.
      CHECK(*received <= 9 * 1024);
      CHECK(t->dropped_datagrams() >= 55);
      // Each datagram also costs datagram_overhead; giving all of it back
      // lets datagrams in again.
      t->consumed(*received + *count * datagram_overhead);
      peer.send_to("more", sockname(*t));
      REQUIRE(eventually([&] { return *received % 1024 == 4; }));
      t->close();
    },
    &warnings, runtime_options{.read_credit = 8 * 1024});
  // One warning, not one per dropped datagram.
  REQUIRE(warnings.size() == 1);
  CHECK(warnings[0].find("dropped") != std::string::npos);
}

SCENARIO("datagram: sendto after close is dropped and counted, not sent") {
  auto k = any_dkind();
  INFO("transport: " << name_of(k));
  auto log = std::make_shared<dlog>();
  with_runtime([&](runtime& rt) {
    dpeer peer{k};
    auto t = open(rt, k, drecording(log));
    REQUIRE(t);
    REQUIRE(log->wait_for("connection_made"));
    CHECK(t->sendto(to_bytes("before"), peer.addr()) == caf::none);
    t->close();
    CHECK(t->sendto(to_bytes("after"), peer.addr()) == caf::none);
    CHECK(t->dropped_writes() == 1);
    // close() flushed what came before it.
    CHECK(peer.recv() == "before");
    REQUIRE(log->wait_for("connection_lost"));
    CHECK(log->lost_reason() == caf::none);
    CHECK(t->sendto(to_bytes("lost"), peer.addr()) == caf::none);
    CHECK(t->dropped_writes() == 2);
    CHECK_FALSE(peer.recv(100ms));
  });
}

SCENARIO("datagram: unbound endpoints send; an unnamed Unix sender has no "
         "address") {
  auto k = any_dkind();
  INFO("transport: " << name_of(k));
  auto bound = std::make_shared<dlog>();
  auto unbound = std::make_shared<dlog>();
  with_runtime([&](runtime& rt) {
    auto server = open(rt, k, drecording(bound));
    REQUIRE(server);
    // UDP: family only; Unix: no path (unnamed).
    auto client = open(rt, k, drecording(unbound), std::nullopt, false);
    REQUIRE(client);
    REQUIRE(unbound->wait_for("connection_made"));
    CHECK(client->sendto(to_bytes("from nowhere"), sockname(*server))
          == caf::none);
    REQUIRE(bound->wait_for("datagram_received"));
    std::lock_guard<journal> guard{*bound};
    CHECK(bound->datagrams[0].first == "from nowhere");
    if (k == dkind::udp)
      CHECK(bound->datagrams[0].second.port != 0); // bound by the send
    else
      CHECK(bound->datagrams[0].second.empty());
  });
}

SCENARIO("datagram: endpoint options are checked") {
  with_runtime([&](runtime& rt) {
    auto f = [] { return std::make_unique<datagram_echo_protocol>(); };
    // Neither an address nor a family.
    CHECK(code_of(rt.create_datagram_endpoint(f, {}).error())
          == errc::invalid_argument);
    // A family that the address does not have.
    datagram_options v6_only;
    v6_only.local_addr = endpoint::inet("127.0.0.1", 0);
    v6_only.family = address_family::ipv6;
    CHECK_FALSE(rt.create_datagram_endpoint(f, v6_only));
    // A Unix path that is too long.
    CHECK(code_of(rt.create_unix_datagram_endpoint(f, std::string(200, 'x'))
                    .error())
          == errc::invalid_argument);
  });
}

SCENARIO("datagram: a stream protocol on a datagram endpoint fails at once") {
  auto k = any_dkind();
  INFO("transport: " << name_of(k));
  auto j = std::make_shared<journal>();
  std::vector<std::string> warnings;
  with_runtime(
    [&](runtime& rt) {
      auto t = open(rt, k, recording(j));
      REQUIRE(t);
      REQUIRE(eventually([&] { return t->is_closing(); }));
      std::this_thread::sleep_for(50ms);
      // Neither connection_made nor connection_lost reached it.
      CHECK(j->events().empty());
    },
    &warnings);
  REQUIRE(warnings.size() == 1);
  CHECK(warnings[0].find("stream protocol on a datagram") != std::string::npos);
}

SCENARIO("datagram: a behaviour opens an endpoint through the loop and is "
         "answered with it, or with the error") {
  auto k = any_dkind();
  INFO("transport: " << name_of(k));
  auto log = std::make_shared<dlog>();
  with_runtime([&](runtime& rt) {
    dpeer peer{k};
    // Asks the loop from a behaviour on it, which must not block.
    auto ask = [&](const loop_ops::open_datagram& req) {
      return ask_from_loop<transport>(rt, req, 10s);
    };
    loop_ops::open_datagram req{drecording(log)};
    if (k == dkind::udp) {
      // A name, resolved on the loop (the hosts file's localhost).
      req.options.local_addr = endpoint::inet("localhost", 0);
      req.options.remote_addr = endpoint::inet("localhost", peer.addr().port);
      req.options.family = address_family::ipv4;
    } else {
      req.unix_socket = true;
      req.local_path = temp_socket_path();
      req.remote_path = peer.addr().path;
    }
    auto t = ask(req);
    REQUIRE(t);
    REQUIRE(log->wait_for("connection_made"));
    CHECK(t->sendto(to_bytes("asked for"), std::nullopt) == caf::none);
    CHECK(peer.recv() == "asked for");
    peer.send_to("answered", sockname(*t));
    REQUIRE(log->wait_for("datagram_received"));
    t->close();
    REQUIRE(log->wait_for("connection_lost"));
    // Errors come back as answers.
    loop_ops::open_datagram bad{drecording(log)};
    if (k == dkind::udp) {
      // Neither an address nor a family.
      auto e = ask(bad);
      REQUIRE_FALSE(e);
      CHECK(e.error() == make_error(errc::invalid_argument));
    } else {
      bad.unix_socket = true;
      bad.local_path = std::string(200, 'x');
      auto e = ask(bad);
      REQUIRE_FALSE(e);
      CHECK(e.error() == make_error(errc::invalid_argument));
    }
    CHECK(log->count("connection_made") == 1);
    if (k == dkind::unix_dgram)
      ::unlink(req.local_path.c_str());
  });
}
