// Fault injection: what crashing code, dying actors and bad peers around a
// connection do to it and to the others (issue "Reliability"). Each runs on
// TCP and on Unix sockets against a server with several live connections.

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <thread>

#include <fcntl.h>
#include <sys/socket.h>

#include <caf/event_based_actor.hpp>
#include <caf/exit_reason.hpp>
#include <caf/send.hpp>

#include "support/any_kind.hpp"
#include "support/harness.hpp"
#include "tact/protocols/echo.hpp"
#include "tact/runtime/messages.hpp"

using namespace tact;
using namespace tact::test;

namespace {

// A round trip of `text` through an echo connection.
void check_echo(peer& p, const std::string& text) {
  p.send_all(text);
  CHECK(p.recv_n(text.size()) == text);
}

protocol_factory echo_factory() {
  return [] { return std::make_unique<echo_protocol>(); };
}

} // namespace

SCENARIO("a protocol actor that exits or throws ends its connection only") {
  auto k = any_kind();
  INFO("transport: " << name_of(k));
  std::vector<std::string> warnings;
  with_runtime([&](runtime& rt) {
    // A behaviour echo that quits on "exit" and throws on "throw" (an
    // exception in a behaviour kills the actor).
    auto l = listen(rt, k, [&rt] {
      return rt.system().spawn([](caf::event_based_actor* self) {
        auto t = std::make_shared<transport>();
        return caf::behavior{
          [t](connection_made& m) { *t = m.handle; },
          [self, t](data_received& d) {
            t->consumed(d.data.size());
            auto text = to_string(d.data);
            if (text == "exit")
              self->quit(caf::exit_reason::user_shutdown);
            else if (text == "throw")
              throw std::runtime_error("protocol bug");
            else
              t->write(std::move(d.data));
          },
          [](eof_received) { return false; },
          [self](connection_lost&) { self->quit(); },
        };
      });
    });
    auto a = connect_peer(k, l);
    auto b = connect_peer(k, l);
    auto c = connect_peer(k, l);
    check_echo(a, "before");
    check_echo(b, "before");
    check_echo(c, "before");
    a.send_all("exit");
    b.send_all("throw");
    bool eof_a = false;
    bool eof_b = false;
    a.recv_all(&eof_a, 5s);
    b.recv_all(&eof_b, 5s);
    CHECK(eof_a);
    CHECK(eof_b);
    // The others go on, and new connections are served.
    check_echo(c, "still served");
    auto d = connect_peer(k, l);
    check_echo(d, "new one");
    REQUIRE(eventually([&] { return l.srv.active_connections() == 2; }));
    l.srv.close();
    c.close();
    d.close();
  }, &warnings);
}

SCENARIO("a transport actor that dies gives its protocol connection_lost "
         "with the reason") {
  auto k = any_kind();
  INFO("transport: " << name_of(k));
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    raw_listener l{k};
    auto [t, p] = l.connect(rt, recording(j));
    REQUIRE(t);
    REQUIRE(j->wait_for("connection_made"));
    t->write(big(8 * 1024 * 1024));
    caf::anon_send_exit(t->actor(), caf::exit_reason::kill);
    REQUIRE(j->wait_for("connection_lost"));
    CHECK(j->lost_reason() == caf::error{caf::exit_reason::kill});
    CHECK(j->count("connection_lost") == 1);
    // Its descriptor is closed: the peer sees the end.
    bool eof = false;
    p.recv_all(&eof, 10s);
    CHECK(eof);
    CHECK(t->is_closing());
    CHECK_FALSE(t->get_protocol());
  });
}

SCENARIO("a peer that resets while the transport is writing") {
  auto k = any_kind();
  INFO("transport: " << name_of(k));
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    raw_listener l{k};
    auto [t, p] = l.connect(rt, recording(j));
    REQUIRE(t);
    REQUIRE(j->wait_for("connection_made"));
    // Far more than the socket buffers take: most stays queued.
    for (int i = 0; i < 64; ++i)
      t->write(big(256 * 1024));
    REQUIRE(eventually([&t = t] { return t->get_write_buffer_size() > 1024 * 1024; }));
    p.reset();
    // Writing on goes into a dead connection (EPIPE or ECONNRESET).
    for (int i = 0; i < 8; ++i)
      t->write(big(64 * 1024));
    REQUIRE(j->wait_for("connection_lost"));
    auto code = code_of(j->lost_reason());
    CHECK((code == errc::connection_reset || code == errc::broken_pipe));
    CHECK(j->count("connection_lost") == 1);
    CHECK(t->get_write_buffer_size() == 0);
  });
}

SCENARIO("a peer that never reads does not slow the others") {
  auto k = any_kind();
  INFO("transport: " << name_of(k));
  with_runtime([&](runtime& rt) {
    auto l = listen(rt, k, echo_factory());
    auto stalled = connect_peer(k, l);
    std::atomic<bool> stop{false};
    std::atomic<size_t> pushed{0};
    // Sends until the server stops reading it (its echo is not read), and
    // keeps trying.
    std::thread pusher{[&] {
      auto chunk = big(64 * 1024);
      ::fcntl(stalled.fd(), F_SETFL, O_NONBLOCK);
      while (!stop) {
        auto n = ::send(stalled.fd(), chunk.data(), chunk.size(), MSG_NOSIGNAL);
        if (n > 0)
          pushed += static_cast<size_t>(n);
        else
          std::this_thread::sleep_for(1ms);
      }
    }};
    // Wait until the stalled connection is backed up.
    size_t last = 0;
    REQUIRE(eventually([&] {
      std::this_thread::sleep_for(100ms);
      auto now = pushed.load();
      auto settled = now == last && now > 0;
      last = now;
      return settled;
    }, 10s));
    // Meanwhile others are echoed in full.
    auto payload = big(16 * 1024 * 1024);
    auto other = connect_peer(k, l);
    std::thread writer{[&] { other.send_all(payload); }};
    auto got = other.recv_n(payload.size(), 20s);
    writer.join();
    CHECK(got == payload);
    for (int i = 0; i < 100; ++i) {
      auto p = connect_peer(k, l);
      check_echo(p, "quick " + std::to_string(i));
    }
    stop = true;
    pusher.join();
    INFO("the stalled peer pushed " << pushed.load() << " bytes");
    CHECK(pushed.load() < payload.size());
    l.srv.close();
    stalled.reset();
  });
}

SCENARIO("a client that trickles one byte a second is echoed byte by byte") {
  auto k = any_kind();
  INFO("transport: " << name_of(k));
  with_runtime([&](runtime& rt) {
    auto l = listen(rt, k, echo_factory());
    auto slow = connect_peer(k, l);
    auto busy = connect_peer(k, l);
    for (char c : std::string{"tick"}) {
      slow.send_all(std::string(1, c));
      // Every byte comes back on its own: nothing waits for more.
      CHECK(slow.recv_n(1, 5s) == std::string(1, c));
      check_echo(busy, big(256 * 1024));
      std::this_thread::sleep_for(1s);
    }
    l.srv.close();
  });
}
