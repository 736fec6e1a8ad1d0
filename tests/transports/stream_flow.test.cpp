// Flow control both ways: asyncio's write watermarks and
// the read credit that bounds what a transport delivers to a protocol's
// mailbox before the protocol has consumed it.

#include <catch2/catch.hpp>

#include <atomic>
#include <limits>
#include <thread>

#include <sys/socket.h>

#include <caf/event_based_actor.hpp>

#include "support/any_kind.hpp"
#include "support/harness.hpp"
#include "tact/runtime/messages.hpp"

using namespace tact;
using namespace tact::test;

SCENARIO("write buffer limits follow asyncio's defaults and rules") {
  auto k = any_kind();
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    raw_listener l{k};
    auto [t, p] = l.connect(rt, recording(j));
    REQUIRE(t);
    using limits = std::pair<size_t, size_t>;
    CHECK(t->get_write_buffer_limits() == limits{16384, 65536});
    CHECK_FALSE(t->set_write_buffer_limits(1000));
    CHECK(t->get_write_buffer_limits() == limits{250, 1000});
    CHECK_FALSE(t->set_write_buffer_limits(std::nullopt, 300));
    CHECK(t->get_write_buffer_limits() == limits{300, 1200});
    CHECK_FALSE(t->set_write_buffer_limits(500, 100));
    CHECK(t->get_write_buffer_limits() == limits{100, 500});
    CHECK(code_of(t->set_write_buffer_limits(100, 500))
          == errc::invalid_argument);
    CHECK(t->get_write_buffer_limits() == limits{100, 500});
    CHECK_FALSE(t->set_write_buffer_limits());
    CHECK(t->get_write_buffer_limits() == limits{16384, 65536});
    // Negative values are refused, naming the argument (as asyncio's
    // ValueError); before, -1 became 2^64 - 1 and turned flow control off.
    auto negative_high = t->set_write_buffer_limits(-1);
    CHECK(code_of(negative_high) == errc::invalid_argument);
    CHECK_THAT(describe(negative_high), Catch::Contains("high (-1)"));
    auto negative_low = t->set_write_buffer_limits(std::nullopt, -5);
    CHECK(code_of(negative_low) == errc::invalid_argument);
    CHECK_THAT(describe(negative_low), Catch::Contains("low (-5)"));
    CHECK(code_of(t->set_write_buffer_limits(100, -1))
          == errc::invalid_argument);
    CHECK(t->get_write_buffer_limits() == limits{16384, 65536});
    // A low whose fourfold passes the range gives the largest high.
    CHECK_FALSE(t->set_write_buffer_limits(std::nullopt, int64_t{1} << 62));
    CHECK(t->get_write_buffer_limits().second
          == static_cast<size_t>(std::numeric_limits<int64_t>::max()));
    t->close();
    REQUIRE(j->wait_for("connection_lost"));
  });
}

SCENARIO("16 KiB chunks to a peer that does not read pause exactly once") {
  auto k = any_kind();
  INFO("transport: " << name_of(k));
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    raw_listener l{k};
    auto [t, p] = l.connect(rt, recording(j));
    REQUIRE(t);
    REQUIRE(j->wait_for("connection_made"));
    // asyncio pauses once for 1 MiB; loopback TCP here can absorb more than
    // that in kernel buffers, so send enough to fill them whatever their size.
    constexpr int chunks = 1024;
    std::string chunk(16 * 1024, 'x');
    for (int i = 0; i < chunks; ++i)
      t->write(chunk);
    REQUIRE(j->wait_for("pause_writing"));
    std::this_thread::sleep_for(100ms);
    CHECK(j->count("pause_writing") == 1);
    CHECK(j->count("resume_writing") == 0);
    CHECK(t->get_write_buffer_size() > 64 * 1024);
    // Reading everything drains the buffer under low: one resume.
    CHECK(p.recv_n(chunks * chunk.size(), 20s).size() == chunks * chunk.size());
    REQUIRE(j->wait_for("resume_writing"));
    CHECK(j->count("pause_writing") == 1);
    CHECK(j->count("resume_writing") == 1);
    t->close();
    REQUIRE(j->wait_for("connection_lost"));
  });
}

SCENARIO("lowering high under the buffered size pauses at once") {
  auto k = any_kind();
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    raw_listener l{k};
    auto [t, p] = l.connect(rt, recording(j));
    REQUIRE(t);
    REQUIRE(j->wait_for("connection_made"));
    // Fill the socket buffers with limits too high to pause.
    CHECK_FALSE(t->set_write_buffer_limits(64 * 1024 * 1024));
    t->write(std::string(8 * 1024 * 1024, 'y'));
    REQUIRE(eventually([&t = t] { return t->get_write_buffer_size() > 1024; }));
    std::this_thread::sleep_for(50ms);
    CHECK(j->count("pause_writing") == 0);
    CHECK_FALSE(t->set_write_buffer_limits(1024));
    REQUIRE(j->wait_for("pause_writing"));
    t->abort();
    REQUIRE(j->wait_for("connection_lost"));
  });
}

SCENARIO("a protocol that does not consume stops the transport reading") {
  auto k = any_kind();
  INFO("transport: " << name_of(k));
  // A behaviour protocol that records deliveries but gives no credit back
  // until told to.
  std::atomic<size_t> delivered{0};
  std::atomic<bool> lost{false};
  auto handle = std::make_shared<transport>();
  std::mutex mtx;
  with_runtime([&](runtime& rt) {
    auto l = listen(rt, k, [&] {
      return rt.spawn_on_loop([&](caf::event_based_actor* self) -> caf::behavior {
        return {
          [&](connection_made& msg) {
            std::lock_guard<std::mutex> guard{mtx};
            *handle = msg.handle;
          },
          [&](data_received& msg) { delivered += msg.data.size(); },
          [&](eof_received) { return false; },
          [&, self](connection_lost&) {
            lost = true;
            self->quit();
          },
        };
      });
    });
    auto p = connect_peer(k, l);
    // The peer sends far more than the credit; the transport must stop at
    // the credit and leave the rest in the kernel.
    std::atomic<bool> sending{true};
    std::atomic<size_t> sent{0};
    std::thread sender{[&] {
      std::string chunk(64 * 1024, 'z');
      while (sending && sent < 8 * 1024 * 1024) {
        auto n = ::send(p.fd(), chunk.data(), chunk.size(),
                        MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0)
          sent += static_cast<size_t>(n);
        else
          std::this_thread::sleep_for(1ms);
      }
    }};
    REQUIRE(eventually([&] { return delivered >= 256 * 1024; }));
    std::this_thread::sleep_for(300ms);
    auto first = delivered.load();
    CHECK(first >= 256 * 1024);
    CHECK(first <= 256 * 1024 + 256 * 1024);
    CHECK(sent > first);
    // Giving credit back lets the data flow again.
    transport t;
    {
      std::lock_guard<std::mutex> guard{mtx};
      t = *handle;
    }
    t.consumed(first);
    REQUIRE(eventually([&] { return delivered > first; }));
    sending = false;
    sender.join();
    t.abort();
    REQUIRE(eventually([&] { return lost.load(); }));
  });
}
