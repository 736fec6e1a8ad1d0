// asyncio's contract for stream transports (docs/asyncio-mapping.md),
// written once and run on TCP, on Unix stream sockets, on TLS over TCP and
// on line framing over TCP (scenarios about sockets themselves run on TCP
// and Unix only). The peer is a blocking socket; on TLS an OpenSSL
// endpoint, on line framing one that writes and reads lines.

#include <catch2/catch.hpp>

#include <atomic>
#include <thread>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "support/any_kind.hpp"
#include "support/harness.hpp"
#include "tact/protocols/echo.hpp"
#include "tact/runtime/messages.hpp"

using namespace tact;
using namespace tact::test;

namespace {

// From here on `t` is the handle the protocol got in connection_made. On
// TCP, Unix and TLS that is the one create_connection returned; over line
// framing create_connection returns the stream's, and the protocol's is
// the framing layer's, whose contract this file checks.
void use_protocol_handle(caf::expected<transport>& t, journal& j) {
  REQUIRE(t);
  REQUIRE(j.wait_for("connection_made"));
  *t = j.handle();
  REQUIRE(*t);
}

} // namespace

SCENARIO("connection_made comes first and connection_lost last, exactly once") {
  auto k = any_stream_kind();
  INFO("transport: " << name_of(k));
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    raw_listener l{k};
    auto [t, p] = l.connect(rt, recording(j));
    use_protocol_handle(t, *j);
    REQUIRE(j->wait_for("connection_made"));
    SECTION("close, abort and close again") {
      t->close();
      t->abort();
      t->close();
    }
    SECTION("abort twice") {
      t->abort();
      t->abort();
    }
    SECTION("the peer resets") {
      p.send_all("x");
      REQUIRE(j->wait_for("data_received"));
      p.reset();
      REQUIRE(j->wait_for("connection_lost"));
      t->close();
      t->abort();
    }
    SECTION("close while the peer resets") {
      p.reset();
      t->close();
    }
    REQUIRE(j->wait_for("connection_lost"));
    std::this_thread::sleep_for(100ms);
    auto ev = j->events();
    CHECK(ev.front() == "connection_made");
    CHECK(ev.back() == "connection_lost");
    CHECK(j->count("connection_made") == 1);
    CHECK(j->count("connection_lost") == 1);
  });
}

SCENARIO("close flushes the buffer first; abort drops it") {
  auto k = any_stream_kind();
  INFO("transport: " << name_of(k));
  auto j = std::make_shared<journal>();
  auto payload = big(4 * 1024 * 1024);
  with_runtime([&](runtime& rt) {
    raw_listener l{k};
    auto [t, p] = l.connect(rt, recording(j));
    use_protocol_handle(t, *j);
    REQUIRE(j->wait_for("connection_made"));
    // The peer does not read yet, so most of this stays buffered.
    t->write(payload);
    REQUIRE(eventually([&t = t] { return t->get_write_buffer_size() > 0; }));
    SECTION("close") {
      t->close();
      t->close();
      std::this_thread::sleep_for(200ms);
      CHECK(j->count("connection_lost") == 0);
      bool eof = false;
      auto got = p.recv_all(&eof, 10s);
      CHECK(eof);
      CHECK(got.size() == payload.size());
      CHECK(got == payload);
      REQUIRE(j->wait_for("connection_lost"));
      CHECK_FALSE(j->lost_reason());
    }
    SECTION("abort") {
      t->abort();
      REQUIRE(j->wait_for("connection_lost", 1, 1s));
      CHECK_FALSE(j->lost_reason());
      auto got = p.recv_all(nullptr, 2s);
      CHECK(got.size() < payload.size());
      t->abort();
      std::this_thread::sleep_for(50ms);
      CHECK(j->count("connection_lost") == 1);
    }
  });
}

