#include "support/harness.hpp"

#include <cerrno>
#include <csignal>
#include <cstring>
#include <dirent.h>
#include <filesystem>
#include <future>
#include <thread>

#include <algorithm>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <openssl/ssl.h>

#include "support/tls_support.hpp"
#include "tact/transports/framing.hpp"

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
  // Fewer threads than before is no leak: CAF counts its detached threads
  // out before they end, so one of an earlier runtime may still have been
  // ending when `threads_before` was taken.
  CHECK(eventually([&] { return thread_count() <= threads_before; }, 2s));
  // Looked at again for a while: a sanitizer may hold a descriptor for a
  // moment (ThreadSanitizer opens /proc/self/maps now and then; once in
  // eight runs of runtime.loop_ops it was counted here), which no leak of
  // ours does.
  auto fds_ok = eventually([&] { return fd_count() == fds_before; }, 2s);
  INFO("descriptors before: " << fds_before_list);
  INFO("descriptors after: " << fd_list());
  CHECK(fds_ok);
  CHECK(thread_count() <= threads_before);
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
  switch (k) {
    case kind::tcp: return "tcp";
    case kind::unix_socket: return "unix";
    case kind::tls: return "tls over tcp";
    default: return "line framing over tcp";
  }
}

// -- the TLS peer's settings ---------------------------------------------------------

namespace {

// A throwaway PKI for the process, tact's contexts on it, and plain OpenSSL
// ones for the peer (an independent TLS endpoint).
struct contract_tls {
  test_pki pki;
  tls_contexts tact{pki};
  SSL_CTX* server = SSL_CTX_new(TLS_server_method());
  SSL_CTX* client = SSL_CTX_new(TLS_client_method());

