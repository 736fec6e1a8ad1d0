// What the examples that serve stream URLs share: listen on each URL of
// the command line (tcp://, unix://, tls://...?cert=&key=, tls+unix://),
// print one `listening on URL` line per address, serve until SIGINT or
// SIGTERM, then give connections half a second to flush.
#pragma once

#include <chrono>
#include <cstdio>
#include <vector>

#include "tact/runtime/errc.hpp"
#include "tact/runtime/runtime.hpp"
#include "tact/runtime/url.hpp"

namespace example {

/// Serves `factory` on the URLs `argv[1..]`; the process's exit code.
/// `rt` handles SIGINT and SIGTERM (`runtime_options::handle_signals`).
inline int serve_urls(tact::runtime& rt, const tact::protocol_factory& factory,
                      int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s URL...  (tcp://HOST:PORT, unix://PATH, "
                         "tls://HOST:PORT?cert=FILE&key=FILE)\n",
                 argv[0]);
    return 2;
  }
  std::vector<tact::server> servers;
  for (int i = 1; i < argc; ++i) {
    auto u = tact::parse_url(argv[i]);
    auto srv = u ? rt.create_server(factory, *u)
                 : caf::expected<tact::server>{u.error()};
    if (!srv) {
      std::fprintf(stderr, "%s: %s: %s\n", argv[0], argv[i],
                   tact::describe(srv.error()).c_str());
      return 1;
    }
    for (auto& bound : srv->urls())
      std::printf("listening on %s\n", bound.c_str());
    std::fflush(stdout);
    servers.push_back(std::move(*srv));
  }
  rt.wait_for_signal();
  rt.shutdown(std::chrono::milliseconds{500});
  return 0;
}

} // namespace example
