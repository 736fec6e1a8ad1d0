// Several loops (runtime_options::loops): each a thread of its own; a
// server spreads its connections over them; what an actor of a loop starts
// stays on that loop; a protocol on another loop than its transport, timers
// on every loop, and shutdown with connections on every loop all work.

#include <catch2/catch.hpp>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/socket.h>

#include <caf/event_based_actor.hpp>

#include "support/harness.hpp"
#include "tact/runtime/detail/cpus.hpp"
#include "tact/runtime/detail/loop_group.hpp"
#include "tact/runtime/detail/multiplexer.hpp"
#include "tact/runtime/detail/transport_core.hpp"
#include "tact/protocols/relay.hpp"

using namespace tact;
using namespace tact::test;

namespace {

runtime_options with_loops(size_t n) {
  runtime_options opts;
  opts.loops = n;
  return opts;
}

// Which loop ran each callback, by the loop's index in the runtime.
struct placement {
  std::mutex mtx;
  std::map<std::string, std::multiset<size_t>> seen;

  void note(runtime& rt, const std::string& what) {
    auto* cur = detail::multiplexer::current();
    size_t index = rt.loop_count(); // none of them
    for (size_t i = 0; i < rt.loop_count(); ++i)
      if (&rt.mux(i) == cur)
        index = i;
    std::lock_guard<std::mutex> guard{mtx};
    seen[what].insert(index);
  }

  size_t count(const std::string& what) {
    std::lock_guard<std::mutex> guard{mtx};
    return seen[what].size();
  }

  std::multiset<size_t> loops_of(const std::string& what) {
    std::lock_guard<std::mutex> guard{mtx};
    return seen[what];
  }
};

// Echoes, and notes where each of its callbacks ran; with `tick`, also a
// timer's.
class placed_echo : public protocol {
public:
  // `t`: the transport, for a protocol that comes by set_protocol (and so
  // has no connection_made).
  placed_echo(runtime& rt, std::shared_ptr<placement> where, bool tick = false,
              transport t = {})
    : rt_(rt), where_(std::move(where)), tick_(tick), t_(std::move(t)) {
  }

  void connection_made(transport& t) override {
    t_ = t;
    where_->note(rt_, "made");
    if (tick_)
      call_later(std::chrono::milliseconds{1},
                 [this] { where_->note(rt_, "timer"); });
  }

  void data_received(bytes data) override {
    where_->note(rt_, "data");
    t_.write(std::move(data));
  }

  void connection_lost(const caf::error&) override {
    where_->note(rt_, "lost");
  }

private:
  runtime& rt_;
  std::shared_ptr<placement> where_;
  bool tick_;
  transport t_;
};

// Connects to 127.0.0.1:`port` from an actor of loop `index`; the
// transport, or the error.
caf::expected<transport> connect_from(runtime& rt, size_t index,
                                      protocol_factory f, uint16_t port) {
  auto got = std::make_shared<std::promise<caf::expected<transport>>>();
  auto fut = got->get_future();
  rt.spawn_on_loop(index, [&rt, f, port, got](caf::event_based_actor* self) {
    // The answer runs on this actor's loop, but not as this actor: it
    // tells the actor to end by a message.
    rt.connect(f, "127.0.0.1", port, {},
               [got, me = caf::actor{self}](caf::expected<transport> t) {
                 got->set_value(std::move(t));
                 caf::anon_send(me, 0);
               });
    return caf::behavior{[self](int) { self->quit(); }};
  });
  if (fut.wait_for(10s) != std::future_status::ready)
    return make_error(errc::timed_out, "connect_from");
  return fut.get();
}

// The loop of the transport `t`, by index.
size_t loop_of(runtime& rt, const transport& t) {
  for (size_t i = 0; i < rt.loop_count(); ++i)
    if (&t.state()->core->mux() == &rt.mux(i))
      return i;
  return rt.loop_count();
}

// The names of this process's threads.
std::multiset<std::string> thread_names() {
  std::multiset<std::string> names;
  auto* dir = ::opendir("/proc/self/task");
  if (dir == nullptr)
    return names;
  while (auto* entry = ::readdir(dir)) {
    std::string tid = entry->d_name;
    if (tid == "." || tid == "..")
      continue;
    std::ifstream in{"/proc/self/task/" + tid + "/comm"};
    std::string name;
    std::getline(in, name);
    names.insert(name);
  }
  ::closedir(dir);
  return names;
}

} // namespace

