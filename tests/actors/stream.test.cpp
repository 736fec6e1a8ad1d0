// Coroutine protocols: a connection as a tact::stream, read and written
// with co_await, on TCP, Unix sockets, TLS over TCP, and pipes. The peer is
// a blocking socket (an OpenSSL endpoint on TLS) or the pipe's other end.

#include <catch2/catch.hpp>

#include <atomic>
#include <future>
#include <thread>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <caf/event_based_actor.hpp>
#include <caf/scoped_actor.hpp>

#include "support/harness.hpp"
#include "tact/actors/stream.hpp"
#include "tact/protocols/echo.hpp"

using namespace tact;
using namespace tact::test;

namespace {

// A read's outcome as text: ok[bytes] (line ends escaped) or the error's
// name.
std::string show(const caf::expected<bytes>& r) {
  if (!r)
    return std::string{to_string(code_of(r.error()))};
  std::string out = "ok[";
  for (char c : *r) {
    if (c == '\n')
      out += "\\n";
    else if (c == '\r')
      out += "\\r";
    else
      out += c;
  }
  return out + "]";
}

std::string show(const caf::error& err) {
  return err ? std::string{to_string(code_of(err))} : "ok";
}

kind socket_kind() {
  return GENERATE(kind::tcp, kind::unix_socket, kind::tls);
}

// Counts the frames destroyed before they ended.
struct frame_guard {
  std::atomic<int>* destroyed;
  bool ended = false;
  ~frame_guard() {
    if (!ended)
      ++*destroyed;
  }
};

// The script of the split test, and what it writes back.
const std::string script_input = "hello\nab\r\ncdefghijkl";
const std::string script_output
  = "line=ok[hello\\n];until=ok[ab\\r\\n];exactly=ok[cdefg];rest=hijkl;";

task<> script(stream s) {
  std::string out;
  out += "line=" + show(co_await s.read_line()) + ";";
  out += "until=" + show(co_await s.read_until("\r\n")) + ";";
  out += "exactly=" + show(co_await s.read_exactly(5)) + ";";
  std::string rest;
  while (rest.size() < 5) {
    auto r = co_await s.read(3);
    if (!r || r->empty() || r->size() > 3) {
      out += "bad read " + show(r);
      break;
    }
    rest += to_string(*r);
  }
  out += "rest=" + rest + ";";
  co_await s.write(out);
}

} // namespace

SCENARIO("stream reads give the same bytes however the input is split") {
  auto k = socket_kind();
  INFO("transport: " << name_of(k));
  with_runtime([&](runtime& rt) {
    auto l = listen(rt, k, script);
    for (size_t i = 0; i <= script_input.size(); ++i) {
      INFO("split at " << i);
      auto p = connect_peer(k, l);
      p.send_all(script_input.substr(0, i));
      if (i > 0 && i < script_input.size())
        std::this_thread::sleep_for(2ms);
      if (i < script_input.size())
        p.send_all(script_input.substr(i));
      bool eof = false;
      // The coroutine returns after writing: the connection closes.
      CHECK(p.recv_all(&eof) == script_output);
      CHECK(eof);
    }
    // And one byte at a time.
    auto p = connect_peer(k, l);
    for (char c : script_input) {
      p.send_all(std::string(1, c));
      std::this_thread::sleep_for(1ms);
    }
    CHECK(p.recv_all() == script_output);
  });
}

