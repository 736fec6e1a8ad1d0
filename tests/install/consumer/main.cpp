// A program built against an installed tact, static or shared: a class
// protocol and a behaviour over TCP, a line-framed echo, and the helpers
// (URLs, errors, RESP) a service uses. Prints "installed" when all agree.

#include <cstdio>
#include <future>
#include <memory>
#include <string>

#include <caf/event_based_actor.hpp>

#include <tact/actors/protocol.hpp>
#include <tact/protocols/echo.hpp>
#include <tact/protocols/resp.hpp>
#include <tact/runtime/errc.hpp>
#include <tact/runtime/messages.hpp>
#include <tact/runtime/runtime.hpp>
#include <tact/runtime/url.hpp>
#include <tact/transports/framing.hpp>

namespace {

// Writes `text` on connection and hands over what comes back.
class once final : public tact::protocol {
public:
  once(std::string text, std::promise<std::string>& out)
    : text_(std::move(text)), out_(out) {}
  void connection_made(tact::transport& t) override { t.write(text_); }
  void data_received(tact::bytes data) override {
    got_ += tact::to_string(data);
    if (got_.size() >= text_.size() && !done_) {
      done_ = true;
      out_.set_value(got_);
    }
  }

private:
  std::string text_;
  std::string got_;
  bool done_ = false;
  std::promise<std::string>& out_;
};

// The echo again, as a behaviour: tact's messages in a CAF actor.
caf::behavior echo_behaviour(caf::event_based_actor* self) {
  auto t = std::make_shared<tact::transport>();
  return {
    [t](const tact::connection_made& made) { *t = made.handle; },
    [t](tact::data_received& in) {
      auto n = in.data.size();
      t->write(std::move(in.data));
      t->consumed(n);
    },
    [](tact::eof_received) { return true; },
    [self](const tact::connection_lost&) { self->quit(); },
  };
}

// One round trip to a server on `port`.
std::string round_trip(tact::runtime& rt, uint16_t port,
                       const std::string& text) {
  std::promise<std::string> got;
  auto t = rt.create_connection(
    [&] { return std::make_unique<once>(text, got); }, "127.0.0.1", port);
  if (!t) {
    std::fprintf(stderr, "%s\n", tact::describe(t.error()).c_str());
    return {};
  }
  auto answer = got.get_future().get();
  t->close();
  return answer;
}

int fail(const char* what) {
  std::fprintf(stderr, "failed: %s\n", what);
  return 1;
}

} // namespace

int main() {
  tact::runtime rt;
  auto srv = rt.create_server(
    [] { return std::make_unique<tact::echo_protocol>(); }, "127.0.0.1", 0);
  if (!srv)
    return fail(tact::describe(srv.error()).c_str());
  if (round_trip(rt, srv->port(), "installed") != "installed")
    return fail("class protocol echo");

  auto actors = rt.create_server(
    [&rt] { return rt.spawn_on_loop(echo_behaviour); }, "127.0.0.1", 0);
  if (!actors || round_trip(rt, actors->port(), "behaviour") != "behaviour")
    return fail("behaviour echo");

  auto framed = tact::framed(tact::line_framing{}, [] {
    return std::make_unique<tact::echo_protocol>();
  });
  if (!framed)
    return fail("framed");
  auto lines = rt.create_server(std::move(*framed), "127.0.0.1", 0);
  if (!lines || round_trip(rt, lines->port(), "a\nbc\n") != "a\nbc\n")
    return fail("line-framed echo");

  auto u = tact::parse_url("tcp://127.0.0.1:" + std::to_string(srv->port()));
  if (!u || u->port != srv->port())
    return fail("parse_url");
  auto err = tact::make_error(tact::errc::timed_out, "a test");
  if (tact::code_of(err) != tact::errc::timed_out
      || tact::describe(err).find("a test") == std::string::npos)
    return fail("errors");
  tact::resp::command_decoder decoder;
  decoder.feed("*1\r\n$4\r\nPING\r\n");
  auto cmd = decoder.next();
  if (!cmd || !*cmd || (**cmd)[0] != "PING")
    return fail("RESP");

  rt.shutdown();
  std::printf("installed\n");
  return 0;
}
