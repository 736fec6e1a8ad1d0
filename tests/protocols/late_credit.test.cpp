// Lost wake-ups: protocol actors that give their read credit back late
// (after a message to themselves, from another thread, in bursts) under
// floods of small frames, over plain streams, framing and TLS. Each must
// get every byte, in order, with the read credit bounding what is held.

#include <catch2/catch.hpp>

#include <atomic>
#include <cstdio>
#include <functional>
#include <thread>

#include <sys/socket.h>

#include <caf/event_based_actor.hpp>

#include "support/harness.hpp"
#include "support/tls_support.hpp"
#include "tact/transports/framing.hpp"
#include "tact/runtime/messages.hpp"
#include "tact/runtime/detail/transport_state.hpp"
#include "tact/transports/tls.hpp"

using namespace tact;
using namespace tact::test;

namespace {

using give_atom = caf::atom_constant<caf::atom("give")>;

// Records per line; the sanitizer builds, ten times slower, send fewer.
#if defined(__SANITIZE_THREAD__)
constexpr uint64_t lines = 5'000;
#elif defined(__SANITIZE_ADDRESS__)
constexpr uint64_t lines = 40'000;
#else
constexpr uint64_t lines = 200'000;
#endif

constexpr size_t line_size = 11; // ten digits and '\n'

// A small credit, so that the flood runs into it thousands of times.
constexpr uint64_t credit = 4096;

enum class giver { in_handler, self_message, other_thread, bursts };

// Under ThreadSanitizer each variant takes tens of seconds (every atomic
// and message is instrumented): there, the variants that cross threads.
#if defined(__SANITIZE_THREAD__)
#  define EVERY_GIVER giver::self_message, giver::other_thread
#  define LATE_GIVERS giver::other_thread
#  define EVERY_PLACE place::scheduler
#  define EVERY_KIND kind::tcp
#else
#  define EVERY_GIVER                                                      \
    giver::in_handler, giver::self_message, giver::other_thread,          \
      giver::bursts
#  define LATE_GIVERS giver::self_message, giver::other_thread, giver::bursts
#  define EVERY_PLACE place::loop, place::scheduler
#  define EVERY_KIND kind::tcp, kind::unix_socket
#endif

const char* name_of(giver g) {
  switch (g) {
    case giver::in_handler: return "in the handler";
    case giver::self_message: return "after a message to itself";
    case giver::other_thread: return "from an actor on another thread";
    default: return "in bursts";
  }
}

// What the consumer saw: the stream as lines (framed) or bytes (plain).
struct tally {
  std::atomic<uint64_t> bytes{0};
  std::atomic<uint64_t> frames{0};
  std::atomic<uint64_t> wrong{0};
  std::atomic<bool> lost{false};
  // The most the consumer's transport counted as delivered and not given
  // back, seen at a delivery.
  std::atomic<uint64_t> most_held{0};
  // The consumer's transport, for the diagnosis of a stall.
  std::atomic<detail::transport_state*> state{nullptr};
  std::string pending; // plain streams: the unfinished line (actor only)
  uint64_t next = 0;   // the line expected next (actor only)