SCENARIO("a runtime runs as many loops as asked, each a thread of its own") {
  with_runtime(
    [](runtime& rt) {
      REQUIRE(rt.loop_count() == 3);
      CHECK(thread_names().count("tact-loop") == 3);
      CHECK(&rt.mux(0) != &rt.mux(1));
      CHECK(&rt.mux() == &rt.mux(0));
    },
    nullptr, with_loops(3));
  with_runtime(
    [](runtime& rt) { CHECK(rt.loop_count() == detail::available_cpus()); },
    nullptr, with_loops(0));
}

SCENARIO("without the option, TACT_LOOPS says how many loops run") {
  auto* before = std::getenv("TACT_LOOPS");
  std::string saved = before != nullptr ? before : "";
  ::setenv("TACT_LOOPS", "2", 1);
  with_runtime([](runtime& rt) { CHECK(rt.loop_count() == 2); });
  ::setenv("TACT_LOOPS", "not a number", 1);
  with_runtime([](runtime& rt) { CHECK(rt.loop_count() == 1); });
  // The option wins over the environment.
  ::setenv("TACT_LOOPS", "2", 1);
  with_runtime([](runtime& rt) { CHECK(rt.loop_count() == 1); }, nullptr,
               with_loops(1));
  if (before != nullptr)
    ::setenv("TACT_LOOPS", saved.c_str(), 1);
  else
    ::unsetenv("TACT_LOOPS");
}

SCENARIO("spawn_on_loop puts an actor on the loop asked for") {
  with_runtime(
    [](runtime& rt) {
      for (size_t i = 0; i < 2; ++i) {
        std::promise<bool> on_it;
        auto a = rt.spawn_on_loop(i, [&](caf::event_based_actor* self)
                                       -> caf::behavior {
          return {[&, self](int) {
            on_it.set_value(rt.mux(i).on_loop_thread());
            self->quit();
          }};
        });
        caf::anon_send(a, 1);
        auto fut = on_it.get_future();
        REQUIRE(fut.wait_for(5s) == std::future_status::ready);
        CHECK(fut.get());
      }
      CHECK_THROWS_AS(rt.spawn_on_loop(2, [](caf::event_based_actor*) {
        return caf::behavior{};
      }),
                      std::out_of_range);
    },
    nullptr, with_loops(2));
}

SCENARIO("a server spreads its connections over every loop") {
  for (auto k : {kind::tcp, kind::unix_socket, kind::tls}) {
    DYNAMIC_SECTION(name_of(k)) {
      with_runtime(
        [k](runtime& rt) {
          auto where = std::make_shared<placement>();
          auto l = listen(rt, k, [&rt, where] {
            return std::make_unique<placed_echo>(rt, where, true);
          });
          std::vector<peer> peers;
          for (int i = 0; i < 16; ++i) {
            peers.push_back(connect_peer(k, l));
            auto msg = "hello " + std::to_string(i);
            peers.back().send_all(msg);
            REQUIRE(peers.back().recv_n(msg.size()) == msg);
          }
          REQUIRE(eventually([&] { return where->count("timer") == 16; }));
          auto made = where->loops_of("made");
          // Least loaded first: an even split.
          CHECK(made.count(0) == 8);
          CHECK(made.count(1) == 8);
          // Each connection's callbacks and timers ran on its own loop.
          CHECK(where->loops_of("data") == made);
          CHECK(where->loops_of("timer") == made);
          CHECK(l.srv.active_connections() == 16);
          peers.clear();
          REQUIRE(eventually([&] { return where->count("lost") == 16; }));
          CHECK(where->loops_of("lost") == made);
          REQUIRE(eventually([&] { return l.srv.active_connections() == 0; }));
          l.srv.close();
        },
        nullptr, with_loops(2));
    }
  }
}

