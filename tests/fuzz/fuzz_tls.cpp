// libFuzzer target: the TLS layer fed arbitrary bytes as the peer's
// records, through a real socket pair and tact's own runtime. The first
// byte picks the side: even, tact is the TLS server and the input is what
// the client sends; odd, tact is the client and the input is the server's
// answer to its ClientHello. Every input must end the connection (the
// peer's socket sees EOF) within the timeout, whatever the bytes: a hang
// aborts, so libFuzzer reports it.

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "support/tls_support.hpp"
#include "tact/actors/protocol.hpp"
#include "tact/runtime/runtime.hpp"
#include "tact/transports/tls.hpp"

namespace {

struct fixture {
  tact::tls_context server;
  tact::tls_context client;
  tact::runtime rt{tact::runtime_options{.on_warning = [](const std::string&) {}}};

  // The contexts load the PEM files here; the directory goes with `pki`
  // (the fixture itself is never destroyed, which left it behind).
  fixture() {
    tact::test::test_pki pki;
    server = *tact::tls_context::server({pki.cert, pki.key});
    tact::tls_client_options opts;
    opts.ca_file = pki.ca_cert;
    client = *tact::tls_context::client(opts);
  }
};

// Never destroyed: an actor system torn down among the exit handlers
// would outlive CAF's own static state.
fixture& the() {
  static auto* instance = new fixture;
  return *instance;
}

// Starts TLS on the plain connection as soon as it is made; echoes what
// comes through, so that a handshake that does succeed carries data too.
class upgrader final : public tact::protocol {
public:
  upgrader(tact::tls_context ctx, bool server_side)
    : ctx_(std::move(ctx)), server_side_(server_side) {
    // nop
  }

  void connection_made(tact::transport& t) override {
    tact::tls_options opts;
    opts.server_side = server_side_;
    opts.server_hostname = "localhost";
    opts.handshake_timeout = std::chrono::seconds{2};
    opts.shutdown_timeout = std::chrono::seconds{2};
    auto up = tact::start_tls(t, self(), ctx_, opts);
    if (up)
      tls_ = *up;
    else
      t.abort();
  }

  void data_received(tact::bytes data) override {
    tls_.write(std::move(data));
  }

private:
  tact::tls_context ctx_;
  bool server_side_;
  tact::transport tls_;
};

// Waits until `fd` is readable; false only once `ms` have really passed.
// libFuzzer's -timeout arms a periodic SIGALRM (setitimer, every
// timeout/2+1 s) whose handler runs on this thread: a poll() it
// interrupts returns -1/EINTR (poll is never restarted), which is not a
// hang.
bool wait_readable(int fd, int ms) {
  using steady = std::chrono::steady_clock;
  auto deadline = steady::now() + std::chrono::milliseconds{ms};
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                  deadline - steady::now())
                  .count();
    pollfd p{fd, POLLIN, 0};
    auto rc = ::poll(&p, 1, left > 0 ? static_cast<int>(left) : 0);
    if (rc > 0)
      return true;
    if (rc == 0 || errno != EINTR)
      return false;
  }
}

ssize_t read_retrying(int fd, char* buf, size_t len) {
  ssize_t n;
  do {
    n = ::read(fd, buf, len);
  } while (n < 0 && errno == EINTR);
  return n;
}

// Reads until EOF; false on a hang.
bool drain_until_eof(int fd) {
  char buf[16384];
  for (;;) {
    if (!wait_readable(fd, 10000))
      return false;
    if (read_retrying(fd, buf, sizeof(buf)) <= 0)
      return true;
  }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0)
    return 0;
  auto& fx = the();
  bool tact_is_server = (data[0] & 1) == 0;
  ++data;
  --size;
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0)
    std::abort();
  auto ctx = tact_is_server ? fx.server : fx.client;
  auto t = fx.rt.connect_accepted_socket(
    [ctx, tact_is_server] {
      return std::make_unique<upgrader>(ctx, tact_is_server);
    },
    fds[0]);
  if (!t)
    std::abort();
  if (!tact_is_server) {
    // Wait for the ClientHello before answering with the input.
    if (!wait_readable(fds[1], 10000))
      std::abort();
    char hello[16384];
    if (read_retrying(fds[1], hello, sizeof(hello)) <= 0)
      std::abort();
  }
  for (size_t done = 0; done < size;) {
    auto n = ::send(fds[1], data + done, size - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    done += static_cast<size_t>(n);
  }
  ::shutdown(fds[1], SHUT_WR);
  if (!drain_until_eof(fds[1]))
    std::abort();
  ::close(fds[1]);
  return 0;
}
