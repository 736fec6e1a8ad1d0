// What the examples that serve stream URLs share: listen on each URL
// (tcp://, unix://, tls://...?cert=&key=, tls+unix://), print one
// `listening on URL` line per address, serve until SIGINT or SIGTERM, then
// give connections half a second to flush.
#pragma once

#include <chrono>
#include <cstdio>
#include <vector>

#include "tact/runtime/errc.hpp"
#include "tact/runtime/runtime.hpp"
#include "tact/runtime/url.hpp"

namespace example {

/// Listens with `factory` on each of `urls`, printing one `listening on
/// URL` line per bound address; the servers go to `servers`. 0, or the exit
/// code of the first failure, said in one line on stderr: 2 for what the
/// command line got wrong (a scheme, a certificate that does not load), 1
/// for an address that cannot be had.
inline int listen_urls(tact::runtime& rt, const tact::protocol_factory& factory,
                       const std::vector<tact::url>& urls, const char* prog,
                       std::vector<tact::server>& servers,
                       const tact::server_options& opts = {}) {
  for (auto& u : urls) {
    auto srv = rt.create_server(factory, u, opts);
    if (!srv) {
      std::fprintf(stderr, "%s: cannot listen on %s: %s\n", prog,
                   tact::to_string(u).c_str(),
                   tact::describe(srv.error()).c_str());
      return tact::code_of(srv.error()) == tact::errc::invalid_argument ? 2
                                                                        : 1;
    }
    for (auto& bound : srv->urls())
      std::printf("listening on %s\n", bound.c_str());
    std::fflush(stdout);
    servers.push_back(std::move(*srv));
  }
  return 0;
}

/// Serves until SIGINT or SIGTERM (`rt` has `runtime_options::
/// handle_signals`), then stops accepting and gives live connections half
/// a second to flush.
inline void serve_until_signal(tact::runtime& rt) {
  rt.wait_for_signal();
  rt.shutdown(std::chrono::milliseconds{500});
}

/// Serves `factory` on the URLs `argv[1..]`; the process's exit code.
inline int serve_urls(tact::runtime& rt, const tact::protocol_factory& factory,
                      int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s URL...  (tcp://HOST:PORT, unix://PATH, "
                         "tls://HOST:PORT?cert=FILE&key=FILE)\n",
                 argv[0]);
    return 2;
  }
  std::vector<tact::url> urls;
  for (int i = 1; i < argc; ++i) {
    auto u = tact::parse_url(argv[i]);
    if (!u) {
      std::fprintf(stderr, "%s: %s: %s\n", argv[0], argv[i],
                   tact::describe(u.error()).c_str());
      return 2;
    }
    urls.push_back(std::move(*u));
  }
  std::vector<tact::server> servers;
  if (auto code = listen_urls(rt, factory, urls, argv[0], servers))
    return code;
  serve_until_signal(rt);
  return 0;
}

} // namespace example