SCENARIO("a server that does not spread keeps its connections on its loop") {
  with_runtime(
    [](runtime& rt) {
      auto where = std::make_shared<placement>();
      server_options opts;
      opts.spread = false;
      auto srv = rt.create_server(
        [&rt, where] { return std::make_unique<placed_echo>(rt, where); },
        "127.0.0.1", 0, opts);
      REQUIRE(srv);
      std::vector<peer> peers;
      for (int i = 0; i < 6; ++i) {
        peers.push_back(
          connect_peer(kind::tcp, listening{*srv, {}, srv->port()}));
        peers.back().send_all("x");
        REQUIRE(peers.back().recv_n(1) == "x");
      }
      auto made = where->loops_of("made");
      REQUIRE(made.size() == 6);
      CHECK(made.count(*made.begin()) == 6);
      srv->close();
    },
    nullptr, with_loops(2));
}

SCENARIO("what an actor of a loop connects lives on that loop") {
  with_runtime(
    [](runtime& rt) {
      auto where = std::make_shared<placement>();
      auto l = listen(rt, kind::tcp, [] {
        return std::make_unique<protocol>();
      });
      for (size_t i = 0; i < 2; ++i) {
        auto t = connect_from(
          rt, i, [&rt, where] { return std::make_unique<placed_echo>(rt, where); },
          l.port);
        REQUIRE(t);
        CHECK(loop_of(rt, *t) == i);
        t->close();
      }
      auto made = where->loops_of("made");
      CHECK(made == std::multiset<size_t>{0, 1});
      l.srv.close();
    },
    nullptr, with_loops(2));
}

SCENARIO("a protocol on another loop than its transport gets everything") {
  with_runtime(
    [](runtime& rt) {
      auto j = std::make_shared<journal>();
      server_options opts;
      opts.spread = false;
      auto srv = rt.create_server(recording(j), "127.0.0.1", 0, opts);
      REQUIRE(srv);
      auto p = connect_peer(kind::tcp, listening{*srv, {}, srv->port()});
      REQUIRE(j->wait_for("connection_made"));
      auto t = j->handle();
      // The transport's loop, and a new protocol on the other one.
      auto where = std::make_shared<placement>();
      size_t other = loop_of(rt, t) == 0 ? 1 : 0;
      auto next = protocol_factory{[&rt, where, t] {
        return std::make_unique<placed_echo>(rt, where, false, t);
      }}(rt.mux(other));
      t.set_protocol(next);
      p.send_all("across loops");
      CHECK(p.recv_n(12) == "across loops");
      auto bulk = big(1 << 20);
      std::thread writer{[&] { p.send_all(bulk); }};
      auto back = p.recv_n(bulk.size(), 20s);
      writer.join();
      CHECK(back == bulk);
      p.close();
      REQUIRE(eventually([&] { return where->count("lost") == 1; }));
      CHECK(where->loops_of("data").count(other) == where->count("data"));
      srv->close();
    },
    nullptr, with_loops(2));
}

SCENARIO("shutdown ends the connections and servers of every loop") {
  std::vector<std::string> warnings;
  auto where = std::make_shared<placement>();
  with_runtime(
    [&](runtime& rt) {
      std::vector<peer> peers;
      auto l = listen(rt, kind::tcp, [&rt, where] {
        return std::make_unique<placed_echo>(rt, where);
      });
      for (int i = 0; i < 8; ++i) {
        peers.push_back(connect_peer(kind::tcp, l));
        peers.back().send_all("a");
        REQUIRE(peers.back().recv_n(1) == "a");
      }
      REQUIRE(where->loops_of("made").count(1) > 0);
      rt.shutdown(std::chrono::seconds{2});
      CHECK(where->count("lost") == 8);
      for (auto& p : peers) {
        bool eof = false;
        p.recv_all(&eof, 2s);
        CHECK(eof);
      }
    },
    &warnings, with_loops(2));
  CHECK(warnings.empty());
}

