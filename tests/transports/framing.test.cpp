// Framing layers on real connections (TCP and Unix; TLS below them too):
// one delivery per frame to class protocols and protocol actors, framed
// writes, limits, EOF, flow control and start_framing.

#include <catch2/catch.hpp>

#include <atomic>
#include <mutex>
#include <thread>

#include "support/any_kind.hpp"
#include "support/harness.hpp"
#include "support/tls_support.hpp"
#include "tact/transports/framing.hpp"
#include "tact/runtime/messages.hpp"
#include "tact/transports/tls.hpp"

using namespace tact;
using namespace tact::test;

namespace {

std::string header(unsigned size, uint64_t len) {
  std::string h(size, '\0');
  for (unsigned i = 0; i < size; ++i)
    h[size - 1 - i] = static_cast<char>((len >> (8 * i)) & 0xff);
  return h;
}

// Recorders whose every frame is an event "frame:<bytes>" followed by an
// event "frame" to wait for.
protocol_factory frame_recorders(const framing& f, std::shared_ptr<journal> j,
                                 std::function<void(recorder&)> setup = {}) {
  auto made = framed(f, recording(j, [j, setup](recorder& r) {
    r.on_data = [j](transport&, const bytes& data) {
      j->add("frame:" + to_string(data));
      j->add("frame");
    };
    if (setup)
      setup(r);
  }));
  REQUIRE(made);
  return *made;
}

std::vector<std::string> frames_of(journal& j) {
  std::vector<std::string> result;
  for (auto& e : j.events())
    if (e.rfind("frame:", 0) == 0)
      result.push_back(e.substr(6));
  return result;
}

} // namespace

SCENARIO("a line layer delivers one data_received per line and ends each "
         "write with the delimiter") {
  auto k = any_kind();
  with_runtime([k](runtime& rt) {
    auto j = std::make_shared<journal>();
    auto l = listen(rt, k, frame_recorders(line_framing{"\r\n", 100}, j,
                                           [](recorder& r) {
      auto echo = r.on_data;
      r.on_data = [echo](transport& t, const bytes& data) {
        echo(t, data);
        t.write(to_string(data) + "!");
      };
    }));
    auto p = connect_peer(k, l);
    // Split inside the delimiter, several lines in one send, an empty line.
    p.send_all("one\r");
    REQUIRE(j->wait_for("connection_made"));
    p.send_all("\ntwo\r\nthree\r\n\r\nfo");
    p.send_all("ur\r\n");
    REQUIRE(j->wait_for("frame", 5));
    CHECK(frames_of(*j)
          == std::vector<std::string>{"one", "two", "three", "", "four"});
    std::string want = "one!\r\ntwo!\r\nthree!\r\n!\r\nfour!\r\n";
    CHECK(p.recv_n(want.size()) == want);
    // The extra info is the socket's.
    auto t = j->handle();
    CHECK(t.get_extra_info("peername").has_value());
    CHECK(t.get_extra_info("socket").has_value());
    CHECK(t.can_write_eof());
  });
}

SCENARIO("a protocol actor above a length-prefix layer gets frames and its "
         "writes are framed") {
  auto k = any_kind();
  with_runtime([k](runtime& rt) {
    std::atomic<int> frames{0};
    auto f = framed(length_prefix_framing{2, 1000}, [&] {
      return rt.spawn_on_loop([&](caf::event_based_actor* self)
                                -> caf::behavior {
        auto t = std::make_shared<transport>();
        return {
          [=](connection_made& msg) { *t = msg.handle; },
          [=, &frames](data_received& msg) {
            ++frames;
            t->consumed(msg.data.size());
            auto reply = "got " + std::to_string(msg.data.size());
            t->write(reply);
          },
          [=](eof_received) { return false; },
          [=](connection_lost&) { self->quit(); },
        };
      });
    });
    REQUIRE(f);
    auto l = listen(rt, k, *f);
    auto p = connect_peer(k, l);
    std::string stream;
    for (size_t n : {0u, 1u, 300u, 1000u})
      stream += header(2, n) + std::string(n, 'x');
    // One byte at a time: the layer must reassemble every frame.
    for (char c : stream)
      p.send_all(std::string(1, c));
    auto want = header(2, 5) + "got 0" + header(2, 5) + "got 1"
                + header(2, 7) + "got 300" + header(2, 8) + "got 1000";
    CHECK(p.recv_n(want.size()) == want);
    CHECK(frames == 4);
    p.shutdown_write();
    bool eof = false;
    CHECK(p.recv_all(&eof).empty());
    CHECK(eof);
  });
}