SCENARIO("the stream ends in the middle of a line") {
  auto k = socket_kind();
  INFO("transport: " << name_of(k));
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    SECTION("read_line gives the partial line, then empty, and at_eof") {
      auto l = listen(rt, k, [j](stream s) -> task<> {
        j->add("1:" + show(co_await s.read_line()));
        j->add("2:" + show(co_await s.read_line()));
        j->add(s.at_eof() ? "at_eof" : "not at_eof");
      });
      auto p = connect_peer(k, l);
      p.send_all("one\nabc");
      p.shutdown_write();
      REQUIRE(j->wait_for("at_eof"));
      // The first line, then what is left, then the end.
      auto ev = j->events();
      CHECK(ev == std::vector<std::string>{"1:ok[one\\n]", "2:ok[abc]",
                                           "at_eof"});
    }
    SECTION("read_until and read_exactly end short, and leave the bytes") {
      auto l = listen(rt, k, [j](stream s) -> task<> {
        j->add("until:" + show(co_await s.read_until(";")));
        j->add("exactly:" + show(co_await s.read_exactly(5)));
        j->add("read:" + show(co_await s.read(10)));
        j->add("read:" + show(co_await s.read(10)));
        j->add("done");
      });
      auto p = connect_peer(k, l);
      p.send_all("abc");
      p.shutdown_write();
      REQUIRE(j->wait_for("done"));
      CHECK(j->events()
            == std::vector<std::string>{"until:incomplete_frame",
                                        "exactly:incomplete_frame",
                                        "read:ok[abc]", "read:ok[]", "done"});
    }
  });
}

SCENARIO("a frame over the limit is frame_too_large") {
  auto k = socket_kind();
  INFO("transport: " << name_of(k));
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    auto l = listen(rt, k, [j](stream s) -> task<> {
      s.set_limit(4);
      j->add("limit:" + std::to_string(s.limit()));
      // read_until leaves the bytes; read_line drops the long line.
      j->add("until:" + show(co_await s.read_until(";")));
      j->add("exactly:" + show(co_await s.read_exactly(9)));
      j->add("line:" + show(co_await s.read_line()));
      j->add("line:" + show(co_await s.read_line()));
      j->add("done");
    });
    auto p = connect_peer(k, l);
    p.send_all("abcdefgh;");
    REQUIRE(j->wait_for("exactly:ok[abcdefgh;]"));
    p.send_all("0123456789\nok\n");
    REQUIRE(j->wait_for("done"));
    CHECK(j->events()
          == std::vector<std::string>{"limit:4", "until:frame_too_large",
                                      "exactly:ok[abcdefgh;]",
                                      "line:frame_too_large", "line:ok[ok\\n]",
                                      "done"});
  });
}

SCENARIO("a limit above the read credit is lowered to it") {
  auto j = std::make_shared<journal>();
  runtime_options opts;
  opts.read_credit = 1024;
  with_runtime(
    [&](runtime& rt) {
      auto l = listen(rt, kind::tcp, [j](stream s) -> task<> {
        s.set_limit(1 << 20);
        j->add("limit:" + std::to_string(s.limit()));
        // A line longer than the credit cannot stall the connection.
        j->add("line:" + show(co_await s.read_line()));
        j->add("done");
      });
      auto p = connect_peer(kind::tcp, l);
      p.send_all(std::string(4096, 'x'));
      REQUIRE(j->wait_for("done"));
      CHECK(j->events()
            == std::vector<std::string>{"limit:1024", "line:frame_too_large",
                                        "done"});
    },
    nullptr, opts);
}

SCENARIO("read_exactly gathers more than the read credit") {
  auto k = socket_kind();
  INFO("transport: " << name_of(k));
  auto j = std::make_shared<journal>();
  runtime_options opts;
  opts.read_credit = 8 * 1024;
  with_runtime(
    [&](runtime& rt) {
      auto l = listen(rt, k, [j](stream s) -> task<> {
        auto r = co_await s.read_exactly(1 << 20);
        j->add(r && to_string(*r) == big(1 << 20) ? "same" : "different");
      });
      auto p = connect_peer(k, l);
      p.send_all(big(1 << 20));
      REQUIRE(j->wait_for("same", 1, 20s));
    },
    nullptr, opts);
}