  contract_tls() {
    REQUIRE(SSL_CTX_use_certificate_chain_file(server, pki.cert.c_str()) == 1);
    REQUIRE(SSL_CTX_use_PrivateKey_file(server, pki.key.c_str(),
                                        SSL_FILETYPE_PEM)
            == 1);
    REQUIRE(SSL_CTX_load_verify_locations(client, pki.ca_cert.c_str(),
                                          nullptr)
            == 1);
    SSL_CTX_set_verify(client, SSL_VERIFY_PEER, nullptr);
    // A FIN without close_notify reads as the end, as a plain EOF does.
    SSL_CTX_set_options(server, SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_options(client, SSL_OP_IGNORE_UNEXPECTED_EOF);
  }
  ~contract_tls() {
    SSL_CTX_free(server);
    SSL_CTX_free(client);
  }
};

contract_tls& tls_settings() {
  static contract_tls instance;
  return instance;
}

// OpenSSL writes with write(2), which raises SIGPIPE when the other end
// has gone: blocked in this thread while the TLS peer writes, and a
// pending one taken off (a send with MSG_NOSIGNAL does this for plain
// sockets).
class no_sigpipe {
public:
  no_sigpipe() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
  }
  ~no_sigpipe() {
    timespec zero{0, 0};
    while (sigtimedwait(&pipe_, nullptr, &zero) > 0) {
      // taken off
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  no_sigpipe(const no_sigpipe&) = delete;
  no_sigpipe& operator=(const no_sigpipe&) = delete;

private:
  sigset_t pipe_;
  sigset_t old_;
};

// How long tact's TLS close waits for the peer's close_notify: the peer
// answers one only when the test reads (asyncio waits 30 s for a peer that
// never answers; the tests would too).
constexpr auto shutdown_wait = std::chrono::milliseconds{500};

// `f` with the layer of `k` above it (line framing), or `f` itself.
protocol_factory layered(kind k, protocol_factory f) {
  if (k != kind::lines)
    return f;
  auto made = framed(line_framing{}, std::move(f));
  REQUIRE(made);
  return std::move(*made);
}

} // namespace

// -- peer ------------------------------------------------------------------------

peer::peer(peer&& other) noexcept
  : fd_(other.fd_), kind_(other.kind_), ssl_(other.ssl_) {
  other.fd_ = -1;
  other.ssl_ = nullptr;
}

peer& peer::operator=(peer&& other) noexcept {
  close();
  fd_ = other.fd_;
  kind_ = other.kind_;
  ssl_ = other.ssl_;
  other.fd_ = -1;
  other.ssl_ = nullptr;
  return *this;
}

peer::~peer() {
  close();
}

bool peer::handshake(bool server) {
  auto& s = tls_settings();
  ssl_ = SSL_new(server ? s.server : s.client);
  SSL_set_fd(ssl_, fd_);
  if (!server) {
    SSL_set_tlsext_host_name(ssl_, "localhost");
    SSL_set1_host(ssl_, "localhost");
  }
  // Nagle would hold a small record back while the handshake's last
  // flight is unacknowledged, and a reset right after it would discard it.
  int one = 1;
  setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  // The handshake gives up after 10 s rather than hang the test.
  timeval tv{10, 0};
  setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  no_sigpipe guard;
  if ((server ? SSL_accept(ssl_) : SSL_connect(ssl_)) != 1)
    return false;
  // Non-blocking from here: a read finds a whole record or WANT_READ, so
  // the peer's waits keep their own timeouts.
  fcntl(fd_, F_SETFL, fcntl(fd_, F_GETFL) | O_NONBLOCK);
  return true;
}

void peer::close() {
  // A TLS peer goes away as a plain one does, without close_notify (its
  // EOF is shutdown_write).
  if (ssl_ != nullptr) {
    SSL_free(ssl_);
    ssl_ = nullptr;
  }
  if (fd_ >= 0)
    ::close(fd_);
  fd_ = -1;
}

void peer::send_all(const std::string& text) {
  // A line peer sends each piece as one line.
  auto data = kind_ == kind::lines && !text.empty() ? text + "\n" : text;
  if (ssl_ != nullptr) {
    no_sigpipe guard;
    size_t off = 0;
    while (off < data.size()) {
      auto n = SSL_write(ssl_, data.data() + off,
                         static_cast<int>(data.size() - off));
      if (n > 0) {
        off += static_cast<size_t>(n);
        continue;
      }
      auto err = SSL_get_error(ssl_, n);
      if (err != SSL_ERROR_WANT_WRITE && err != SSL_ERROR_WANT_READ)
        FAIL("TLS peer write failed");
      pollfd p{fd_, static_cast<short>(err == SSL_ERROR_WANT_WRITE ? POLLOUT
                                                                   : POLLIN),
               0};
      ::poll(&p, 1, 10000);
    }
    return;
  }
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

ptrdiff_t peer::read_some(char* buf, size_t max,
                          std::chrono::milliseconds timeout) {
  if (ssl_ == nullptr || SSL_pending(ssl_) == 0) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0)
      return -1;
  }
  if (ssl_ == nullptr) {
    auto r = ::recv(fd_, buf, max, 0);
    return r < 0 ? -1 : r;
  }
  // Reading may write (a key update, a ticket's answer).
  no_sigpipe guard;
  auto r = SSL_read(ssl_, buf, static_cast<int>(max));
  if (r > 0)
    return r;
  auto err = SSL_get_error(ssl_, r);
  if (err == SSL_ERROR_WANT_READ)
    return -2; // a record's start, or a ticket: not data yet
  if (err == SSL_ERROR_ZERO_RETURN) {
    // close_notify (or a FIN, with SSL_OP_IGNORE_UNEXPECTED_EOF): answered
    // with one, as TLS libraries do.
    SSL_shutdown(ssl_);
    return 0;
  }
  // A reset or another error of the socket: not an EOF.
  return -1;
}

namespace {

std::chrono::milliseconds left_until(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
    t - std::chrono::steady_clock::now());
}

// Takes the line ends out of what a line-framing peer read.
void strip_line_ends(std::string& data, size_t from) {
  data.erase(std::remove(data.begin() + static_cast<ptrdiff_t>(from),
                         data.end(), '\n'),
             data.end());
}

} // namespace