SCENARIO("is_closing is true from close or abort on") {
  auto k = any_stream_kind();
  INFO("transport: " << name_of(k));
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    raw_listener l{k};
    auto [t, p] = l.connect(rt, recording(j));
    use_protocol_handle(t, *j);
    CHECK_FALSE(t->is_closing());
    SECTION("close") {
      t->close();
      CHECK(t->is_closing());
    }
    SECTION("abort") {
      t->abort();
      CHECK(t->is_closing());
    }
    SECTION("the peer closes") {
      p.close();
      REQUIRE(j->wait_for("connection_lost"));
      CHECK(t->is_closing());
    }
    REQUIRE(j->wait_for("connection_lost"));
    CHECK(t->is_closing());
  });
}

SCENARIO("pause_reading and resume_reading are idempotent switches") {
  auto k = any_stream_kind();
  INFO("transport: " << name_of(k));
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    raw_listener l{k};
    auto [t, p] = l.connect(rt, recording(j));
    use_protocol_handle(t, *j);
    REQUIRE(j->wait_for("connection_made"));
    CHECK(t->is_reading());
    t->pause_reading();
    t->pause_reading();
    CHECK_FALSE(t->is_reading());
    p.send_all("while paused");
    std::this_thread::sleep_for(200ms);
    CHECK(j->count("data_received") == 0);
    t->resume_reading();
    t->resume_reading();
    CHECK(t->is_reading());
    REQUIRE(j->wait([](journal& jj) { return jj.data_size_unlocked() == 12; }));
    CHECK(j->data() == "while paused");
    t->close();
    CHECK_FALSE(t->is_reading());
    t->resume_reading();
    CHECK_FALSE(t->is_reading());
    t->pause_reading();
    REQUIRE(j->wait_for("connection_lost"));
  });
}

SCENARIO("pausing inside connection_made means not one byte is read") {
  auto k = any_stream_kind();
  INFO("transport: " << name_of(k));
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    // The peer's bytes are already waiting when the transport starts.
    auto l = listen(rt, k, recording(j, [](recorder& r) {
                      r.on_made = [](transport& t) { t.pause_reading(); };
                    }));
    auto p = connect_peer(k, l);
    p.send_all("early bytes");
    REQUIRE(j->wait_for("connection_made"));
    std::this_thread::sleep_for(300ms);
    CHECK(j->count("data_received") == 0);
    auto t = j->handle();
    CHECK_FALSE(t.is_reading());
    t.resume_reading();
    REQUIRE(j->wait([](journal& jj) { return jj.data_size_unlocked() == 11; }));
    CHECK(j->data() == "early bytes");
    t.close();
    REQUIRE(j->wait_for("connection_lost"));
  });
}

SCENARIO("set_protocol reroutes deliveries; get_protocol is empty after loss") {
  auto k = any_stream_kind();
  INFO("transport: " << name_of(k));
  auto j1 = std::make_shared<journal>();
  auto j2 = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    raw_listener l{k};
    auto [t, p] = l.connect(rt, recording(j1));
    use_protocol_handle(t, *j1);
    REQUIRE(j1->wait_for("connection_made"));
    auto first = t->get_protocol();
    CHECK(first);
    p.send_all("one");
    REQUIRE(j1->wait_for("data_received"));
    auto second
      = protocol_factory::spawn_adapter(rt.mux(), std::make_unique<recorder>(j2));
    t->set_protocol(second);
    CHECK(t->get_protocol() == second);
    p.send_all("two");
    REQUIRE(j2->wait_for("data_received"));
    CHECK(j2->data() == "two");
    CHECK(j1->data() == "one");
    p.close();
    REQUIRE(j2->wait_for("connection_lost"));
    CHECK_FALSE(t->get_protocol());
    std::this_thread::sleep_for(50ms);
    // The replaced protocol hears nothing more, not even connection_lost.
    CHECK(j1->count("connection_lost") == 0);
    CHECK(j2->count("connection_made") == 0);
  });
}