SCENARIO("a write waits while the transport is paused") {
  auto k = socket_kind();
  INFO("transport: " << name_of(k));
  constexpr size_t chunk = 64 * 1024;
  constexpr size_t total = 64 * chunk * 8; // 32 MiB
  auto written = std::make_shared<std::atomic<size_t>>(0);
  auto most_buffered = std::make_shared<std::atomic<size_t>>(0);
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    auto l = listen(rt, k, [=](stream s) -> task<> {
      auto data = big(total);
      for (size_t at = 0; at < total; at += chunk) {
        if (auto err = co_await s.write(data.substr(at, chunk))) {
          j->add("write:" + show(err));
          co_return;
        }
        *written += chunk;
        auto now = s.get_transport().get_write_buffer_size();
        if (now > *most_buffered)
          *most_buffered = now;
      }
      j->add("written");
    });
    auto p = connect_peer(k, l);
    // Not reading: the coroutine must stop well before 32 MiB.
    REQUIRE(eventually([&] { return *written > 0; }));
    std::this_thread::sleep_for(300ms);
    auto before = written->load();
    std::this_thread::sleep_for(200ms);
    CHECK(written->load() == before);
    CHECK(before < total / 2);
    auto got = p.recv_n(total, 30s);
    CHECK(got.size() == total);
    CHECK(got == big(total));
    REQUIRE(j->wait_for("written"));
    // The buffer never held more than the high watermark and the write
    // that crossed it (the default high watermark is 64 KiB); over TLS,
    // the layer's and the socket's buffers together, each bounded so.
    INFO("most buffered: " << most_buffered->load());
    CHECK(most_buffered->load()
          <= (k == kind::tls ? 1024 * 1024 : 64 * 1024 + 2 * chunk));
  });
}

SCENARIO("connection_lost ends every stream operation, after the bytes before it") {
  // A peer's reset (a Unix socket has none: its close is an EOF).
  auto k = GENERATE(kind::tcp, kind::tls);
  INFO("transport: " << name_of(k));
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    auto reset_after = [&](auto body, const std::string& first) {
      auto l = listen(rt, k, body);
      auto p = connect_peer(k, l);
      if (!first.empty())
        p.send_all(first);
      REQUIRE(j->wait_for("waiting"));
      std::this_thread::sleep_for(20ms);
      p.reset();
      REQUIRE(j->wait_for("done"));
    };
    SECTION("read") {
      reset_after([j](stream s) -> task<> {
        j->add("waiting");
        j->add("read:" + show(co_await s.read()));
        j->add("done");
      }, "");
      CHECK(j->events()[1] == "read:connection_reset");
    }
    SECTION("read_exactly, then the bytes that came") {
      reset_after([j](stream s) -> task<> {
        j->add("waiting");
        j->add("exactly:" + show(co_await s.read_exactly(10)));
        j->add("read:" + show(co_await s.read(10)));
        j->add("read:" + show(co_await s.read(10)));
        j->add("done");
      }, "ab");
      CHECK(j->events()
            == std::vector<std::string>{"waiting", "exactly:connection_reset",
                                        "read:ok[ab]",
                                        "read:connection_reset", "done"});
    }
    SECTION("read_line gives the partial line first") {
      reset_after([j](stream s) -> task<> {
        j->add("waiting");
        j->add("line:" + show(co_await s.read_line()));
        j->add("line:" + show(co_await s.read_line()));
        j->add("done");
      }, "ab");
      CHECK(j->events()
            == std::vector<std::string>{"waiting", "line:ok[ab]",
                                        "line:connection_reset", "done"});
    }
    SECTION("read_until") {
      reset_after([j](stream s) -> task<> {
        j->add("waiting");
        j->add("until:" + show(co_await s.read_until(";")));
        j->add("read:" + show(co_await s.read(10)));
        j->add("done");
      }, "ab");
      CHECK(j->events()
            == std::vector<std::string>{"waiting", "until:connection_reset",
                                        "read:ok[ab]", "done"});
    }
    SECTION("bytes that came before the reset are read after it") {
      reset_after([j](stream s) -> task<> {
        j->add("waiting");
        co_await s.wait_closed();
        j->add("read:" + show(co_await s.read(10)));
        j->add("read:" + show(co_await s.read(10)));
        j->add("done");
      }, "ab");
      CHECK(j->events()
            == std::vector<std::string>{"waiting", "read:ok[ab]",
                                        "read:connection_reset", "done"});
    }
    SECTION("drain") {
      reset_after([j](stream s) -> task<> {
        auto data = to_bytes(big(1 << 20));
        s.write(data);
        j->add("waiting");
        for (;;) {
          if (auto err = co_await s.write(data)) {
            j->add("write:" + show(err));
            break;
          }
        }
        j->add("drain:" + show(co_await s.drain()));
        j->add("done");
      }, "");
      auto ev = j->events();
      REQUIRE(ev.size() == 4);
      // Lost while paused: the error of the reset, or of the write that
      // found the peer gone (a broken pipe).
      CHECK((ev[1] == "write:connection_reset" || ev[1] == "write:broken_pipe"));
      CHECK(ev[2] == "drain:" + ev[1].substr(6));
    }
    SECTION("wait_closed") {
      reset_after([j](stream s) -> task<> {
        j->add("waiting");
        j->add("closed:" + show(co_await s.wait_closed()));
        j->add("done");
      }, "");
      CHECK(j->events()[1] == "closed:connection_reset");
    }
    SECTION("a sleep goes on after the loss, and so does a request") {
      auto doubler = rt.system().spawn([]() -> caf::behavior {
        return {[](int x) { return 2 * x; }};
      });
      reset_after([j, doubler](stream s) -> task<> {
        j->add("waiting");
        co_await s.wait_closed();
        j->add("sleep:" + show(co_await sleep_for(20ms)));
        auto answer = co_await request(doubler, caf::make_message(21));
        j->add(answer && answer->match_elements<int>()
                 ? "answer:" + std::to_string(answer->get_as<int>(0))
                 : "no answer");
        j->add("done");
      }, "");
      CHECK(j->events()
            == std::vector<std::string>{"waiting", "sleep:ok", "answer:42",
                                        "done"});
      caf::anon_send_exit(doubler, caf::exit_reason::user_shutdown);
    }
  });
}

