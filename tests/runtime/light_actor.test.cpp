// The light actors that transports and class adapters are made of: direct
// calls keep each sender's order, and exit messages, late requests and
// other threads are handled as CAF actors handle them.

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <sstream>
#include <thread>

#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>

#include "support/any_kind.hpp"
#include "support/harness.hpp"
#include "tact/runtime/messages.hpp"

using namespace tact;
using namespace tact::test;

namespace {

// Checks that the lines of `text` starting with `tag` carry 0, 1, 2, ...
// up to `count` - 1 in that order; returns what is wrong, or "".
std::string check_sequence(const std::string& text, char tag, int count) {
  std::istringstream in{text};
  std::string line;
  int next = 0;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] != tag)
      continue;
    if (std::stoi(line.substr(1)) != next)
      return std::string(1, tag) + ": expected " + std::to_string(next)
             + ", got " + line;
    ++next;
  }
  if (next != count)
    return std::string(1, tag) + ": " + std::to_string(next) + " of "
           + std::to_string(count) + " lines";
  return {};
}

} // namespace

SCENARIO("writes from the protocol and from another thread each keep their order") {
  auto k = any_kind();
  INFO("transport: " << name_of(k));
  constexpr int lines = 2000;
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    // The protocol answers every peer line "pN" with "PN" from inside
    // data_received (the direct path); a plain thread writes "T0".."T1999"
    // through the same handle at the same time (the mailbox path).
    // Catch's assertions are not thread-safe: other threads count failures.
    auto pending = std::make_shared<std::string>();
    auto failed_writes = std::make_shared<std::atomic<int>>(0);
    raw_listener l{k};
    auto [t, p] = l.connect(rt, recording(j, [pending, failed_writes](recorder& r) {
      r.on_data = [pending, failed_writes](transport& tr, const bytes& data) {
        pending->append(data.begin(), data.end());
        size_t pos;
        while ((pos = pending->find('\n')) != std::string::npos) {
          auto line = pending->substr(0, pos);
          pending->erase(0, pos + 1);
          if (tr.write("P" + line.substr(1) + "\n"))
            ++*failed_writes;
        }
      };
    }));
    REQUIRE(t);
    REQUIRE(j->wait_for("connection_made"));
    std::thread writer{[tr = *t, failed_writes]() mutable {
      for (int i = 0; i < lines; ++i)
        if (tr.write("T" + std::to_string(i) + "\n"))
          ++*failed_writes;
    }};
    std::string requests;
    for (int i = 0; i < lines; ++i)
      requests += "p" + std::to_string(i) + "\n";
    p.send_all(requests);
    writer.join();
    std::string got;
    REQUIRE(eventually([&, &p = p] {
      got += p.recv_n(4096, 20ms);
      return std::count(got.begin(), got.end(), '\n') >= 2 * lines;
    }, 10s));
    CHECK(*failed_writes == 0);
    CHECK(check_sequence(got, 'P', lines).empty());
    CHECK(check_sequence(got, 'T', lines).empty());
    t->close();
    REQUIRE(j->wait_for("connection_lost"));
    CHECK(j->lost_reason() == caf::none);
  });
}

SCENARIO("an exit message to a transport ends it with connection_lost(error)") {
  auto k = any_kind();
  INFO("transport: " << name_of(k));
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    raw_listener l{k};
    auto [t, p] = l.connect(rt, recording(j));
    REQUIRE(t);
    REQUIRE(j->wait_for("connection_made"));
    caf::anon_send_exit(t->actor(), caf::exit_reason::kill);
    REQUIRE(j->wait_for("connection_lost"));
    CHECK(j->lost_reason() != caf::none);
    CHECK(t->is_closing());
    CHECK_FALSE(t->get_protocol());
    // The descriptor is closed: the peer reads EOF.
    bool eof = false;
    p.recv_all(&eof, 2s);
    CHECK(eof);
    CHECK(j->count("connection_lost") == 1);
  });
}

SCENARIO("an exit message to a class adapter aborts its transport; others go on") {
  auto k = any_kind();
  INFO("transport: " << name_of(k));
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    auto l = listen(rt, k, recording(j, [](recorder& r) {
      r.on_data = [](transport& tr, const bytes& data) { tr.write(data); };
    }));
    auto victim = connect_peer(k, l);
    auto other = connect_peer(k, l);
    REQUIRE(j->wait_for("connection_made", 2));
    REQUIRE(eventually([&] { return l.srv.active_connections() == 2; }));
    // Find the victim's transport through its echo.
    victim.send_all("v");
    REQUIRE(victim.recv_n(1) == "v");
    other.send_all("o");
    REQUIRE(other.recv_n(1) == "o");
    // The journal's handle is the last connection made; kill the protocol
    // of whichever that is, and check the two peers accordingly.
    auto t = j->handle();
    REQUIRE(t);
    auto proto = t.get_protocol();
    REQUIRE(proto);
    caf::anon_send_exit(proto, caf::exit_reason::kill);
    REQUIRE(eventually([&] { return l.srv.active_connections() == 1; }));
    CHECK(t.is_closing());
    // Exactly one of the two peers sees its connection end; the other
    // still echoes.
    bool eof_v = false;
    bool eof_o = false;
    victim.recv_all(&eof_v, 200ms);
    other.recv_all(&eof_o, 200ms);
    CHECK(eof_v != eof_o);
    auto& alive = eof_v ? other : victim;
    alive.send_all("still here");
    CHECK(alive.recv_n(10) == "still here");
  });
}

SCENARIO("a request to a transport that has ended gets an error, not silence") {
  auto k = any_kind();
  INFO("transport: " << name_of(k));
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    raw_listener l{k};
    auto [t, p] = l.connect(rt, recording(j));
    REQUIRE(t);
    REQUIRE(j->wait_for("connection_made"));
    caf::scoped_actor self{rt.system()};
    uint64_t size = 99;
    self->request(t->actor(), caf::infinite, op::get_write_buffer_size{})
      .receive([&](uint64_t n) { size = n; },
               [&](caf::error& err) { FAIL(rt.system().render(err)); });
    CHECK(size == 0);
    t->abort();
    REQUIRE(j->wait_for("connection_lost"));
    bool failed = false;
    self->request(t->actor(), std::chrono::seconds{5},
                  op::get_write_buffer_size{})
      .receive([&](uint64_t) {}, [&](caf::error&) { failed = true; });
    CHECK(failed);
  });
}

SCENARIO("a class protocol reaches its adapter with self() and system()") {
  auto k = any_kind();
  INFO("transport: " << name_of(k));
  auto j = std::make_shared<journal>();
  std::atomic<bool> same{false};
  std::atomic<const caf::actor_system*> seen_system{nullptr};
  class probe : public recorder {
  public:
    probe(std::shared_ptr<journal> jr, std::atomic<bool>& s,
          std::atomic<const caf::actor_system*>& sys)
      : recorder(std::move(jr)), same_(s), sys_(sys) {
      // nop
    }
    void connection_made(transport& t) override {
      same_ = self() && self() == t.get_protocol();
      sys_ = &system();
      recorder::connection_made(t);
    }

  private:
    std::atomic<bool>& same_;
    std::atomic<const caf::actor_system*>& sys_;
  };
  with_runtime([&](runtime& rt) {
    raw_listener l{k};
    auto [t, p] = l.connect(rt, [&] {
      return std::make_unique<probe>(j, same, seen_system);
    });
    REQUIRE(t);
    REQUIRE(j->wait_for("connection_made"));
    CHECK(same);
    CHECK(seen_system == &rt.system());
    t->close();
    REQUIRE(j->wait_for("connection_lost"));
  });
}