SCENARIO("a protocol callback that throws is fatal for its connection only") {
  auto k = any_stream_kind();
  INFO("transport: " << name_of(k));
  auto j = std::make_shared<journal>();
  std::vector<std::string> warnings;
  with_runtime(
    [&](runtime& rt) {
      auto l = listen(rt, k, recording(j, [](recorder& r) {
                        r.on_data = [](transport& t, const bytes& data) {
                          if (to_string(data) == "boom")
                            throw std::runtime_error("kaboom");
                          t.write(bytes{data});
                        };
                      }));
      auto bad = connect_peer(k, l);
      auto good = connect_peer(k, l);
      bad.send_all("boom");
      REQUIRE(j->wait_for("connection_lost"));
      CHECK(code_of(j->lost_reason()) == errc::protocol_failed);
      bool eof = false;
      bad.recv_all(&eof, 2s);
      CHECK(eof);
      good.send_all("still here");
      CHECK(good.recv_n(10) == "still here");
    },
    &warnings);
  REQUIRE(warnings.size() == 1);
  CHECK(warnings[0].find("kaboom") != std::string::npos);
}

SCENARIO("TCP_NODELAY is on for TCP transports") {
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    raw_listener l{kind::tcp};
    auto [t, p] = l.connect(rt, recording(j));
    use_protocol_handle(t, *j);
    auto fd = caf::get<int64_t>(*t->get_extra_info("socket"));
    int value = 0;
    socklen_t len = sizeof(value);
    REQUIRE(getsockopt(static_cast<int>(fd), IPPROTO_TCP, TCP_NODELAY, &value,
                       &len)
            == 0);
    CHECK(value != 0);
    t->close();
    REQUIRE(j->wait_for("connection_lost"));
  });
  // And on the accepting side.
  auto j2 = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    auto l = listen(rt, kind::tcp, recording(j2));
    auto p = connect_peer(kind::tcp, l);
    REQUIRE(j2->wait_for("connection_made"));
    auto t = j2->handle();
    auto fd = caf::get<int64_t>(*t.get_extra_info("socket"));
    int value = 0;
    socklen_t len = sizeof(value);
    REQUIRE(getsockopt(static_cast<int>(fd), IPPROTO_TCP, TCP_NODELAY, &value,
                       &len)
            == 0);
    CHECK(value != 0);
    t.close();
    REQUIRE(j2->wait_for("connection_lost"));
  });
}

SCENARIO("empty writes, writes after write_eof and writes after close") {
  auto k = any_stream_kind();
  INFO("transport: " << name_of(k));
  auto j = std::make_shared<journal>();
  std::vector<std::string> warnings;
  with_runtime(
    [&](runtime& rt) {
      raw_listener l{k};
      auto [t, p] = l.connect(rt, recording(j));
      use_protocol_handle(t, *j);
      SECTION("an empty write does nothing") {
        CHECK_FALSE(t->write(bytes{}));
        CHECK(t->get_write_buffer_size() == 0);
        if (k == kind::lines)
          // Over framing it is a frame: an empty line.
          CHECK(p.arrived_within(2s));
        else
          CHECK_FALSE(p.readable_within(100ms));
        t->close();
      }
      SECTION("a write after write_eof is an error") {
        CHECK_FALSE(t->write("data"));
        if (!t->can_write_eof()) {
          // TLS, as asyncio's SSL transport: no half-close.
          CHECK(k == kind::tls);
          CHECK(code_of(t->write_eof()) == errc::not_supported);
          CHECK(p.recv_n(4, 2s) == "data");
          t->close();
          REQUIRE(j->wait_for("connection_lost"));
          return;
        }
        CHECK_FALSE(t->write_eof());
        CHECK(code_of(t->write("more")) == errc::write_after_eof);
        CHECK(code_of(t->write(bytes{})) == errc::write_after_eof);
        bool eof = false;
        CHECK(p.recv_all(&eof, 2s) == "data");
        CHECK(eof);
        t->close();
      }
      SECTION("writes after close are dropped and counted, one warning") {
        t->close();
        for (int i = 0; i < 7; ++i)
          CHECK_FALSE(t->write("late"));
        CHECK(t->dropped_writes() == 7);
        bool eof = false;
        CHECK(p.recv_all(&eof, 2s).empty());
        CHECK(eof);
      }
      REQUIRE(j->wait_for("connection_lost"));
    },
    &warnings);
  auto dropped_warnings = std::count_if(
    warnings.begin(), warnings.end(),
    [](auto& w) { return w.find("dropped") != std::string::npos; });
  CHECK(dropped_warnings <= 1);
}