SCENARIO("a line over the limit ends that connection with frame_too_large "
         "and the server serves the next") {
  auto k = any_kind();
  with_runtime([k](runtime& rt) {
    auto j = std::make_shared<journal>();
    auto l = listen(rt, k, frame_recorders(line_framing{"\n", 16}, j));
    auto p = connect_peer(k, l);
    p.send_all("short\n" + std::string(17, 'a'));
    REQUIRE(j->wait_for("connection_lost"));
    CHECK(code_of(j->lost_reason()) == errc::frame_too_large);
    CHECK(frames_of(*j) == std::vector<std::string>{"short"});
    bool eof = false;
    p.recv_all(&eof);
    CHECK(eof);
    auto j2 = std::make_shared<journal>();
    auto l2 = listen(rt, k, frame_recorders(line_framing{"\n", 16}, j2));
    auto q = connect_peer(k, l2);
    q.send_all("next\n");
    REQUIRE(j2->wait_for("frame"));
    CHECK(frames_of(*j2) == std::vector<std::string>{"next"});
  });
}

SCENARIO("at EOF the last line comes as a frame, then eof_received; a "
         "half-open framed connection still writes") {
  auto k = any_kind();
  with_runtime([k](runtime& rt) {
    auto j = std::make_shared<journal>();
    auto l = listen(rt, k, frame_recorders(line_framing{}, j, [](recorder& r) {
      r.keep_open = true;
      r.on_eof = [](transport& t) {
        t.write("bye");
        t.write_eof();
      };
    }));
    auto p = connect_peer(k, l);
    p.send_all("a\nb");
    p.shutdown_write();
    bool eof = false;
    CHECK(p.recv_all(&eof) == "bye\n");
    CHECK(eof);
    REQUIRE(j->wait_for("eof_received"));
    CHECK(frames_of(*j) == std::vector<std::string>{"a", "b"});
    auto events = j->events();
    CHECK(events.back() == "eof_received");
  });
}

SCENARIO("a stream that ends inside a frame is incomplete_frame; a frame "
         "written over the limit is frame_too_large") {
  auto k = any_kind();
  with_runtime([k](runtime& rt) {
    auto j = std::make_shared<journal>();
    auto l = listen(rt, k,
                    frame_recorders(length_prefix_framing{4, 10}, j,
                                    [](recorder& r) { r.keep_open = true; }));
    auto p = connect_peer(k, l);
    p.send_all(header(4, 3) + "abc" + header(4, 8) + "defg");
    p.shutdown_write();
    REQUIRE(j->wait_for("connection_lost"));
    CHECK(code_of(j->lost_reason()) == errc::incomplete_frame);
    CHECK(frames_of(*j) == std::vector<std::string>{"abc"});
    CHECK(j->count("eof_received") == 0);

    auto j2 = std::make_shared<journal>();
    auto l2 = listen(rt, k,
                     frame_recorders(length_prefix_framing{4, 10}, j2,
                                     [](recorder& r) {
                                       r.on_made = [](transport& t) {
                                         t.write(std::string(11, 'x'));
                                       };
                                     }));
    auto q = connect_peer(k, l2);
    REQUIRE(j2->wait_for("connection_lost"));
    CHECK(code_of(j2->lost_reason()) == errc::frame_too_large);
    bool eof = false;
    CHECK(q.recv_all(&eof).empty());
  });
}

