// The same echo server written as a CAF behaviour instead of a class: the
// protocol is an actor that handles tact's messages directly.
//
//   echo_behavior tcp://127.0.0.1:0
//
// Prints `listening on URL`; exits 0 on SIGINT or SIGTERM.

#include <cstdio>

#include <caf/event_based_actor.hpp>

#include "tact/runtime/errc.hpp"
#include "tact/runtime/messages.hpp"
#include "tact/runtime/runtime.hpp"
#include "tact/runtime/url.hpp"

namespace {

// One actor per connection. It lives on the loop (spawn_on_loop), so its
// messages to and from the transport need no thread hand-off.
caf::behavior echo(caf::event_based_actor* self) {
  auto t = std::make_shared<tact::transport>();
  return {
    [=](tact::connection_made& msg) { *t = msg.handle; },
    [=](tact::data_received& msg) {
      auto n = msg.data.size();
      t->write(std::move(msg.data));
      // A behaviour gives the read credit back itself.
      t->consumed(n);
    },
    [=](tact::eof_received) {
      t->close();
      return true;
    },
    [=](tact::pause_writing) { t->pause_reading(); },
    [=](tact::resume_writing) { t->resume_reading(); },
    [=](tact::connection_lost&) { self->quit(); },
  };
}

} // namespace

int main(int argc, char** argv) {
  auto u = tact::parse_url(argc == 2 ? argv[1] : "");
  if (!u || (u->scheme != "tcp" && u->scheme != "unix")) {
    std::fprintf(stderr, "usage: %s tcp://HOST:PORT | unix://PATH\n", argv[0]);
    return 2;
  }
  tact::runtime rt{tact::runtime_options{.handle_signals = true}};
  auto factory = [&rt] { return rt.spawn_on_loop(echo); };
  auto srv = u->scheme == "unix" ? rt.create_unix_server(factory, u->path)
                                 : rt.create_server(factory, u->host, u->port);
  if (!srv) {
    std::fprintf(stderr, "echo_behavior: %s\n",
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