SCENARIO("a relay joins transports of two loops, its buffers bounded") {
  with_runtime(
    [](runtime& rt) {
      raw_listener la{kind::tcp};
      raw_listener lb{kind::tcp};
      auto quiet = [] { return std::make_unique<protocol>(); };
      auto a = connect_from(rt, 0, quiet, la.port);
      REQUIRE(a);
      peer pa{::accept4(la.fd, nullptr, nullptr, SOCK_CLOEXEC)};
      auto b = connect_from(rt, 1, quiet, lb.port);
      REQUIRE(b);
      peer pb{::accept4(lb.fd, nullptr, nullptr, SOCK_CLOEXEC)};
      REQUIRE(loop_of(rt, *a) == 0);
      REQUIRE(loop_of(rt, *b) == 1);
      REQUIRE_FALSE(relay(*a, *b));
      // 16 MiB each way; at first neither peer reads, so both directions
      // must hold back.
      const auto there = big(16 << 20);
      std::string back(there.rbegin(), there.rend());
      std::thread wa{[&] { pa.send_all(there); }};
      std::thread wb{[&] { pb.send_all(back); }};
      size_t most = 0;
      auto until = std::chrono::steady_clock::now() + 1s;
      while (std::chrono::steady_clock::now() < until) {
        most = std::max({most, a->get_write_buffer_size(),
                         b->get_write_buffer_size()});
        std::this_thread::sleep_for(1ms);
      }
      // Held back: neither side reads on while the other's buffer is full.
      CHECK_FALSE(a->is_reading());
      CHECK_FALSE(b->is_reading());
      std::string got_b;
      std::string got_a;
      std::atomic<int> readers{2};
      std::thread rb{[&] {
        got_b = pb.recv_n(there.size(), 60s);
        --readers;
      }};
      std::thread ra{[&] {
        got_a = pa.recv_n(back.size(), 60s);
        --readers;
      }};
      // The buffers stay bounded while both directions drain.
      while (readers.load() > 0) {
        most = std::max({most, a->get_write_buffer_size(),
                         b->get_write_buffer_size()});
        std::this_thread::sleep_for(1ms);
      }
      ra.join();
      rb.join();
      wa.join();
      wb.join();
      CHECK(got_b == there);
      CHECK(got_a == back);
      // A watermark, and what one read adds past it (one more under the
      // sanitizers, as in the relay's own tests).
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
      constexpr size_t reads = 2;
#else
      constexpr size_t reads = 1;
#endif
      INFO("most buffered " << most);
      CHECK(most <= 64 * 1024 + reads * 256 * 1024);
      // EOF passes across too; once both peers have ended, so has the relay.
      pa.shutdown_write();
      bool eof = false;
      pb.recv_all(&eof, 5s);
      CHECK(eof);
      pb.close();
      pa.close();
      CHECK(eventually([&] { return a->is_closing() && b->is_closing(); }));
    },
    nullptr, with_loops(2));
}

namespace {

// Takes its time in connection_made, then says it ran.
template <class Base>
class slow_made : public Base {
public:
  explicit slow_made(std::shared_ptr<std::atomic<bool>> ran)
    : ran_(std::move(ran)) {
  }

  void connection_made(transport&) override {
    std::this_thread::sleep_for(100ms);
    *ran_ = true;
  }

private:
  std::shared_ptr<std::atomic<bool>> ran_;
};

} // namespace

SCENARIO("blocking loop operations return once connection_made has run, "
         "as asyncio's") {
  auto loops = GENERATE(1u, 2u);
  with_runtime(
    [](runtime& rt) {
      auto made = [](std::shared_ptr<std::atomic<bool>> ran) {
        return protocol_factory{
          [ran] { return std::make_unique<slow_made<protocol>>(ran); }};
      };
      auto ran = std::make_shared<std::atomic<bool>>(false);
      auto child = rt.subprocess_exec(
        [ran] { return std::make_unique<slow_made<subprocess_protocol>>(ran); },
        {"true"});
      REQUIRE(child);
      CHECK(ran->load());
      for (int end = 0; end < 2; ++end) {
        int fds[2];
        REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
        ran->store(false);
        auto t = end == 0 ? rt.connect_read_pipe(made(ran), fds[0])
                          : rt.connect_write_pipe(made(ran), fds[1]);
        REQUIRE(t);
        CHECK(ran->load());
        ::close(fds[1 - end]);
        t->close();
      }
      ran->store(false);
      auto l = listen(rt, kind::tcp, [] { return std::make_unique<protocol>(); });
      auto c = rt.create_connection(made(ran), "127.0.0.1", l.port);
      REQUIRE(c);
      CHECK(ran->load());
      c->close();
      l.srv.close();
    },
    nullptr, with_loops(loops));
}