SCENARIO("a paused framed transport delivers no frame, and the socket stops "
         "reading once a backlog builds") {
  auto k = any_kind();
  with_runtime([k](runtime& rt) {
    auto j = std::make_shared<journal>();
    std::atomic<bool> paused_once{false};
    auto l = listen(rt, k, frame_recorders(line_framing{}, j, [&](recorder& r) {
      auto log = r.on_data;
      r.on_data = [log, &paused_once](transport& t, const bytes& data) {
        log(t, data);
        if (!paused_once.exchange(true))
          t.pause_reading();
      };
    }));
    auto p = connect_peer(k, l);
    // 4 MiB of lines: far more than the layer's backlog and the socket's
    // read credit.
    std::string line(1023, 'l');
    line += '\n';
    std::string all;
    for (int i = 0; i < 4096; ++i)
      all += line;
    std::thread writer{[&] { p.send_all(all); }};
    REQUIRE(j->wait_for("frame"));
    std::this_thread::sleep_for(300ms);
    CHECK(j->count("frame") == 1);
    auto t = j->handle();
    CHECK_FALSE(t.is_reading());
    t.resume_reading();
    CHECK(j->wait_for("frame", 4096, 20s));
    writer.join();
    auto frames = frames_of(*j);
    CHECK(frames.size() == 4096);
    CHECK(std::all_of(frames.begin(), frames.end(),
                      [&](const std::string& s) { return s.size() == 1023; }));
  });
}

SCENARIO("start_framing takes over a live connection with the bytes its "
         "protocol left unread") {
  auto k = any_kind();
  with_runtime([k](runtime& rt) {
    auto j = std::make_shared<journal>();
    std::shared_ptr<transport> framed_t = std::make_shared<transport>();
    auto l = listen(rt, k, recording(j, [framed_t](recorder& r) {
      r.on_data = [framed_t](transport& t, const bytes& data) {
        if (*framed_t) {
          // Frames from now on: answer each.
          framed_t->write("frame " + to_string(data));
          return;
        }
        // "UPGRADE\n" then frames, possibly in the same read. Pausing
        // first must not stop the layer (asyncio's start_tls resumes).
        t.pause_reading();
        std::string text = to_string(data);
        auto nl = text.find('\n');
        REQUIRE(nl != std::string::npos);
        auto up = start_framing(t, t.get_protocol(),
                                length_prefix_framing{1, 255},
                                bytes(data.begin() + static_cast<long>(nl) + 1,
                                      data.end()));
        REQUIRE(up);
        *framed_t = *up;
      };
    }));
    auto p = connect_peer(k, l);
    p.send_all("UPGRADE\n" + header(1, 2) + "ab" + header(1, 1));
    p.send_all("c");
    auto want = header(1, 8) + "frame ab" + header(1, 7) + "frame c";
    CHECK(p.recv_n(want.size()) == want);
    CHECK(framed_t->get_extra_info("peername").has_value());
  });
}

SCENARIO("a framing layer runs above TLS, both ends tact") {
  auto k = any_kind();
  with_runtime([k](runtime& rt) {
    test_pki pki;
    tls_contexts ctx{pki};
    auto js = std::make_shared<journal>();
    server_options sopts;
    sopts.tls = ctx.server;
    auto serve = frame_recorders(length_prefix_framing{}, js, [](recorder& r) {
      auto log = r.on_data;
      r.on_data = [log](transport& t, const bytes& data) {
        log(t, data);
        t.write(bytes(data.rbegin(), data.rend()));
      };
    });
    std::string path;
    caf::expected<server> srv{caf::error{}};
    if (k == kind::tcp) {
      srv = rt.create_server(serve, "127.0.0.1", 0, sopts);
    } else {
      path = temp_socket_path();
      srv = rt.create_unix_server(serve, path, sopts);
    }
    REQUIRE(srv);
    auto jc = std::make_shared<journal>();
    tls_options topts;
    topts.server_hostname = "localhost";
    auto client = frame_recorders(length_prefix_framing{}, jc);
    auto t = k == kind::tcp
               ? rt.create_connection(client, "127.0.0.1", srv->port(), ctx.client,
                                      topts)
               : rt.create_unix_connection(client, path, ctx.client, topts);
    REQUIRE(t);
    // The connection's transport is TLS; the protocol's is the layer.
    REQUIRE(jc->wait_for("connection_made"));
    auto ft = jc->handle();
    CHECK_FALSE(ft.can_write_eof());
    ft.write("hello");
    ft.write(std::string(100000, 'z') + "a");
    REQUIRE(jc->wait_for("frame", 2));
    auto frames = frames_of(*jc);
    REQUIRE(frames.size() == 2);
    CHECK(frames[0] == "olleh");
    CHECK(frames[1] == "a" + std::string(100000, 'z'));
    CHECK(ft.get_extra_info("cipher").has_value());
    ft.close();
    REQUIRE(jc->wait_for("connection_lost"));
    CHECK_FALSE(jc->lost_reason());
  });
}