SCENARIO("wait_for ends an operation with timed_out, taking nothing") {
  auto k = socket_kind();
  INFO("transport: " << name_of(k));
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    auto silent = rt.system().spawn([]() -> caf::behavior {
      return {[](int) -> caf::result<int> { return caf::delegated<int>{}; }};
    });
    auto l = listen(rt, k, [j, silent](stream s) -> task<> {
      j->add("line:" + show(co_await wait_for(s.read_line(), 30ms)));
      j->add("waiting");
      j->add("exactly:" + show(co_await wait_for(s.read_exactly(4), 50ms)));
      j->add("exactly:" + show(co_await s.read_exactly(4)));
      auto answer = co_await wait_for(request(silent, caf::make_message(1)),
                                      30ms);
      j->add(answer ? "answer" : "request:" + show(answer.error()));
      j->add("sleep:" + show(co_await wait_for(sleep_for(10s), 30ms)));
      auto start = std::chrono::steady_clock::now();
      auto slept = co_await sleep_for(30ms);
      auto took = std::chrono::steady_clock::now() - start;
      j->add("sleep:" + show(slept) + (took >= 30ms ? " long enough" : " short"));
      j->add("done");
    });
    auto p = connect_peer(k, l);
    REQUIRE(j->wait_for("waiting"));
    p.send_all("ab");
    REQUIRE(j->wait_for("exactly:timed_out"));
    p.send_all("cd");
    REQUIRE(j->wait_for("done"));
    CHECK(j->events()
          == std::vector<std::string>{"line:timed_out", "waiting",
                                      "exactly:timed_out", "exactly:ok[abcd]",
                                      "request:timed_out", "sleep:timed_out",
                                      "sleep:ok long enough", "done"});
    caf::anon_send_exit(silent, caf::exit_reason::user_shutdown);
  });
}

SCENARIO("a coroutine that returns closes its connection; one that throws aborts it") {
  auto k = socket_kind();
  INFO("transport: " << name_of(k));
  // Warnings into a journal: read while the loop may still add to it.
  auto warned = std::make_shared<journal>();
  runtime_options opts;
  opts.on_warning = [warned](const std::string& text) {
    warned->add("warning", text);
  };
  with_runtime(
    [&](runtime& rt) {
      SECTION("returns") {
        auto l = listen(rt, k, [](stream s) -> task<> {
          co_await s.write("bye");
        });
        auto p = connect_peer(k, l);
        bool eof = false;
        CHECK(p.recv_all(&eof) == "bye");
        CHECK(eof);
      }
      SECTION("throws") {
        auto l = listen(rt, k, [](stream s) -> task<> {
          co_await s.read_line();
          throw std::runtime_error("no more");
        });
        auto p = connect_peer(k, l);
        p.send_all("x\n");
        // Aborted: a reset on TCP, the end of the stream on Unix sockets.
        CHECK(p.readable_within(5s));
        CHECK(p.recv_all().empty());
        REQUIRE(warned->wait_for("warning"));
        CHECK(warned->data().find("no more") != std::string::npos);
      }
    },
    nullptr, opts);
}