SCENARIO("a write goes out at once; what the kernel refuses is buffered") {
  auto k = any_stream_kind();
  INFO("transport: " << name_of(k));
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    raw_listener l{k};
    auto [t, p] = l.connect(rt, recording(j));
    use_protocol_handle(t, *j);
    t->write("ping");
    CHECK(p.recv_n(4, 2s) == "ping");
    CHECK(eventually([&t = t] { return t->get_write_buffer_size() == 0; }));
    // 8 MiB cannot fit in the socket buffers of a peer that does not read.
    auto payload = big(8 * 1024 * 1024);
    t->write(payload);
    REQUIRE(j->wait_for("pause_writing"));
    CHECK(t->get_write_buffer_size() > 0);
    CHECK(t->get_write_buffer_size() < payload.size());
    CHECK(p.recv_n(payload.size(), 20s) == payload);
    CHECK(eventually([&t = t] { return t->get_write_buffer_size() == 0; }));
    t->close();
    REQUIRE(j->wait_for("connection_lost"));
  });
}

SCENARIO("write_eof sends FIN after the buffer drains") {
  auto k = any_stream_kind();
  INFO("transport: " << name_of(k));
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    raw_listener l{k};
    auto [t, p] = l.connect(rt, recording(j));
    use_protocol_handle(t, *j);
    if (k == kind::tls) {
      // asyncio's SSL transport cannot half-close either.
      CHECK_FALSE(t->can_write_eof());
      CHECK(code_of(t->write_eof()) == errc::not_supported);
      return;
    }
    CHECK(t->can_write_eof());
    auto payload = big(2 * 1024 * 1024);
    t->write(payload);
    CHECK_FALSE(t->write_eof());
    CHECK_FALSE(t->write_eof());
    CHECK_FALSE(t->is_closing());
    bool eof = false;
    auto got = p.recv_all(&eof, 10s);
    CHECK(eof);
    CHECK(got == payload);
    // Half-closed: the peer can still send.
    p.send_all("reply");
    REQUIRE(j->wait([](journal& jj) { return jj.data_size_unlocked() == 5; }));
    CHECK_FALSE(t->is_closing());
    t->close();
    REQUIRE(j->wait_for("connection_lost"));
  });
}

SCENARIO("the peer's EOF gives eof_received; its answer decides") {
  auto k = any_stream_kind();
  INFO("transport: " << name_of(k));
  auto j = std::make_shared<journal>();
  SECTION("true keeps the connection half-open") {
    with_runtime([&](runtime& rt) {
      raw_listener l{k};
      auto [t, p] = l.connect(rt, recording(j, [](recorder& r) {
                                r.keep_open = true;
                              }));
      use_protocol_handle(t, *j);
      p.send_all("last words");
      p.shutdown_write();
      REQUIRE(j->wait_for("eof_received"));
      if (k == kind::tls) {
        // As asyncio's SSL transport: after close_notify the answer has no
        // effect, the connection closes.
        REQUIRE(j->wait_for("connection_lost"));
        CHECK_FALSE(j->lost_reason());
        CHECK(j->data() == "last words");
        return;
      }
      std::this_thread::sleep_for(100ms);
      CHECK(j->count("connection_lost") == 0);
      CHECK_FALSE(t->is_closing());
      t->write("still writing");
      CHECK(p.recv_n(13) == "still writing");
      t->close();
      REQUIRE(j->wait_for("connection_lost"));
      auto ev = j->events();
      auto eof_at = std::find(ev.begin(), ev.end(), "eof_received");
      CHECK(std::find(eof_at, ev.end(), "data_received") == ev.end());
      CHECK(j->data() == "last words");
    });
  }
  SECTION("false closes the transport") {
    with_runtime([&](runtime& rt) {
      raw_listener l{k};
      auto [t, p] = l.connect(rt, recording(j));
      use_protocol_handle(t, *j);
      p.send_all("bye");
      p.shutdown_write();
      REQUIRE(j->wait_for("connection_lost"));
      CHECK_FALSE(j->lost_reason());
      bool eof = false;
      p.recv_all(&eof, 2s);
      CHECK(eof);
      auto ev = j->events();
      REQUIRE(ev.size() == 4);
      CHECK(ev[1] == "data_received");
      CHECK(ev[2] == "eof_received");
    });
  }
}

