// asyncio's echo clients: connect, send a message, print what comes back.
//
//   echo_client tcp://127.0.0.1:8888 --message "hello"
//   echo_client unix:///tmp/echo.sock
//   echo_client udp://127.0.0.1:9999 --message "hello"
//   echo_client 'tls://localhost:8443?ca=ca.pem'   (verifies the server)
//   echo_client 'tls://localhost:8443?insecure=1'  (verifies nothing)
//
// Streams: sends the message, half-closes, prints the echo as it arrives
// and exits 0 when the server closes. TLS has no half-close: the client
// closes (close_notify) once the whole echo is back. UDP: sends one datagram, prints the
// reply, closes. Exits 1 with a one-line reason when it cannot connect, the
// connection fails or (UDP) no reply comes within 5 seconds.

#include <chrono>
#include <cstdio>
#include <cstring>
#include <future>
#include <memory>
#include <string>

#include "tact/actors/protocol.hpp"
#include "tact/runtime/errc.hpp"
#include "tact/runtime/runtime.hpp"
#include "tact/runtime/url.hpp"

namespace {

class echo_client final : public tact::protocol {
public:
  echo_client(std::string message, std::promise<caf::error> done)
    : message_(std::move(message)), done_(std::move(done)) {
    // nop
  }

  void connection_made(tact::transport& t) override {
    t_ = t;
    t.write(message_);
    std::printf("sent: %s\n", message_.c_str());
    if (t.can_write_eof())
      t.write_eof();
  }

  void data_received(tact::bytes data) override {
    std::printf("received: %.*s\n", static_cast<int>(data.size()), data.data());
    std::fflush(stdout);
    received_ += data.size();
    if (!t_.can_write_eof() && received_ >= message_.size())
      t_.close();
  }

  bool eof_received() override {
    return false;
  }

  void connection_lost(const caf::error& reason) override {
    done_.set_value(reason);
  }

private:
  std::string message_;
  std::promise<caf::error> done_;
  tact::transport t_;
  size_t received_ = 0;
};

// asyncio's UDP echo client: one datagram out, one back, then close.
class udp_echo_client final : public tact::datagram_protocol {
public:
  udp_echo_client(std::string message, std::promise<caf::error> done)
    : message_(std::move(message)), done_(std::move(done)) {
    // nop
  }

  void connection_made(tact::transport& t) override {
    t_ = t;
    t.sendto(tact::to_bytes(message_));
    std::printf("sent: %s\n", message_.c_str());
  }

  void datagram_received(tact::bytes data, tact::endpoint) override {
    std::printf("received: %.*s\n", static_cast<int>(data.size()), data.data());
    std::fflush(stdout);
    t_.close();
  }

  void error_received(const caf::error& reason) override {
    error_ = reason;
    t_.close();
  }

  void connection_lost(const caf::error& reason) override {
    done_.set_value(reason ? reason : error_);
  }

private:
  std::string message_;
  std::promise<caf::error> done_;
  tact::transport t_;
  caf::error error_;
};

} // namespace

int main(int argc, char** argv) {
  std::string message = "hello from tact";
  const char* target = nullptr;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--message") == 0 && i + 1 < argc)
      message = argv[++i];
    else if (target == nullptr)
      target = argv[i];
    else {
      std::fprintf(stderr, "usage: %s URL [--message TEXT]\n", argv[0]);
      return 2;
    }
  }
  if (target == nullptr) {
    std::fprintf(stderr, "usage: %s URL [--message TEXT]\n", argv[0]);
    return 2;
  }
  auto u = tact::parse_url(target);
  if (!u
      || (u->scheme != "tcp" && u->scheme != "unix" && u->scheme != "udp"
          && u->scheme != "tls")) {
    std::fprintf(stderr, "echo_client: %s\n",
                 u ? "unsupported scheme" : tact::describe(u.error()).c_str());
    return 2;
  }
  tact::runtime rt;
  std::promise<caf::error> done;
  auto result = done.get_future();
  auto factory = [&] {
    return std::make_unique<echo_client>(message, std::move(done));
  };
  auto udp_factory = [&] {
    return std::make_unique<udp_echo_client>(message, std::move(done));
  };
  tact::tls_context ctx;
  if (u->scheme == "tls") {
    auto made = tact::tls_context::client(
      {.ca_file = u->query["ca"], .insecure_skip_verify = u->query["insecure"] == "1"});
    if (!made) {
      std::fprintf(stderr, "echo_client: %s\n",
                   tact::describe(made.error()).c_str());
      return 2;
    }
    ctx = *made;
  }
  auto conn
    = u->scheme == "tls"   ? rt.create_connection(factory, u->host, u->port, ctx)
      : u->scheme == "unix" ? rt.create_unix_connection(factory, u->path)
      : u->scheme == "udp" ? rt.create_datagram_endpoint(
                               udp_factory,
                               {.remote_addr = tact::endpoint::inet(u->host,
                                                                    u->port)})
                           : rt.create_connection(factory, u->host, u->port);
  if (!conn) {
    std::fprintf(stderr, "echo_client: cannot connect to %s: %s\n", target,
                 tact::describe(conn.error()).c_str());
    return 1;
  }
  auto patience = std::chrono::seconds{u->scheme == "udp" ? 5 : 30};
  if (result.wait_for(patience) != std::future_status::ready) {
    std::fprintf(stderr, "echo_client: no answer from %s within %d s\n",
                 target, static_cast<int>(patience.count()));
    return 1;
  }
  if (auto err = result.get()) {
    std::fprintf(stderr, "echo_client: connection lost: %s\n",
                 tact::describe(err).c_str());
    return 1;
  }
  return 0;
}