  void check_line(const std::string& line) {
    char want[16];
    std::snprintf(want, sizeof(want), "%010llu",
                  static_cast<unsigned long long>(next++));
    if (line != want)
      ++wrong;
  }
};

// A protocol actor that hands the credit for each delivery back the way
// `how` says. `framed_lines` tells whether deliveries are lines.
caf::behavior consumer(caf::event_based_actor* self, giver how,
                       bool framed_lines, std::shared_ptr<tally> out,
                       caf::actor helper) {
  auto t = std::make_shared<transport>();
  auto owed = std::make_shared<uint64_t>(0);
  auto owed_frames = std::make_shared<int>(0);
  self->set_default_handler(caf::drop);
  return {
    [=](connection_made& msg) {
      *t = msg.handle;
      out->state = msg.handle.state();
      if (helper)
        self->send(helper, msg.handle);
    },
    [=](data_received& msg) {
      auto n = msg.data.size();
      out->bytes += n;
      auto held = out->state.load()->unconsumed.load();
      if (held > out->most_held.load())
        out->most_held = held;
      if (framed_lines) {
        out->check_line(to_string(msg.data));
        ++out->frames;
      } else {
        out->pending += to_string(msg.data);
        size_t pos;
        while ((pos = out->pending.find('\n')) != std::string::npos) {
          out->check_line(out->pending.substr(0, pos));
          out->pending.erase(0, pos + 1);
          ++out->frames;
        }
      }
      switch (how) {
        case giver::in_handler:
          t->consumed(n);
          break;
        case giver::self_message:
          self->send(self, give_atom::value, static_cast<uint64_t>(n));
          break;
        case giver::other_thread:
          self->send(helper, give_atom::value, static_cast<uint64_t>(n));
          break;
        case giver::bursts:
          // Every 50th delivery, or a quarter of the credit, at once.
          *owed += n;
          if (++*owed_frames == 50 || *owed >= credit / 4) {
            self->send(self, give_atom::value, *owed);
            *owed = 0;
            *owed_frames = 0;
          }
          break;
      }
    },
    [=](give_atom, uint64_t n) { t->consumed(n); },
    [=](eof_received) { return false; },
    [=](connection_lost&) {
      out->lost = true;
      if (helper)
        self->send_exit(helper, caf::exit_reason::user_shutdown);
      self->quit();
    },
  };
}

// An actor on CAF's scheduler threads (not the loop) that gives credit
// back for the consumer.
caf::behavior remote_giver(caf::event_based_actor*) {
  auto t = std::make_shared<transport>();
  return {
    [=](transport& handle) { *t = handle; },
    [=](give_atom, uint64_t n) { t->consumed(n); },
  };
}

std::string flood() {
  std::string data;
  data.reserve(lines * line_size);
  char buf[16];
  for (uint64_t i = 0; i < lines; ++i) {
    std::snprintf(buf, sizeof(buf), "%010llu\n",
                  static_cast<unsigned long long>(i));
    data += buf;
  }
  return data;
}

// Where the consumer runs: on the loop with its transport, or on CAF's
// scheduler threads, concurrently with the loop.
enum class place { loop, scheduler };

protocol_factory consumers(runtime& rt, giver how, bool framed_lines,
                           std::shared_ptr<tally> out,
                           place where = place::loop) {
  return [&rt, how, framed_lines, out, where] {
    caf::actor helper;
    if (how == giver::other_thread)
      helper = rt.system().spawn(remote_giver);
    auto init = [=](caf::event_based_actor* self) {
      return consumer(self, how, framed_lines, out, helper);
    };
    if (where == place::scheduler)
      return rt.system().spawn(init);
    return rt.spawn_on_loop(init);
  };
}

// Sends the flood from a thread through `send` on descriptor `fd` and
// waits until every line (`framed_lines`) or byte has arrived.
void run_flood(int fd, const std::function<void(const std::string&)>& send,
               const std::shared_ptr<tally>& out, bool framed_lines) {
  auto data = flood();
  std::thread sender([&] { send(data); });
  auto arrived = [&] {
    return framed_lines ? out->frames.load() == lines
                        : out->bytes.load() == data.size();
  };
  // A stall is no progress for 20 s (the sanitizer builds are slow, and
  // slower still on a busy machine); the whole flood gets five minutes.
  auto all = false;
  auto seen = out->bytes.load();
  auto last_progress = std::chrono::steady_clock::now();
  auto deadline = last_progress + 300s;
  for (;;) {
    if (arrived()) {
      all = true;
      break;
    }
    auto now = std::chrono::steady_clock::now();
    if (auto b = out->bytes.load(); b != seen) {
      seen = b;
      last_progress = now;
    }
    if (now - last_progress > 20s || now > deadline)
      break;
    std::this_thread::sleep_for(10ms);
  }
  // Whatever happened, unblock the sender before joining it.
  if (!all) {
    // Where it stopped, from the top layer down.
    for (auto* st = out->state.load(); st != nullptr; st = st->below)
      WARN("stalled: unconsumed " << st->unconsumed.load() << " blocked "
           << st->credit_blocked.load() << " paused "
           << st->reading_paused.load() << " closing " << st->closing.load());
    ::shutdown(fd, SHUT_RDWR);
  }
  sender.join();
  INFO("lines " << out->frames.load() << " of " << lines << ", bytes "
                << out->bytes.load());
  CHECK(all);
  CHECK(out->wrong.load() == 0);
  // A line frame is the line without its delimiter.
  CHECK(out->bytes.load() == (framed_lines ? lines * (line_size - 1)
                                           : data.size()));
  // The runtime's read credit bounds what the protocol holds (a delivery
  // starts below it and is one line at most, or a read of the rest).
  CHECK(out->most_held.load() <= credit + line_size);
}

runtime_options small_credit() {
  runtime_options opts;
  opts.read_credit = credit;
  return opts;
}

} // namespace

