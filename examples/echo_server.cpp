// Echo server on any number of TCP, TLS, Unix socket and UDP URLs, with
// flow control.
//
//   echo_server tcp://127.0.0.1:0 tcp://[::1]:7000 unix:///tmp/echo.sock
//               udp://127.0.0.1:0
//               'tls://127.0.0.1:8443?cert=server.pem&key=server.key'
//
// Prints one `listening on URL` line per listener (real port numbers),
// echoes every byte (every datagram, to its sender), and exits 0 on SIGINT
// or SIGTERM after flushing. `--idle-timeout SECONDS` (anywhere) ends a
// stream connection that moves no byte either way for that long.
// `--coroutine` (anywhere) serves stream connections with the coroutine
// below instead of the class protocol `tact::echo_protocol`; the output
// and the behaviour are the same. `--loops N` runs N loops (0: one per
// CPU the process may use), over which the servers spread their
// connections; without it, one (or the environment's TACT_LOOPS).

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "tact/actors/stream.hpp"
#include "tact/protocols/echo.hpp"
#include "tact/runtime/errc.hpp"
#include "tact/runtime/runtime.hpp"
#include "tact/runtime/url.hpp"

#include "serve.hpp"

namespace {

// Echo as a coroutine: what arrives goes back; a write waits while the
// peer does not read, and meanwhile nothing more is read. Returning at the
// peer's EOF (or an error) closes the connection once all is written.
tact::task<> echo(tact::stream s) {
  for (;;) {
    auto data = co_await s.read();
    if (!data || data->empty())
      co_return;
    if (auto err = co_await s.write(std::move(*data)))
      co_return;
  }
}

} // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr,
                 "usage: %s [--idle-timeout SECONDS] [--coroutine] "
                 "[--loops N] URL...  "
                 "(tcp://HOST:PORT, unix://PATH, "
                 "udp://HOST:PORT, tls://HOST:PORT?cert=FILE&key=FILE)\n",
                 argv[0]);
    return 2;
  }
  std::vector<tact::url> urls;
  std::chrono::milliseconds idle{0};
  bool coroutine = false;
  tact::runtime_options rt_opts;
  rt_opts.handle_signals = true;
  for (int i = 1; i < argc; ++i) {
    if (std::string{argv[i]} == "--loops" && i + 1 < argc) {
      char* end = nullptr;
      auto n = std::strtoul(argv[++i], &end, 10);
      if (*end != '\0' || n > 1024) {
        std::fprintf(stderr, "echo_server: --loops wants a number from 0 "
                             "(one per CPU) to 1024\n");
        return 2;
      }
      rt_opts.loops = n;
      continue;
    }
    if (std::string{argv[i]} == "--coroutine") {
      coroutine = true;
      continue;
    }
    if (std::string{argv[i]} == "--idle-timeout" && i + 1 < argc) {
      auto seconds = std::atof(argv[++i]);
      if (!(seconds >= 0.001 && seconds <= 86400)) {
        std::fprintf(stderr, "echo_server: --idle-timeout wants seconds "
                             "from 0.001 to 86400\n");
        return 2;
      }
      idle = std::chrono::milliseconds{static_cast<int64_t>(seconds * 1000)};
      continue;
    }
    auto u = tact::parse_url(argv[i]);
    if (!u) {
      std::fprintf(stderr, "echo_server: %s\n", tact::describe(u.error()).c_str());
      return 2;
    }
    if (u->scheme != "tcp" && u->scheme != "unix" && u->scheme != "udp"
        && u->scheme != "tls") {
      std::fprintf(stderr, "echo_server: unsupported scheme '%s' in %s\n",
                   u->scheme.c_str(), argv[i]);
      return 2;
    }
    urls.push_back(std::move(*u));
  }
  tact::runtime rt{std::move(rt_opts)};
  tact::protocol_factory factory
    = coroutine ? tact::protocol_factory{echo}
                : tact::protocol_factory{
                    [] { return std::make_unique<tact::echo_protocol>(); }};
  tact::server_options opts;
  opts.idle_timeout = idle;
  std::vector<tact::server> servers;
  std::vector<tact::transport> endpoints;
  for (auto& u : urls) {
    if (u.scheme == "udp") {
      auto ep = rt.create_datagram_endpoint(
        [] { return std::make_unique<tact::datagram_echo_protocol>(); },
        {.local_addr = tact::endpoint::inet(u.host, u.port)});
      if (!ep) {
        std::fprintf(stderr, "echo_server: cannot listen on %s: %s\n",
                     tact::to_string(u).c_str(),
                     tact::describe(ep.error()).c_str());
        return 1;
      }
      auto name = ep->get_extra_info("sockname");
      auto& addr = caf::get<caf::config_value::list>(*name);
      auto host = caf::get<std::string>(addr[0]);
      std::printf("listening on udp://%s%s%s:%d\n",
                  host.find(':') != std::string::npos ? "[" : "",
                  host.c_str(),
                  host.find(':') != std::string::npos ? "]" : "",
                  static_cast<int>(caf::get<int64_t>(addr[1])));
      std::fflush(stdout);
      endpoints.push_back(std::move(*ep));
      continue;
    }
    if (auto code = example::listen_urls(rt, factory, {u}, "echo_server",
                                         servers, opts))
      return code;
  }
  example::serve_until_signal(rt);
  return 0;
}