SCENARIO("stopping the runtime destroys waiting coroutines") {
  // Coroutines that wait on a stream see its loss (the runtime closes every
  // connection); coroutines that go on after it (here a long sleep) are
  // destroyed, with the destructors of their locals.
  auto destroyed = std::make_shared<std::atomic<int>>(0);
  auto started = std::make_shared<std::atomic<int>>(0);
  auto fds_before = fd_count();
  std::vector<std::string> warnings;
  auto mtx = std::make_shared<std::mutex>();
  std::vector<peer> peers;
  {
    runtime_options opts;
    opts.on_warning = [&warnings, mtx](const std::string& text) {
      std::lock_guard<std::mutex> guard{*mtx};
      warnings.push_back(text);
    };
    runtime rt{opts};
    auto l = listen(rt, kind::tcp, [=](stream s) -> task<> {
      frame_guard guard{destroyed.get()};
      ++*started;
      co_await s.read_line();
      co_await sleep_for(std::chrono::hours{1});
      guard.ended = true;
    });
    for (int i = 0; i < 6; ++i)
      peers.push_back(connect_peer(kind::tcp, l));
    REQUIRE(eventually([&] { return *started == 6; }));
  }
  CHECK(*destroyed == 6);
  // None kept the loop from stopping.
  CHECK(warnings.empty());
  peers.clear();
  CHECK(eventually([&] { return fd_count() == fds_before; }));
}

SCENARIO("a coroutine reads a pipe to its end and goes on after it") {
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    auto t = rt.connect_read_pipe(
      [j](stream s) -> task<> {
        for (;;) {
          auto line = co_await s.read_line();
          j->add("line:" + show(line));
          if (!line || line->empty())
            break;
        }
        // The pipe's transport is gone at its EOF; the coroutine is not.
        j->add("sleep:" + show(co_await sleep_for(10ms)));
        j->add("done");
      },
      fds[0]);
    REQUIRE(t);
    std::string text = "a\nbb\nccc";
    for (char c : text) {
      REQUIRE(::write(fds[1], &c, 1) == 1);
      std::this_thread::sleep_for(1ms);
    }
    ::close(fds[1]);
    REQUIRE(j->wait_for("done"));
    CHECK(j->events()
          == std::vector<std::string>{"line:ok[a\\n]", "line:ok[bb\\n]",
                                      "line:ok[ccc]", "line:ok[]", "sleep:ok",
                                      "done"});
  });
}

SCENARIO("a coroutine writes a pipe, waiting while it is full") {
  auto j = std::make_shared<journal>();
  constexpr size_t total = 4 << 20;
  with_runtime([&](runtime& rt) {
    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    auto t = rt.connect_write_pipe(
      [j](stream s) -> task<> {
        auto data = big(total);
        for (size_t at = 0; at < total; at += 8192)
          if (auto err = co_await s.write(data.substr(at, 8192))) {
            j->add("write:" + show(err));
            co_return;
          }
        j->add(s.get_transport().get_write_buffer_size() <= 64 * 1024 + 8192
                 ? "bounded"
                 : "unbounded");
        // Returning closes the pipe once it has drained.
      },
      fds[1]);
    REQUIRE(t);
    std::string got;
    char buf[65536];
    for (;;) {
      pollfd p{fds[0], POLLIN, 0};
      REQUIRE(::poll(&p, 1, 10000) == 1);
      auto n = ::read(fds[0], buf, sizeof(buf));
      if (n <= 0)
        break;
      got.append(buf, static_cast<size_t>(n));
    }
    ::close(fds[0]);
    CHECK(got.size() == total);
    CHECK(got == big(total));
    REQUIRE(j->wait_for("bounded"));
  });
}