SCENARIO("a peer reset is connection_lost(connection_reset), no eof") {
  auto k = any_stream_kind();
  INFO("transport: " << name_of(k));
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    raw_listener l{k};
    auto [t, p] = l.connect(rt, recording(j));
    use_protocol_handle(t, *j);
    REQUIRE(j->wait_for("connection_made"));
    // Closing with unread data resets the connection on TCP (RST) and on
    // Unix sockets (ECONNRESET on the next read) alike.
    t->write("never read");
    REQUIRE(p.readable_within(2s));
    p.reset();
    REQUIRE(j->wait_for("connection_lost"));
    CHECK(j->count("eof_received") == 0);
    CHECK(code_of(j->lost_reason()) == errc::connection_reset);
  });
}

SCENARIO("bytes that came before a reset are delivered, then "
         "connection_lost(connection_reset)") {
  auto k = any_stream_kind();
  INFO("transport: " << name_of(k));
  // A client that sends its last request and hangs up without reading the
  // greeting: its kernel resets the connection. Every run, not most.
  for (int run = 0; run < 20; ++run) {
    auto j = std::make_shared<journal>();
    with_runtime([&](runtime& rt) {
      raw_listener l{k};
      auto [t, p] = l.connect(rt, recording(j, [](recorder& r) {
        r.on_made = [](transport& tr) { tr.write("greeting"); };
      }));
      use_protocol_handle(t, *j);
      REQUIRE(p.arrived_within(2s));
      p.send_all("hello");
      p.close();
      REQUIRE(j->wait_for("connection_lost"));
      CHECK(j->data() == "hello");
      CHECK(j->events()
            == std::vector<std::string>{"connection_made", "data_received",
                                        "connection_lost"});
      CHECK(code_of(j->lost_reason()) == errc::connection_reset);
    });
  }
}

SCENARIO("bytes that came before a reset wait for a paused protocol, even "
         "when a write found the reset first") {
  auto k = any_stream_kind();
  INFO("transport: " << name_of(k));
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    raw_listener l{k};
    auto [t, p] = l.connect(rt, recording(j, [](recorder& r) {
      r.on_made = [](transport& tr) {
        tr.pause_reading();
        tr.write("greeting");
      };
    }));
    use_protocol_handle(t, *j);
    REQUIRE(p.arrived_within(2s));
    p.send_all("last words");
    p.reset();
    // Writes meet the reset; the loss waits for the bytes still unread.
    for (int i = 0; i < 3; ++i) {
      t->write("into the reset");
      std::this_thread::sleep_for(20ms);
    }
    CHECK(j->count("connection_lost") == 0);
    CHECK(j->count("data_received") == 0);
    t->resume_reading();
    REQUIRE(j->wait_for("connection_lost"));
    CHECK(j->data() == "last words");
    CHECK(j->count("eof_received") == 0);
    // The first failure is the reason: on a Unix socket the write meets
    // EPIPE (a closed peer), on TCP the reset.
    auto code = code_of(j->lost_reason());
    if (k == kind::unix_socket)
      CHECK((code == errc::broken_pipe || code == errc::connection_reset));
    else
      CHECK(code == errc::connection_reset);
  });
}

SCENARIO("writing to a peer that is gone is connection_lost(broken_pipe)") {
  auto k = any_stream_kind();
  INFO("transport: " << name_of(k));
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    raw_listener l{k};
    auto [t, p] = l.connect(rt, recording(j, [](recorder& r) {
                              r.keep_open = true;
                            }));
    use_protocol_handle(t, *j);
    p.close();
    REQUIRE(j->wait_for("eof_received"));
    for (int i = 0; i < 200 && j->count("connection_lost") == 0; ++i) {
      t->write("into the void");
      std::this_thread::sleep_for(5ms);
    }
    REQUIRE(j->wait_for("connection_lost"));
    auto code = code_of(j->lost_reason());
    if (k == kind::unix_socket)
      CHECK(code == errc::broken_pipe);
    else if (k == kind::tls)
      // As asyncio's SSL transport: the peer's EOF ends the connection
      // whatever eof_received answers, cleanly; the writes meet a closing
      // transport.
      CHECK(code == errc::none);
    else
      CHECK((code == errc::broken_pipe || code == errc::connection_reset));
  });
}

