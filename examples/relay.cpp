// A relay: every connection accepted on LISTEN_URL is joined to a new
// connection to TARGET_URL, or to a child process per connection.
//
//   relay [--idle-timeout SECONDS] LISTEN_URL TARGET_URL
//
//   --idle-timeout  a client connection that moves no byte either way for
//                   that long is ended, and its target with it
//
//   LISTEN_URL   tcp://HOST:PORT, unix://PATH,
//                'tls://HOST:PORT?cert=FILE&key=FILE'
//   TARGET_URL   tcp://HOST:PORT, unix://PATH,
//                'tls://HOST:PORT?ca=FILE' (verified; &insecure=1 to not),
//                exec:PROGRAM [ARGS...] (one child per connection, relayed
//                to its stdin and stdout; stderr is the relay's)
//
// Examples:
//   TLS termination in front of a plain server:
//     relay 'tls://0.0.0.0:8443?cert=server.pem&key=server.key'
//           tcp://127.0.0.1:8080
//   A Unix socket exposed on TCP:
//     relay tcp://127.0.0.1:6000 unix:///run/app.sock
//   An inetd-style service (here: an upper-casing echo):
//     relay tcp://127.0.0.1:7000 exec:tr a-z A-Z
//
// Prints one `listening on URL` line per listener (real port numbers) and
// exits 0 on SIGINT or SIGTERM after flushing.

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "tact/protocols/relay.hpp"
#include "tact/runtime/errc.hpp"
#include "tact/runtime/runtime.hpp"
#include "tact/runtime/url.hpp"

namespace {

int fail(const std::string& what) {
  std::fprintf(stderr, "relay: %s\n", what.c_str());
  return 2;
}

} // namespace

int main(int argc, char** argv) {
  double idle_seconds = 0;
  if (argc > 2 && std::string{argv[1]} == "--idle-timeout") {
    idle_seconds = std::atof(argv[2]);
    if (!(idle_seconds >= 0.001 && idle_seconds <= 86400))
      return fail("--idle-timeout wants seconds from 0.001 to 86400");
    argv += 2;
    argc -= 2;
  }
  if (argc < 3)
    return fail("usage: relay [--idle-timeout SECONDS] LISTEN_URL "
                "TARGET_URL  (tcp://HOST:PORT, "
                "unix://PATH, tls://HOST:PORT?cert=F&key=F | ?ca=F, "
                "exec:PROGRAM ARGS...)");
  auto listen = tact::parse_url(argv[1]);
  if (!listen)
    return fail(tact::describe(listen.error()));
  if (listen->scheme != "tcp" && listen->scheme != "unix"
      && listen->scheme != "tls")
    return fail("cannot listen on scheme '" + listen->scheme + "'");
  // The target: a URL, or a program and its arguments.
  std::string target = argv[2];
  std::vector<std::string> program;
  tact::url to;
  if (target.rfind("exec:", 0) == 0) {
    std::istringstream words{target.substr(5)};
    for (std::string w; words >> w;)
      program.push_back(w);
    for (int i = 3; i < argc; ++i)
      program.emplace_back(argv[i]);
    if (program.empty())
      return fail("exec: needs a program");
  } else {
    auto u = tact::parse_url(target);
    if (!u)
      return fail(tact::describe(u.error()));
    if (u->scheme != "tcp" && u->scheme != "unix" && u->scheme != "tls")
      return fail("cannot connect to scheme '" + u->scheme + "'");
    to = std::move(*u);
  }
  tact::tls_context server_ctx;
  if (listen->scheme == "tls") {
    auto ctx = tact::tls_context::server({.cert_file = listen->query["cert"],
                                          .key_file = listen->query["key"]});
    if (!ctx)
      return fail(tact::describe(ctx.error()));
    server_ctx = *ctx;
  }
  tact::tls_context client_ctx;
  if (to.scheme == "tls") {
    auto ctx = tact::tls_context::client(
      {.ca_file = to.query["ca"],
       .insecure_skip_verify = to.query["insecure"] == "1"});
    if (!ctx)
      return fail(tact::describe(ctx.error()));
    client_ctx = *ctx;
  }

  tact::runtime rt{tact::runtime_options{.handle_signals = true}};
  // Runs on the loop, once per accepted connection: starts opening the
  // other end and returns.
  auto open = [&](tact::protocol_factory f, tact::transport_callback done) {
    if (!program.empty())
      rt.spawn_process(std::move(f), program,
                       {.std_err = tact::subprocess_stdio::inherit},
                       std::move(done));
    else if (to.scheme == "unix")
      rt.connect_unix(std::move(f), to.path, {}, std::move(done));
    else if (to.scheme == "tls")
      rt.connect(std::move(f), to.host, to.port, client_ctx, {}, {},
                 std::move(done));
    else
      rt.connect(std::move(f), to.host, to.port, {}, std::move(done));
  };
  auto on_error = [&](const caf::error& err) {
    std::fprintf(stderr, "relay: cannot open %s: %s\n", target.c_str(),
                 tact::describe(err).c_str());
  };
  tact::server_options opts;
  opts.idle_timeout = std::chrono::milliseconds{
    static_cast<int64_t>(idle_seconds * 1000)};
  opts.tls = server_ctx;
  auto factory = tact::relay_to(open, on_error);
  auto srv = listen->scheme == "unix"
               ? rt.create_unix_server(factory, listen->path, opts)
               : rt.create_server(factory, listen->host, listen->port, opts);
  if (!srv) {
    std::fprintf(stderr, "relay: cannot listen on %s: %s\n", argv[1],
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
