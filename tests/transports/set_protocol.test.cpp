// set_protocol under load (docs/architecture.md, "Protocol switching"): a
// peer streams a byte sequence in which every position has
// its own value, while the connection's protocol is switched back and forth
// thousands of times, from outside and from inside the protocols' own
// callbacks. Every byte must reach exactly one protocol, once, in order.

#include <catch2/catch.hpp>

#include <atomic>
#include <cstdio>
#include <mutex>
#include <random>
#include <thread>

#include "support/any_kind.hpp"
#include "support/harness.hpp"
#include "tact/runtime/messages.hpp"

using namespace tact;
using namespace tact::test;

namespace {

// Position i of the stream; shifts, duplicates and gaps all show.
uint8_t expected_at(uint64_t i) {
  return static_cast<uint8_t>(i + (i >> 8) * 7 + (i >> 16) * 13);
}

// What the protocols saw, together.
struct check {
  std::mutex mtx;
  uint64_t pos = 0;
  bool ok = true;
  uint64_t bad_at = 0;
  std::atomic<uint64_t> inside_switches{0};
  std::atomic<int> eofs{0};
  std::atomic<int> losts{0};
  // The two protocol actors, once both exist.
  caf::actor a;
  caf::actor b;

  void feed(const char* data, size_t size) {
    std::lock_guard<std::mutex> guard{mtx};
    for (size_t i = 0; i < size; ++i, ++pos)
      if (ok && static_cast<uint8_t>(data[i]) != expected_at(pos)) {
        ok = false;
        bad_at = pos;
      }
  }

  caf::actor partner_of(const caf::actor& self) {
    std::lock_guard<std::mutex> guard{mtx};
    return self == a ? b : a;
  }
};

// One of the two protocols. With `hand_on`, each data_received handles a
// random prefix and leaves the rest to the other protocol as `unread`.
class switcher : public protocol {
public:
  switcher(std::shared_ptr<check> c, bool hand_on, unsigned seed,
           transport t = {})
    : c_(std::move(c)), hand_on_(hand_on), rng_(seed), t_(std::move(t)) {
    // nop
  }

  void connection_made(transport& t) override {
    t_ = t;
  }

  void data_received(bytes data) override {
    if (hand_on_ && data.size() > 1) {
      if (auto partner = c_->partner_of(self())) {
        auto k = 1 + rng_() % std::min<size_t>(data.size() - 1, 4096);
        c_->feed(data.data(), k);
        ++c_->inside_switches;
        t_.set_protocol(partner, bytes(data.begin() + static_cast<long>(k),
                                       data.end()));
        return;
      }
    }
    c_->feed(data.data(), data.size());
  }

  bool eof_received() override {
    ++c_->eofs;
    return false;
  }

  void connection_lost(const caf::error&) override {
    ++c_->losts;
  }

private:
  std::shared_ptr<check> c_;
  bool hand_on_;
  std::mt19937 rng_;
  transport t_;
};

// Sends at least `total` bytes of the sequence, in chunks of random size,
// and goes on until `more` is false; then EOF. Returns the bytes sent.
uint64_t stream_sequence(peer& p, uint64_t total, unsigned seed,
                         const std::atomic<bool>& more) {
  std::mt19937 rng{seed};
  std::string chunk;
  uint64_t sent = 0;
  while (sent < total || more.load()) {
    auto n = 1 + rng() % 16384;
    chunk.resize(n);
    for (uint64_t i = 0; i < n; ++i)
      chunk[i] = static_cast<char>(expected_at(sent + i));
    p.send_all(chunk);
    sent += n;
  }
  p.shutdown_write();
  return sent;
}

} // namespace

SCENARIO("set_protocol back and forth under load loses, duplicates and "
         "reorders nothing") {
  auto k = any_kind();
  auto hand_on = GENERATE(false, true);
  INFO("transport: " << name_of(k) << ", switched "
                     << (hand_on ? "inside with unread bytes" : "from outside"));
  constexpr uint64_t total = 24 * 1024 * 1024;
  auto c = std::make_shared<check>();
  with_runtime([&](runtime& rt) {
    raw_listener l{k};
    auto [t, p] = l.connect(rt, [&] {
      return std::make_unique<switcher>(c, hand_on, 1);
    });
    REQUIRE(t);
    REQUIRE(eventually([&t = t] { return static_cast<bool>(t->get_protocol()); }));
    auto a = t->get_protocol();
    // The second protocol starts as the current one: a switch already.
    auto b = t->set_protocol(std::make_unique<switcher>(c, hand_on, 2, *t));
    REQUIRE(b);
    {
      std::lock_guard<std::mutex> guard{c->mtx};
      c->a = a;
      c->b = b;
    }
    // From outside: the stream goes on until 5000 switches are done.
    std::atomic<bool> more{!hand_on};
    uint64_t sent = 0;
    std::thread sender{[&, fd_peer = &p] {
      sent = stream_sequence(*fd_peer, total, 7, more);
    }};
    uint64_t outside_switches = 1;
    if (!hand_on) {
      std::mt19937 rng{3};
      while (outside_switches < 5000) {
        t->set_protocol(outside_switches % 2 == 0 ? b : a);
        ++outside_switches;
        std::this_thread::sleep_for(std::chrono::microseconds(rng() % 20));
      }
      more = false;
    }
    sender.join();
    bool eof = false;
    p.recv_all(&eof, 10s);
    CHECK(eof);
    REQUIRE(eventually([&] { return c->losts.load() == 1; }, 10s));
    std::lock_guard<std::mutex> guard{c->mtx};
    std::printf("set_protocol stress (%s, %s): %llu switches, %llu bytes "
                "verified\n",
                name_of(k), hand_on ? "inside" : "outside",
                static_cast<unsigned long long>(
                  hand_on ? c->inside_switches.load() + 1 : outside_switches),
                static_cast<unsigned long long>(c->pos));
    std::fflush(stdout);
    CHECK(c->ok);
    CHECK(c->bad_at == 0);
    CHECK(c->pos == sent);
    CHECK(c->eofs.load() == 1);
    CHECK(c->losts.load() == 1);
    CHECK((hand_on ? c->inside_switches.load() : outside_switches) >= 2000);
    c->a = nullptr;
    c->b = nullptr;
  });
}

SCENARIO("a switch whose old protocol never hands over ends when that "
         "protocol goes") {
  auto k = any_kind();
  INFO("transport: " << name_of(k));
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    raw_listener l{k};
    // A behaviour that takes the handover request and never answers it.
    auto stuck = rt.system().spawn([](caf::event_based_actor* self) {
      return caf::behavior{
        [](const connection_made&) {},
        [](data_received& d) {
          // Not expected: everything after the switch goes to the new one.
          (void) d;
        },
        [self](const handover&) -> caf::response_promise {
          return self->make_response_promise();
        },
        [self](const connection_lost&) { self->quit(); },
      };
    });
    auto [t, p] = l.connect(rt, [stuck] { return stuck; });
    REQUIRE(t);
    auto next = t->set_protocol(std::make_unique<recorder>(j));
    REQUIRE(next);
    const std::string text = "held until the old protocol is gone";
    p.send_all(text);
    std::this_thread::sleep_for(200ms);
    CHECK(j->data().empty());
    caf::anon_send_exit(stuck, caf::exit_reason::kill);
    REQUIRE(j->wait([&](journal& jj) {
      return jj.data_size_unlocked() >= text.size();
    }));
    CHECK(j->data() == text);
    p.close();
    REQUIRE(j->wait_for("connection_lost"));
    CHECK(j->count("connection_lost") == 1);
  });
}