SCENARIO("extra info gives peername, sockname and socket") {
  auto k = any_kind();
  INFO("transport: " << name_of(k));
  auto j = std::make_shared<journal>();
  auto js = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    auto l = listen(rt, k, recording(js));
    auto t = k == kind::tcp
               ? rt.create_connection(recording(j), "127.0.0.1", l.port)
               : rt.create_unix_connection(recording(j), l.unix_path);
    REQUIRE(t);
    REQUIRE(js->wait_for("connection_made"));
    auto server_side = js->handle();
    CHECK(caf::get<int64_t>(*t->get_extra_info("socket")) >= 0);
    CHECK_FALSE(t->get_extra_info("no such key"));
    auto peer = *t->get_extra_info("peername");
    auto sock = *t->get_extra_info("sockname");
    auto speer = *server_side.get_extra_info("peername");
    auto ssock = *server_side.get_extra_info("sockname");
    if (k == kind::tcp) {
      auto& pl = caf::get<caf::config_value::list>(peer);
      REQUIRE(pl.size() == 2);
      CHECK(caf::get<std::string>(pl[0]) == "127.0.0.1");
      CHECK(caf::get<int64_t>(pl[1]) == l.port);
      // Each end's sockname is the other end's peername.
      CHECK(sock == speer);
      CHECK(ssock == peer);
      CHECK(caf::get<std::string>(*t->get_extra_info("family")) == "inet");
    } else {
      CHECK(caf::get<std::string>(peer) == l.unix_path);
      CHECK(caf::get<std::string>(sock).empty());
      CHECK(caf::get<std::string>(ssock) == l.unix_path);
      CHECK(caf::get<std::string>(speer).empty());
      CHECK(caf::get<std::string>(*t->get_extra_info("family")) == "unix");
    }
    t->close();
    REQUIRE(j->wait_for("connection_lost"));
    REQUIRE(js->wait_for("connection_lost"));
  });
}

SCENARIO("create_connection returns once the protocol has had "
         "connection_made") {
  auto k = any_kind();
  INFO("transport: " << name_of(k));
  with_runtime([&](runtime& rt) {
    auto l = listen(rt, k, [] { return std::make_unique<echo_protocol>(); });
    for (int run = 0; run < 20; ++run) {
      // A protocol that takes its time in connection_made and stores its
      // handle where the caller looks right after the call.
      auto stored = std::make_shared<std::atomic<bool>>(false);
      auto j = std::make_shared<journal>();
      auto f = recording(j, [stored](recorder& r) {
        r.on_made = [stored](transport&) {
          std::this_thread::sleep_for(10ms);
          *stored = true;
        };
      });
      auto t = k == kind::tcp
                 ? rt.create_connection(f, "127.0.0.1", l.port)
                 : rt.create_unix_connection(f, l.unix_path);
      REQUIRE(t);
      CHECK(stored->load());
      CHECK(j->count("connection_made") == 1);
      t->close();
      REQUIRE(j->wait_for("connection_lost"));
    }
  });
}

SCENARIO("every call on an empty transport handle is not_connected") {
  transport t;
  CHECK(code_of(t.write("lost")) == errc::not_connected);
  CHECK(code_of(t.writelines({to_bytes("a")})) == errc::not_connected);
  CHECK(code_of(t.write_eof()) == errc::not_connected);
  CHECK(code_of(t.sendto(to_bytes("x"), endpoint::inet("127.0.0.1", 9)))
        == errc::not_connected);
  CHECK(code_of(t.close()) == errc::not_connected);
  CHECK(code_of(t.abort()) == errc::not_connected);
  CHECK(code_of(t.pause_reading()) == errc::not_connected);
  CHECK(code_of(t.resume_reading()) == errc::not_connected);
  CHECK(code_of(t.set_write_buffer_limits(1024)) == errc::not_connected);
  CHECK_FALSE(t.is_reading());
}
