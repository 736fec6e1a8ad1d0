// The runtime and its loop: actors on the loop run on the loop thread,
// blocking calls from the loop are refused, and nothing is left behind.

#include <catch2/catch.hpp>

#include <fstream>
#include <future>
#include <string>
#include <thread>

#include <caf/event_based_actor.hpp>
#include <caf/scoped_actor.hpp>

#include "support/harness.hpp"
#include "tact/runtime/detail/loop_group.hpp"
#include "tact/runtime/detail/multiplexer.hpp"

using namespace tact;
using namespace tact::test;

SCENARIO("a runtime starts and stops without leaving threads or fds") {
  with_runtime([](runtime& rt) { CHECK(rt.mux().live_actors() == 0); });
}

SCENARIO("the loop thread is named, for per-thread CPU in /proc") {
  with_runtime([](runtime& rt) {
    std::promise<std::string> name;
    rt.mux().post([&] {
      std::ifstream in{"/proc/thread-self/comm"};
      std::string line;
      std::getline(in, line);
      name.set_value(line);
    });
    auto fut = name.get_future();
    REQUIRE(fut.wait_for(5s) == std::future_status::ready);
    CHECK(fut.get() == "tact-loop");
  });
}

SCENARIO("actors spawned on the loop run on the loop thread") {
  with_runtime([](runtime& rt) {
    std::promise<bool> on_loop;
    auto a = rt.spawn_on_loop([&](caf::event_based_actor* self) -> caf::behavior {
      return {
        [&, self](int) {
          on_loop.set_value(rt.loops().on_loop_thread());
          self->quit();
        },
      };
    });
    caf::anon_send(a, 42);
    auto fut = on_loop.get_future();
    REQUIRE(fut.wait_for(5s) == std::future_status::ready);
    CHECK(fut.get());
  });
}

SCENARIO("loop actors talk to scheduler actors and back") {
  with_runtime([](runtime& rt) {
    auto doubler = rt.system().spawn([]() -> caf::behavior {
      return {[](int x) { return x * 2; }};
    });
    auto looped = rt.spawn_on_loop([&](caf::event_based_actor* self) -> caf::behavior {
      return {
        [=](int x) { return self->delegate(doubler, x); },
      };
    });
    caf::scoped_actor self{rt.system()};
    int result = 0;
    self->request(looped, caf::infinite, 21)
      .receive([&](int x) { result = x; },
               [&](caf::error& err) { FAIL(caf::to_string(err)); });
    CHECK(result == 42);
    caf::anon_send_exit(looped, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(doubler, caf::exit_reason::user_shutdown);
  });
}

SCENARIO("a blocking loop operation called on the loop is refused") {
  with_runtime([](runtime& rt) {
    std::promise<caf::error> result;
    rt.mux().post([&] {
      auto t = rt.create_connection(
        [] { return std::make_unique<protocol>(); }, "127.0.0.1", 1);
      result.set_value(t ? caf::error{} : t.error());
    });
    auto fut = result.get_future();
    REQUIRE(fut.wait_for(5s) == std::future_status::ready);
    CHECK(code_of(fut.get()) == errc::would_deadlock);
  });
}

SCENARIO("connecting to nothing is an error reply and no callback") {
  with_runtime([](runtime& rt) {
    auto j = std::make_shared<journal>();
    // A port that was free a moment ago.
    auto srv = rt.create_server([] { return std::make_unique<protocol>(); },
                                "127.0.0.1", 0);
    REQUIRE(srv);
    auto port = srv->port();
    srv->close();
    auto t = rt.create_connection(recording(j), "127.0.0.1", port);
    REQUIRE_FALSE(t);
    CHECK(code_of(t.error()) == errc::connection_refused);
    auto u = rt.create_unix_connection(recording(j), "/nonexistent/tact.sock");
    REQUIRE_FALSE(u);
    CHECK(code_of(u.error()) == errc::no_such_file);
    auto h = rt.create_connection(recording(j), "no-such-host.invalid", 80);
    REQUIRE_FALSE(h);
    CHECK(code_of(h.error()) == errc::name_resolution_failed);
    auto fd = rt.connect_accepted_socket(recording(j), 0);
    CHECK_FALSE(fd);
  });
}