SCENARIO("a coroutine awaits an actor's answer") {
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    auto doubler = rt.system().spawn([]() -> caf::behavior {
      return {[](int x) -> caf::result<int> {
        if (x < 0)
          return make_error(errc::invalid_argument, "negative");
        return 2 * x;
      }};
    });
    auto l = listen(rt, kind::tcp, [j, doubler](stream s) -> task<> {
      auto answer = co_await request(doubler, caf::make_message(21));
      j->add(answer && answer->match_elements<int>()
               ? "answer:" + std::to_string(answer->get_as<int>(0))
               : "no answer");
      auto wrong = co_await request(doubler, caf::make_message(-1));
      j->add(wrong ? "answered" : "error:" + show(wrong.error()));
      auto nobody = co_await request(caf::actor{}, caf::make_message(1));
      j->add(nobody ? "answered" : "nobody:" + show(nobody.error()));
      co_await s.write("done");
    });
    auto p = connect_peer(kind::tcp, l);
    CHECK(p.recv_all() == "done");
    CHECK(j->events()
          == std::vector<std::string>{"answer:42", "error:invalid_argument",
                                      "nobody:invalid_argument"});
    caf::anon_send_exit(doubler, caf::exit_reason::user_shutdown);
  });
}

SCENARIO("awaiting outside a coroutine protocol is not_supported") {
  auto t = []() -> task<std::string> {
    co_return show(co_await sleep_for(1ms));
  }();
  t.handle().resume();
  REQUIRE(t.done());
  CHECK(std::move(t).operator co_await().await_resume() == "not_supported");
}

SCENARIO("a coroutine starts a child, reads its output and waits for its exit") {
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    auto l = listen(rt, kind::tcp, [&rt, j](stream s) -> task<> {
      auto child = co_await rt.create_subprocess_shell(
        "printf 'one\\ntwo'; echo oops >&2; head -c 3000000 /dev/zero; exit 3");
      if (!child) {
        j->add("start:" + show(child.error()));
        co_return;
      }
      j->add("line:" + show(co_await child->out().read_line()));
      j->add("line:" + show(co_await child->out().read_until(std::string(1, '\0'))));
      // 3 MB, more than the read credit: read as it comes.
      size_t zeros = 1;
      for (;;) {
        auto chunk = co_await child->out().read();
        if (!chunk || chunk->empty())
          break;
        zeros += chunk->size();
      }
      j->add("zeros:" + std::to_string(zeros));
      j->add("err:" + show(co_await child->err().read_line()));
      j->add("wait:" + show(co_await child->wait()));
      j->add("code:" + std::to_string(child->returncode().value_or(-1000)));
      // (A braced list inside a co_await trips GCC 12: name the vector.)
      std::vector<std::string> argv{"/nonexistent/x"};
      auto missing = co_await rt.create_subprocess_exec(argv);
      j->add(missing ? "started" : "missing:" + show(missing.error()));
      co_await s.write("done");
    });
    auto p = connect_peer(kind::tcp, l);
    CHECK(p.recv_all(nullptr, 20s) == "done");
    CHECK(j->events()
          == std::vector<std::string>{"line:ok[one\\n]", "line:ok[two" + std::string(1, '\0') + "]",
                                      "zeros:3000000", "err:ok[oops\\n]",
                                      "wait:ok", "code:3",
                                      "missing:no_such_file"});
  });
}

SCENARIO("starting a child outside a coroutine protocol is not_supported") {
  with_runtime([&](runtime& rt) {
    // The runtime is a parameter: a coroutine lambda's captures live in
    // the closure, which this statement would destroy.
    auto t = [](runtime& r) -> task<std::string> {
      std::vector<std::string> argv{"true"};
      auto child = co_await r.create_subprocess_exec(argv);
      co_return child ? std::string{"started"} : show(child.error());
    }(rt);
    t.handle().resume();
    REQUIRE(t.done());
    CHECK(std::move(t).operator co_await().await_resume() == "not_supported");
  });
}