SCENARIO("a framed protocol actor that gives its credit back late gets "
         "every line of a flood") {
  auto how = GENERATE(EVERY_GIVER);
  auto where = GENERATE(EVERY_PLACE);
  auto k = GENERATE(EVERY_KIND);
  INFO("credit given back " << name_of(how) << " over " << name_of(k)
       << (where == place::loop ? " on the loop" : " on the scheduler"));
  with_runtime(
    [how, where, k](runtime& rt) {
      auto out = std::make_shared<tally>();
      auto f = framed(line_framing{}, consumers(rt, how, true, out, where));
      REQUIRE(f);
      auto l = listen(rt, k, *f);
      auto p = connect_peer(k, l);
      run_flood(p.fd(), [&](const std::string& d) { p.send_all(d); }, out,
                true);
      p.close();
      REQUIRE(eventually([&] { return out->lost.load(); }));
    },
    nullptr, small_credit());
}

SCENARIO("a protocol actor on a plain stream that gives its credit back "
         "late gets every byte of a flood") {
  auto how = GENERATE(LATE_GIVERS);
  auto where = GENERATE(EVERY_PLACE);
  INFO("credit given back " << name_of(how)
       << (where == place::loop ? " on the loop" : " on the scheduler"));
  with_runtime(
    [how, where](runtime& rt) {
      auto out = std::make_shared<tally>();
      auto l = listen(rt, kind::tcp, consumers(rt, how, false, out, where));
      auto p = connect_peer(kind::tcp, l);
      run_flood(p.fd(), [&](const std::string& d) { p.send_all(d); }, out,
                false);
      p.close();
      REQUIRE(eventually([&] { return out->lost.load(); }));
    },
    nullptr, small_credit());
}

SCENARIO("a framed protocol actor above TLS that gives its credit back late "
         "gets every line of a flood") {
  auto how = GENERATE(LATE_GIVERS);
  auto where = GENERATE(EVERY_PLACE);
  INFO("credit given back " << name_of(how)
       << (where == place::loop ? " on the loop" : " on the scheduler"));
  with_runtime(
    [how, where](runtime& rt) {
      test_pki pki;
      tls_contexts ctx{pki};
      auto out = std::make_shared<tally>();
      auto f = framed(line_framing{}, consumers(rt, how, true, out, where));
      REQUIRE(f);
      server_options sopts;
      sopts.tls = ctx.server;
      auto srv = rt.create_server(*f, "127.0.0.1", 0, sopts);
      REQUIRE(srv);
      // The peer is a plain OpenSSL client on a blocking socket.
      auto p = connect_peer(kind::tcp, listening{*srv, {}, srv->port()});
      auto* cctx = SSL_CTX_new(TLS_client_method());
      REQUIRE(cctx != nullptr);
      SSL_CTX_set_verify(cctx, SSL_VERIFY_NONE, nullptr);
      {
        tls_peer tp{p.release(), cctx, false, "localhost"};
        REQUIRE(tp.handshake());
        run_flood(tp.fd(), [&](const std::string& d) { tp.write_all(d); },
                  out, true);
        tp.send_close_notify();
      }
      SSL_CTX_free(cctx);
      REQUIRE(eventually([&] { return out->lost.load(); }));
    },
    nullptr, small_credit());
}
