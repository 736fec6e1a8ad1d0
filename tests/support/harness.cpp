#include "support/harness.hpp"

#include <cerrno>
#include <cstring>
#include <dirent.h>
#include <filesystem>
#include <thread>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>

namespace tact::test {

namespace {

size_t count_entries(const char* dir) {
  size_t n = 0;
  if (auto* d = opendir(dir)) {
    while (auto* e = readdir(d))
      if (e->d_name[0] != '.')
        ++n;
    closedir(d);
  }
  return n;
}

// Removes the temporary directories of Unix sockets at exit.
struct temp_dirs {
  std::mutex mtx;
  std::vector<std::string> dirs;
  ~temp_dirs() {
    for (auto& d : dirs) {
      std::error_code ec;
      std::filesystem::remove_all(d, ec);
    }
  }
};

temp_dirs& temps() {
  static temp_dirs instance;
  return instance;
}

} // namespace

size_t fd_count() {
  // opendir itself holds one descriptor while counting.
  return count_entries("/proc/self/fd") - 1;
}

size_t thread_count() {
  return count_entries("/proc/self/task");
}

namespace {

// The open descriptors and what they are, for a failure message.
std::string fd_list() {
  std::string result;
  if (auto* dir = opendir("/proc/self/fd")) {
    while (auto* e = readdir(dir)) {
      if (e->d_name[0] == '.')
        continue;
      char target[256] = {};
      auto path = std::string{"/proc/self/fd/"} + e->d_name;
      auto n = ::readlink(path.c_str(), target, sizeof(target) - 1);
      result += std::string{e->d_name} + "->"
                + (n > 0 ? std::string(target, static_cast<size_t>(n)) : "?")
                + " ";
    }
    closedir(dir);
  }
  return result;
}

} // namespace

void with_runtime(const std::function<void(runtime&)>& body,
                  std::vector<std::string>* warnings, runtime_options opts) {
  // ThreadSanitizer starts a helper thread of its own with the first
  // thread the program makes; make it exist before counting.
  static const bool warmed_up = [] {
    std::thread{[] {}}.join();
    return true;
  }();
  (void) warmed_up;
  auto fds_before = fd_count();
  auto fds_before_list = fd_list();
  auto threads_before = thread_count();
  {
    auto mtx = std::make_shared<std::mutex>();
    if (warnings != nullptr)
      opts.on_warning = [warnings, mtx](const std::string& text) {
        std::lock_guard<std::mutex> guard{*mtx};
        warnings->push_back(text);
      };
    runtime rt{opts};
    body(rt);
  }
  CHECK(eventually([&] { return thread_count() == threads_before; }, 2s));
  // Looked at again for a while: a sanitizer may hold a descriptor for a
  // moment (ThreadSanitizer opens /proc/self/maps now and then; once in
  // eight runs of runtime.loop_ops it was counted here), which no leak of
  // ours does.
  auto fds_ok = eventually([&] { return fd_count() == fds_before; }, 2s);
  INFO("descriptors before: " << fds_before_list);
  INFO("descriptors after: " << fd_list());
  CHECK(fds_ok);
  CHECK(thread_count() == threads_before);
}

// -- journal -------------------------------------------------------------------

void journal::add(std::string event, std::string data) {
  std::lock_guard<std::mutex> guard{mtx_};
  events_.push_back(std::move(event));
  data_ += data;
  cv_.notify_all();
}

bool journal::wait(const std::function<bool(journal&)>& pred,
                   std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> guard{mtx_};
  return cv_.wait_for(guard, timeout, [&] { return pred(*this); });
}

bool journal::wait_for(const std::string& name, size_t n,
                       std::chrono::milliseconds timeout) {
  return wait([&](journal& j) { return j.count_unlocked(name) >= n; },
              timeout);
}

std::vector<std::string> journal::events() {
  std::lock_guard<std::mutex> guard{mtx_};
  return events_;
}

size_t journal::count(const std::string& name) {
  std::lock_guard<std::mutex> guard{mtx_};
  return count_unlocked(name);
}

size_t journal::count_unlocked(const std::string& name) const {
  size_t n = 0;
  for (auto& e : events_)
    if (e == name)
      ++n;
  return n;
}

std::string journal::data() {
  std::lock_guard<std::mutex> guard{mtx_};
  return data_;
}

caf::error journal::lost_reason() {
  std::lock_guard<std::mutex> guard{mtx_};
  return reason_;
}

void journal::set_reason(caf::error reason) {
  std::lock_guard<std::mutex> guard{mtx_};
  reason_ = std::move(reason);
}

void journal::set_handle(transport t) {
  std::lock_guard<std::mutex> guard{mtx_};
  handle_ = std::move(t);
}

transport journal::handle() {
  std::lock_guard<std::mutex> guard{mtx_};
  return handle_;
}

// -- recorder --------------------------------------------------------------------

void recorder::connection_made(transport& t) {
  t_ = t;
  j_->set_handle(t);
  j_->add("connection_made");
  if (on_made)
    on_made(t_);
}

void recorder::data_received(bytes data) {
  j_->add("data_received", std::string(data.begin(), data.end()));
  if (on_data)
    on_data(t_, data);
}

bool recorder::eof_received() {
  j_->add("eof_received");
  if (on_eof)
    on_eof(t_);
  return keep_open;
}

void recorder::pause_writing() {
  j_->add("pause_writing");
}

void recorder::resume_writing() {
  j_->add("resume_writing");
}

void recorder::connection_lost(const caf::error& reason) {
  j_->set_reason(reason);
  j_->add("connection_lost");
}

protocol_factory recording(std::shared_ptr<journal> j,
                           std::function<void(recorder&)> setup) {
  return [j, setup] {
    auto r = std::make_unique<recorder>(j);
    if (setup)
      setup(*r);
    return r;
  };
}

const char* name_of(kind k) {
  return k == kind::tcp ? "tcp" : "unix";
}

// -- peer ------------------------------------------------------------------------

peer& peer::operator=(peer&& other) noexcept {
  close();
  fd_ = other.fd_;
  other.fd_ = -1;
  return *this;
}

peer::~peer() {
  close();
}

void peer::close() {
  if (fd_ >= 0)
    ::close(fd_);
  fd_ = -1;
}

void peer::send_all(const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    auto n = ::send(fd_, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      FAIL("peer send failed: " << std::strerror(errno));
    }
    off += static_cast<size_t>(n);
  }
}