SCENARIO("empty frames are written; a line with the delimiter inside is "
         "refused") {
  with_runtime([](runtime& rt) {
    auto j = std::make_shared<journal>();
    auto l = listen(rt, kind::tcp,
                    frame_recorders(line_framing{}, j, [](recorder& r) {
      r.on_made = [](transport& t) {
        t.write("");
        t.write("x");
        t.write("");
      };
    }));
    auto p = connect_peer(kind::tcp, l);
    CHECK(p.recv_n(4) == "\nx\n\n");
    auto j2 = std::make_shared<journal>();
    auto l2 = listen(rt, kind::tcp,
                     frame_recorders(length_prefix_framing{2, 10}, j2,
                                     [](recorder& r) {
      r.on_made = [](transport& t) { t.write(""); };
    }));
    auto q = connect_peer(kind::tcp, l2);
    CHECK(q.recv_n(2) == header(2, 0));
    auto j3 = std::make_shared<journal>();
    auto l3 = listen(rt, kind::tcp,
                     frame_recorders(line_framing{"\r\n"}, j3, [](recorder& r) {
      r.on_made = [](transport& t) {
        t.write("fine");
        t.write("two\r\nlines");
      };
    }));
    auto u = connect_peer(kind::tcp, l3);
    REQUIRE(j3->wait_for("connection_lost"));
    CHECK(code_of(j3->lost_reason()) == errc::invalid_argument);
    bool eof = false;
    CHECK(u.recv_all(&eof) == "fine\r\n");
  });
}

SCENARIO("frames read before a TLS peer's close_notify still reach a paused "
         "protocol, then eof_received and a clean connection_lost") {
  with_runtime([](runtime& rt) {
    test_pki pki;
    tls_contexts ctx{pki};
    auto js = std::make_shared<journal>();
    server_options sopts;
    sopts.tls = ctx.server;
    auto srv = rt.create_server(
      frame_recorders(line_framing{}, js, [](recorder& r) {
        auto log = r.on_data;
        r.on_data = [log](transport& t, const bytes& data) {
          log(t, data);
          if (to_string(data) == "first")
            t.pause_reading();
        };
      }),
      "127.0.0.1", 0, sopts);
    REQUIRE(srv);
    auto jc = std::make_shared<journal>();
    tls_options topts;
    topts.server_hostname = "localhost";
    auto t = rt.create_connection(recording(jc), "127.0.0.1", srv->port(),
                                  ctx.client, topts);
    REQUIRE(t);
    t->write("first\nsecond\nthird\nlast");
    REQUIRE(js->wait_for("frame"));
    t->close();
    // The client's close is done: the server's TLS layer below the
    // framing has ended by now.
    REQUIRE(jc->wait_for("connection_lost"));
    CHECK(js->count("frame") == 1);
    js->handle().resume_reading();
    REQUIRE(js->wait_for("connection_lost"));
    CHECK(frames_of(*js)
          == std::vector<std::string>{"first", "second", "third", "last"});
    CHECK(js->count("eof_received") == 1);
    CHECK_FALSE(js->lost_reason());
  });
}

SCENARIO("frames that came before a reset are delivered, then "
         "connection_lost(connection_reset)") {
  auto k = any_kind();
  auto paused = GENERATE(false, true);
  INFO("transport: " << name_of(k) << (paused ? ", protocol paused" : ""));
  with_runtime([k, paused](runtime& rt) {
    auto j = std::make_shared<journal>();
    auto l = listen(rt, k, frame_recorders(line_framing{}, j,
                                           [paused](recorder& r) {
      r.on_made = [paused](transport& t) {
        if (paused)
          t.pause_reading();
        t.write("greeting");
      };
    }));
    auto p = connect_peer(k, l);
    REQUIRE(p.readable_within(2s));
    // Two lines and the start of a third, then a reset (the greeting is
    // unread).
    p.send_all("one\ntwo\nthr");
    p.close();
    if (paused) {
      std::this_thread::sleep_for(100ms);
      CHECK(j->count("connection_lost") == 0);
      j->handle().resume_reading();
    }
    REQUIRE(j->wait_for("connection_lost"));
    CHECK(frames_of(*j) == std::vector<std::string>{"one", "two"});
    CHECK(j->count("eof_received") == 0);
    CHECK(code_of(j->lost_reason()) == errc::connection_reset);
  });
}