SCENARIO("a coroutine answers other actors' messages between its steps") {
  auto j = std::make_shared<journal>();
  auto me = std::make_shared<std::promise<caf::actor>>();
  with_runtime([&](runtime& rt) {
    auto l = listen(rt, kind::tcp, [j, me](stream s) -> task<> {
      int asked = 0;
      s.on_message([&](caf::message& msg) {
        ++asked;
        if (msg.match_elements<int>())
          return caf::make_message(msg.get_as<int>(0) + 1);
        return caf::message{};
      });
      me->set_value(s.self());
      co_await s.read_line();
      j->add("asked:" + std::to_string(asked));
    });
    auto p = connect_peer(kind::tcp, l);
    auto proto = me->get_future().get();
    caf::scoped_actor self{rt.system()};
    int answer = 0;
    self->request(proto, caf::infinite, 41)
      .receive([&](int x) { answer = x; }, [&](caf::error&) {});
    CHECK(answer == 42);
    p.send_all("bye\n");
    REQUIRE(j->wait_for("asked:1"));
    // Once it has returned, nothing handles messages any more.
    caf::error after;
    self->request(proto, caf::infinite, 1)
      .receive([&](int) {}, [&](caf::error& err) { after = err; });
    CHECK(after);
  });
}

SCENARIO("a coroutine awaits a connection of its own") {
  auto j = std::make_shared<journal>();
  auto other = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    auto echo = rt.create_server(
      [] { return std::make_unique<echo_protocol>(); }, "127.0.0.1", 0);
    REQUIRE(echo);
    // A port nobody listens on.
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
    socklen_t len = sizeof(addr);
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    auto closed_port = ntohs(addr.sin_port);
    ::close(fd);
    auto port = echo->port();
    auto l = listen(rt, kind::tcp, [&rt, j, other, port, closed_port](
                                     stream s) -> task<> {
      auto t = co_await rt.connect(recording(other), "127.0.0.1", port);
      j->add(t ? "connected" : "connect:" + show(t.error()));
      if (t)
        t->write(to_bytes("ping"));
      auto refused = co_await rt.connect(recording(other), "127.0.0.1",
                                         closed_port);
      j->add(refused ? "connected" : "refused:" + show(refused.error()));
      co_await s.write("done");
    });
    auto p = connect_peer(kind::tcp, l);
    CHECK(p.recv_all() == "done");
    CHECK(j->events()
          == std::vector<std::string>{"connected", "refused:connection_refused"});
    // The echo server sent the bytes back to the connection's protocol.
    CHECK(other->wait([](journal& jr) { return jr.data_size_unlocked() == 4; }));
    CHECK(other->data() == "ping");
  });
}

SCENARIO("a read_exactly that times out gives its bytes back, and their credit once") {
  auto j = std::make_shared<journal>();
  runtime_options opts;
  opts.read_credit = 8 * 1024;
  with_runtime(
    [&](runtime& rt) {
      auto l = listen(rt, kind::tcp, [j](stream s) -> task<> {
        // Gathers past half the credit, then gives up.
        auto r = co_await wait_for(s.read_exactly(64 * 1024), 200ms);
        j->add("exactly:" + show(r));
        // What it gathered is read again; the credit is right if all
        // 64 KiB still arrive through an 8 KiB credit.
        auto all = co_await s.read_exactly(64 * 1024);
        j->add(all && to_string(*all) == big(64 * 1024) ? "same" : "different");
        j->add("empty delimiter:" + show(co_await s.read_until("")));
      });
      auto p = connect_peer(kind::tcp, l);
      auto data = big(64 * 1024);
      p.send_all(data.substr(0, 6 * 1024));
      REQUIRE(j->wait_for("exactly:timed_out"));
      p.send_all(data.substr(6 * 1024));
      REQUIRE(j->wait_for("same", 1, 10s));
      CHECK(j->wait_for("empty delimiter:invalid_argument"));
    },
    nullptr, opts);
}

SCENARIO("a child its coroutine lets go of is killed") {
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    auto l = listen(rt, kind::tcp, [&rt, j](stream s) -> task<> {
      {
        auto child = co_await rt.create_subprocess_shell("sleep 30");
        j->add(child ? "pid:" + std::to_string(child->pid()) : "no child");
      }
      co_await s.write("done");
    });
    auto p = connect_peer(kind::tcp, l);
    CHECK(p.recv_all() == "done");
    auto ev = j->events();
    REQUIRE(ev.size() == 1);
    REQUIRE(ev[0].rfind("pid:", 0) == 0);
    auto pid = std::stoi(ev[0].substr(4));
    // Killed and reaped by its transport.
    CHECK(eventually([&] { return ::kill(pid, 0) != 0; }, 10s));
  });
}

