// A line echo server that upgrades to TLS on the connection it already has,
// speaking just enough SMTP for `openssl s_client -starttls smtp`:
//
//   starttls_server tcp://127.0.0.1:0 --cert server.pem --key server.key
//   openssl s_client -starttls smtp -connect 127.0.0.1:PORT -CAfile ca.pem
//
// The greeting is `220`; `EHLO` is answered with a `STARTTLS` capability;
// `STARTTLS` with `220`, after which the same connection speaks TLS
// (start_tls) and every line is echoed back. Bytes the client sends right
// behind its STARTTLS line go to the TLS layer, not lost. Prints
// `listening on URL`; exits 0 on SIGINT or SIGTERM.

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include "tact/actors/protocol.hpp"
#include "tact/runtime/errc.hpp"
#include "tact/runtime/runtime.hpp"
#include "tact/runtime/url.hpp"
#include "tact/transports/tls.hpp"

namespace {

class starttls_protocol final : public tact::protocol {
public:
  explicit starttls_protocol(tact::tls_context ctx) : ctx_(std::move(ctx)) {
    // nop
  }

  void connection_made(tact::transport& t) override {
    t_ = t;
    t_.write("220 tact ESMTP ready\r\n");
  }

  // Each byte is looked at once (lines are searched for in the new bytes
  // only, and cut out by offset), and a line longer than SMTP's 1000
  // octets ends the connection: a peer costs at most that much.
  void data_received(tact::bytes data) override {
    if (closing_)
      return;
    auto scan_from = buf_.size();
    buf_.append(data.begin(), data.end());
    size_t start = 0;
    size_t pos;
    while (!closing_
           && (pos = buf_.find('\n', std::max(start, scan_from)))
                != std::string::npos) {
      if (pos - start >= max_line) {
        too_long();
        return;
      }
      auto line = buf_.substr(start, pos + 1 - start);
      start = pos + 1;
      if (tls_) {
        t_.write(line);
        continue;
      }
      // STARTTLS hands what follows its line to the TLS layer.
      rest_ = start;
      command(line);
      if (tls_)
        return;
    }
    buf_.erase(0, start);
    if (buf_.size() > max_line && !closing_)
      too_long();
  }

private:
  void command(const std::string& line) {
    auto verb = line.substr(0, line.find_first_of(" \r\n"));
    for (auto& c : verb)
      c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    if (verb == "EHLO") {
      t_.write("250-tact greets you\r\n250 STARTTLS\r\n");
    } else if (verb == "HELO" || verb == "NOOP") {
      t_.write("250 OK\r\n");
    } else if (verb == "STARTTLS") {
      t_.write("220 Ready to start TLS\r\n");
      tact::tls_options opts;
      opts.server_side = true;
      // What came behind the STARTTLS line is the start of the handshake.
      opts.unread = tact::to_bytes(buf_.substr(rest_));
      buf_.clear();
      auto upgraded = tact::start_tls(t_, self(), ctx_, opts);
      if (!upgraded) {
        std::fprintf(stderr, "starttls_server: %s\n",
                     tact::describe(upgraded.error()).c_str());
        t_.abort();
        closing_ = true;
        return;
      }
      t_ = *upgraded;
      tls_ = true;
    } else if (verb == "QUIT") {
      t_.write("221 Bye\r\n");
      t_.close();
      closing_ = true;
    } else {
      t_.write("530 Must issue a STARTTLS command first\r\n");
    }
  }

  static constexpr size_t max_line = 1000;

  void too_long() {
    t_.write("500 Line too long\r\n");
    t_.close();
    closing_ = true;
    buf_.clear();
  }

  tact::tls_context ctx_;
  tact::transport t_;
  std::string buf_;
  // Where the rest of buf_ starts while a command runs.
  size_t rest_ = 0;
  bool tls_ = false;
  bool closing_ = false;
};

int usage(const char* self) {
  std::fprintf(stderr, "usage: %s URL --cert FILE --key FILE  "
                       "(URL: tcp://HOST:PORT or unix://PATH)\n",
               self);
  return 2;
}

} // namespace

int main(int argc, char** argv) {
  const char* target = nullptr;
  std::string cert;
  std::string key;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--cert") == 0 && i + 1 < argc)
      cert = argv[++i];
    else if (std::strcmp(argv[i], "--key") == 0 && i + 1 < argc)
      key = argv[++i];
    else if (target == nullptr)
      target = argv[i];
    else
      return usage(argv[0]);
  }
  if (target == nullptr)
    return usage(argv[0]);
  auto u = tact::parse_url(target);
  if (!u || (u->scheme != "tcp" && u->scheme != "unix")) {
    std::fprintf(stderr, "starttls_server: %s\n",
                 u ? "unsupported scheme" : tact::describe(u.error()).c_str());
    return 2;
  }
  auto ctx = tact::tls_context::server({.cert_file = cert, .key_file = key});
  if (!ctx) {
    std::fprintf(stderr, "starttls_server: %s\n",
                 tact::describe(ctx.error()).c_str());
    return 2;
  }
  tact::runtime rt{tact::runtime_options{.handle_signals = true}};
  auto factory = [&] { return std::make_unique<starttls_protocol>(*ctx); };
  auto srv = u->scheme == "unix" ? rt.create_unix_server(factory, u->path)
                                 : rt.create_server(factory, u->host, u->port);
  if (!srv) {
    std::fprintf(stderr, "starttls_server: cannot listen on %s: %s\n", target,
                 tact::describe(srv.error()).c_str());
    return 1;
  }
  for (auto& bound : srv->urls())
    std::printf("listening on %s\n", bound.c_str());
  std::fflush(stdout);
  rt.wait_for_signal();
  rt.shutdown(std::chrono::milliseconds{500});
  return 0;
}