std::string peer::recv_n(size_t n, std::chrono::milliseconds timeout) {
  std::string result;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  char buf[65536];
  while (result.size() < n) {
    auto left = left_until(deadline);
    if (left.count() <= 0)
      break;
    auto r = read_some(buf, std::min(sizeof(buf), n - result.size()), left);
    if (r == -2)
      continue;
    if (r <= 0)
      break;
    auto from = result.size();
    result.append(buf, static_cast<size_t>(r));
    if (kind_ == kind::lines)
      strip_line_ends(result, from);
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
    auto left = left_until(deadline);
    if (left.count() <= 0)
      break;
    auto r = read_some(buf, sizeof(buf), left);
    if (r == -2)
      continue;
    if (r == 0) {
      if (eof != nullptr)
        *eof = true;
      break;
    }
    if (r < 0)
      break;
    auto from = result.size();
    result.append(buf, static_cast<size_t>(r));
    if (kind_ == kind::lines)
      strip_line_ends(result, from);
  }
  return result;
}

bool peer::readable_within(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (ssl_ != nullptr && SSL_pending(ssl_) > 0)
      return true;
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(std::max<int64_t>(
                        left_until(deadline).count(), 0)))
        <= 0)
      return false;
    if (ssl_ == nullptr)
      return true;
    // Readable may be a session ticket only: data or EOF is what counts.
    char byte;
    no_sigpipe guard;
    auto r = SSL_peek(ssl_, &byte, 1);
    if (r > 0 || SSL_get_error(ssl_, r) != SSL_ERROR_WANT_READ)
      return true;
  }
}

bool peer::arrived_within(std::chrono::milliseconds timeout) {
  pollfd p{fd_, POLLIN, 0};
  return ::poll(&p, 1, static_cast<int>(timeout.count())) > 0;
}

void peer::shutdown_write() {
  if (ssl_ != nullptr) {
    no_sigpipe guard;
    SSL_shutdown(ssl_);
  } else
    ::shutdown(fd_, SHUT_WR);
}

void peer::reset() {
  if (ssl_ != nullptr) {
    SSL_free(ssl_);
    ssl_ = nullptr;
  }
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
  if (k != kind::unix_socket) {
    server_options opts;
    if (k == kind::tls) {
      opts.tls = tls_settings().tact.server;
      opts.tls_shutdown_timeout = shutdown_wait;
    }
    auto srv = rt.create_server(layered(k, std::move(f)), "127.0.0.1", 0,
                                opts);
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
  if (k != kind::unix_socket) {
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
  peer p{connect_to(k, l.port, l.unix_path), k};
  if (k == kind::tls)
    REQUIRE(p.handshake(false));
  return p;
}

raw_listener::raw_listener(kind which) : k(which) {
  if (k != kind::unix_socket) {
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
  if (k == kind::tls) {
    // The peer's handshake runs while create_connection waits for tact's.
    auto accepted = std::async(std::launch::async, [this] {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 10000) <= 0)
        return peer{};
      peer result{::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC), kind::tls};
      if (result.fd() < 0 || !result.handshake(true))
        return peer{};
      return result;
    });
    tls_options opts;
    opts.server_hostname = "localhost";
    opts.shutdown_timeout = shutdown_wait;
    auto t = rt.create_connection(std::move(f), "127.0.0.1", port,
                                  tls_settings().tact.client, opts);
    auto p = accepted.get();
    if (t)
      REQUIRE(p.fd() >= 0);
    return {std::move(t), std::move(p)};
  }
  auto t = k == kind::unix_socket
             ? rt.create_unix_connection(std::move(f), path)
             : rt.create_connection(layered(k, std::move(f)), "127.0.0.1",
                                    port);
  peer p;
  if (t) {
    auto afd = ::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
    REQUIRE(afd >= 0);
    p = peer{afd, k};
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