SCENARIO("a write after the transport was closed behind the stream's back "
         "waits for the loss") {
  auto k = socket_kind();
  INFO("transport: " << name_of(k));
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    auto l = listen(rt, k, [j](stream s) -> task<> {
      co_await s.write("before");
      // Not through the stream: it learns of it from the transport.
      s.get_transport().close();
      j->add("small:" + show(co_await s.write("x")));
      j->add("empty:" + show(co_await s.write(bytes{})));
    });
    auto p = connect_peer(k, l);
    bool eof = false;
    CHECK(p.recv_all(&eof) == "before");
    CHECK(eof);
    REQUIRE(j->wait_for("empty:closed"));
    // Neither write went on as if it had been made.
    CHECK(j->events() == std::vector<std::string>{"small:closed",
                                                  "empty:closed"});
  });
}

SCENARIO("a read awaited again takes what came after") {
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    auto l = listen(rt, kind::tcp, [j](stream s) -> task<> {
      auto rd = s.read();
      // Handed over as the bytes come.
      j->add("1:" + show(co_await rd));
      // The next bytes come meanwhile, and wait in the buffer.
      co_await sleep_for(100ms);
      j->add("2:" + show(co_await rd));
    });
    auto p = connect_peer(kind::tcp, l);
    p.send_all("hello");
    REQUIRE(j->wait_for("1:ok[hello]"));
    p.send_all("world");
    REQUIRE(j->wait_for("2:ok[world]"));
  });
}

SCENARIO("a coroutine writing a child's stdin waits while the child does not read") {
  auto j = std::make_shared<journal>();
  constexpr size_t chunk = 64 * 1024;
  constexpr size_t total = 256 * chunk; // 16 MiB
  auto written = std::make_shared<std::atomic<size_t>>(0);
  auto most_buffered = std::make_shared<std::atomic<size_t>>(0);
  with_runtime([&](runtime& rt) {
    auto l = listen(rt, kind::tcp, [&rt, j, written, most_buffered](
                                     stream s) -> task<> {
      std::vector<std::string> argv{"/bin/sleep", "30"};
      auto child = co_await rt.create_subprocess_exec(argv);
      if (!child) {
        j->add("start:" + show(child.error()));
        co_return;
      }
      auto data = std::string(chunk, 'x');
      for (size_t at = 0; at < total; at += chunk) {
        if (auto err = child->write(data)) {
          j->add("write:" + show(err));
          co_return;
        }
        *written += chunk;
        auto now
          = child->get_transport().get_pipe_transport(0).get_write_buffer_size();
        if (now > *most_buffered)
          *most_buffered = now;
        auto err = co_await wait_for(child->drain(), 1s);
        if (!err)
          continue;
        // Blocked: the child reads nothing. Once it is killed, the drain
        // ends with the pipe.
        j->add("drain:" + show(err));
        child->get_transport().send_signal(SIGKILL);
        j->add("after kill:" + show(co_await wait_for(child->drain(), 10s)));
        break;
      }
      j->add("wait:" + show(co_await child->wait()));
      co_await s.write("done");
    });
    auto p = connect_peer(kind::tcp, l);
    CHECK(p.recv_all(nullptr, 20s) == "done");
    auto ev = j->events();
    REQUIRE(ev.size() == 3);
    CHECK(ev[0] == "drain:timed_out");
    // The pipe went with the child: a clean end or its error, not a wait.
    CHECK(ev[1] != "after kill:timed_out");
    CHECK(ev[2] == "wait:ok");
    // The pipe's buffer held its high watermark (64 KiB) and one write at
    // most; the kernel's pipe (64 KiB by default) took some more.
    INFO("written: " << written->load() << ", most buffered: "
                     << most_buffered->load());
    CHECK(written->load() < total / 8);
    CHECK(most_buffered->load() <= 64 * 1024 + chunk);
  });
}