std::string peer::recv_n(size_t n, std::chrono::milliseconds timeout) {
  std::string result;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  char buf[65536];
  while (result.size() < n) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0)
      break;
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0)
      break;
    auto r = ::recv(fd_, buf, std::min(sizeof(buf), n - result.size()), 0);
    if (r <= 0)
      break;
    result.append(buf, static_cast<size_t>(r));
  }
  return result;
}

std::string peer::recv_all(bool* eof, std::chrono::milliseconds timeout) {
  std::string result;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  char buf[65536];
  if (eof != nullptr)
    *eof = false;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0)
      break;
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0)
      break;
    auto r = ::recv(fd_, buf, sizeof(buf), 0);
    if (r == 0) {
      if (eof != nullptr)
        *eof = true;
      break;
    }
    if (r < 0)
      break;
    result.append(buf, static_cast<size_t>(r));
  }
  return result;
}

bool peer::readable_within(std::chrono::milliseconds timeout) {
  pollfd p{fd_, POLLIN, 0};
  return ::poll(&p, 1, static_cast<int>(timeout.count())) > 0;
}

void peer::shutdown_write() {
  ::shutdown(fd_, SHUT_WR);
}

void peer::reset() {
  linger lg{1, 0};
  setsockopt(fd_, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
  close();
}

// -- servers and listeners ---------------------------------------------------------

std::string temp_socket_path() {
  char tmpl[] = "/tmp/tact-test-XXXXXX";
  auto* dir = mkdtemp(tmpl);
  REQUIRE(dir != nullptr);
  std::lock_guard<std::mutex> guard{temps().mtx};
  temps().dirs.emplace_back(dir);
  return std::string{dir} + "/s.sock";
}

listening listen(runtime& rt, kind k, protocol_factory f) {
  listening result;
  if (k == kind::tcp) {
    auto srv = rt.create_server(std::move(f), "127.0.0.1", 0);
    REQUIRE(srv);
    result.port = srv->port();
    result.srv = std::move(*srv);
  } else {
    result.unix_path = temp_socket_path();
    auto srv = rt.create_unix_server(std::move(f), result.unix_path);
    REQUIRE(srv);
    result.srv = std::move(*srv);
  }
  return result;
}

namespace {

int connect_to(kind k, uint16_t port, const std::string& path) {
  int fd;
  if (k == kind::tcp) {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr))
            == 0);
  } else {
    fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr))
            == 0);
  }
  return fd;
}

} // namespace

peer connect_peer(kind k, const listening& l) {
  return peer{connect_to(k, l.port, l.unix_path)};
}

raw_listener::raw_listener(kind which) : k(which) {
  if (k == kind::tcp) {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
    socklen_t len = sizeof(addr);
    getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    port = ntohs(addr.sin_port);
  } else {
    path = temp_socket_path();
    fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  }
  REQUIRE(::listen(fd, 16) == 0);
}

raw_listener::~raw_listener() {
  ::close(fd);
  if (!path.empty())
    ::unlink(path.c_str());
}

std::pair<caf::expected<transport>, peer>
raw_listener::connect(runtime& rt, protocol_factory f) {
  auto t = k == kind::tcp ? rt.create_connection(std::move(f), "127.0.0.1", port)
                          : rt.create_unix_connection(std::move(f), path);
  peer p;
  if (t) {
    auto afd = ::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
    REQUIRE(afd >= 0);
    p = peer{afd};
  }
  return {std::move(t), std::move(p)};
}

bool eventually(const std::function<bool()>& pred,
                std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= deadline)
      return false;
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

std::string big(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i)
    s[i] = static_cast<char>('a' + (i * 7) % 26);
  return s;
}

} // namespace tact::test
