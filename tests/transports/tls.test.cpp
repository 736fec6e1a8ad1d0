// TLS as asyncio's ssl= has it, each on TCP and on Unix sockets.
// Certificates are made per test run (support/tls_support.hpp); peers are
// tact itself, a blocking OpenSSL endpoint and raw sockets.

#include <catch2/catch.hpp>

#include <atomic>
#include <future>
#include <thread>

#include <poll.h>
#include <sys/socket.h>

#include "support/any_kind.hpp"
#include "support/harness.hpp"
#include "support/tls_support.hpp"
#include "tact/runtime/detail/loop_group.hpp"
#include "tact/runtime/detail/multiplexer.hpp"
#include "tact/runtime/messages.hpp"
#include "tact/transports/tls.hpp"

using namespace tact;
using namespace tact::test;

namespace {

tls_context server_ctx(const std::string& cert, const std::string& key) {
  auto ctx = tls_context::server({cert, key});
  REQUIRE(ctx);
  return *ctx;
}

tls_context client_ctx(const test_pki& pki) {
  tls_client_options opts;
  opts.ca_file = pki.ca_cert;
  auto ctx = tls_context::client(opts);
  REQUIRE(ctx);
  return *ctx;
}

// A TLS server of kind `k`; `made` counts the protocols it made.
listening tls_listen(runtime& rt, kind k, protocol_factory f,
                     const tls_context& ctx,
                     std::chrono::milliseconds handshake_timeout = 60s) {
  server_options opts;
  opts.tls = ctx;
  opts.tls_handshake_timeout = handshake_timeout;
  listening result;
  if (k == kind::tcp) {
    auto srv = rt.create_server(std::move(f), "127.0.0.1", 0, opts);
    REQUIRE(srv);
    result.port = srv->port();
    result.srv = std::move(*srv);
  } else {
    result.unix_path = temp_socket_path();
    auto srv = rt.create_unix_server(std::move(f), result.unix_path, opts);
    REQUIRE(srv);
    result.srv = std::move(*srv);
  }
  return result;
}

caf::expected<transport> tls_connect(runtime& rt, kind k, const listening& l,
                                     protocol_factory f, const tls_context& ctx,
                                     tls_options opts = {}) {
  if (opts.server_hostname.empty())
    opts.server_hostname = "localhost";
  if (k == kind::tcp)
    return rt.create_connection(std::move(f), "127.0.0.1", l.port, ctx, opts);
  return rt.create_unix_connection(std::move(f), l.unix_path, ctx, opts);
}

// A TLS client connection from `rt` to the plain listener `l`, whose peer
// is not accepted here.
caf::expected<transport> tls_connect_raw(runtime& rt, kind k,
                                         const raw_listener& l,
                                         protocol_factory f,
                                         const tls_context& ctx,
                                         tls_options opts) {
  if (k == kind::tcp)
    return rt.create_connection(std::move(f), "127.0.0.1", l.port, ctx, opts);
  return rt.create_unix_connection(std::move(f), l.path, ctx, opts);
}

// A tact TLS client connected to a blocking OpenSSL server on `l` that has
// done its side of the handshake.
struct client_and_peer {
  caf::expected<transport> t;
  std::unique_ptr<tls_peer> srv;
};

client_and_peer connect_to_peer(runtime& rt, kind k, const raw_listener& l,
                                protocol_factory f, const test_pki& pki,
                                const tls_context& sctx, tls_options opts = {}) {
  client_and_peer result{caf::error{}, nullptr};
  std::thread th{[&] {
    result.srv = std::make_unique<tls_peer>(
      ::accept4(l.fd, nullptr, nullptr, SOCK_CLOEXEC), sctx.native_handle(),
      true);
    result.srv->handshake();
  }};
  opts.server_hostname = "localhost";
  result.t = tls_connect_raw(rt, k, l, std::move(f), client_ctx(pki), opts);
  th.join();
  return result;
}

// Counts the protocols a factory made.
protocol_factory counting(std::shared_ptr<std::atomic<int>> n,
                          protocol_factory f) {
  return protocol_factory::with_loop(
    [n, f = std::move(f)](detail::multiplexer& mux) {
      ++*n;
      return f(mux);
    });
}

protocol_factory echoing(std::shared_ptr<journal> j) {
  return recording(j, [](recorder& r) {
    r.on_data = [](transport& t, const bytes& data) { t.write(data); };
  });
}

std::string text_of(const caf::config_value& x) {
  return caf::to_string(x);
}

} // namespace

SCENARIO("a TLS connection carries data both ways after its handshake") {
  auto k = any_kind();
  INFO("transport: " << name_of(k));
  test_pki pki;
  auto js = std::make_shared<journal>();
  auto jc = std::make_shared<journal>();
  auto payload = big(1024 * 1024);
  with_runtime([&](runtime& rt) {
    auto l = tls_listen(rt, k, echoing(js), server_ctx(pki.cert, pki.key));
    auto t = tls_connect(rt, k, l, recording(jc), client_ctx(pki));
    REQUIRE(t);
    REQUIRE(jc->wait_for("connection_made"));
    // Item 17: no half-close over TLS.
    CHECK_FALSE(t->can_write_eof());
    CHECK(t->write_eof() == make_error(errc::not_supported, "write_eof"));
    // Item 21: asyncio's SSL watermarks.
    CHECK(t->get_write_buffer_limits()
          == std::make_pair(size_t{128 * 1024}, size_t{512 * 1024}));
    // Item 22: the layer's keys, and the rest from the socket below.
    auto ctx_info = t->get_extra_info("sslcontext");
    REQUIRE(ctx_info);
    INFO("sslcontext: " << text_of(*ctx_info));
    CHECK(text_of(*ctx_info).find("\"check_hostname\" = true")
          != std::string::npos);
    auto cert = t->get_extra_info("peercert");
    REQUIRE(cert);
    CHECK(text_of(*cert).find("localhost") != std::string::npos);
    CHECK(text_of(*cert).find("subjectAltName") != std::string::npos);
    auto cipher = t->get_extra_info("cipher");
    REQUIRE(cipher);
    CHECK(text_of(*cipher).find("TLSv1.3") != std::string::npos);
    CHECK_FALSE(t->get_extra_info("compression"));
    auto obj = t->get_extra_info("ssl_object");
    REQUIRE(obj);
    CHECK(text_of(*obj).find("localhost") != std::string::npos);
    CHECK(t->get_extra_info("peername"));
    CHECK(t->get_extra_info("socket"));
    CHECK(t->extra_info().count("cipher") == 1);
    t->write(payload);
    REQUIRE(jc->wait([&](journal& j) {
      return j.data_size_unlocked() >= payload.size();
    }, 10s));
    CHECK(jc->data() == payload);
    CHECK(js->count("connection_made") == 1);
    // Item 20: close sends close_notify; the server's protocol sees
    // eof_received, answers with its own, and both ends finish cleanly.
    t->close();
    REQUIRE(jc->wait_for("connection_lost"));
    CHECK_FALSE(jc->lost_reason());
    REQUIRE(js->wait_for("connection_lost"));
    CHECK_FALSE(js->lost_reason());
    auto ev = js->events();
    REQUIRE(ev.size() >= 2);
    CHECK(ev[ev.size() - 2] == "eof_received");
    CHECK(jc->count("eof_received") == 0);
    l.srv.close();
  });
}

SCENARIO("a failed handshake is an error for the caller and makes no "
         "protocol") {
  auto k = any_kind();
  INFO("transport: " << name_of(k));
  test_pki pki;
  auto made_server = std::make_shared<std::atomic<int>>(0);
  auto made_client = std::make_shared<std::atomic<int>>(0);
  auto js = std::make_shared<journal>();
  auto jc = std::make_shared<journal>();
  std::string cert = pki.cert;
  std::string key = pki.key;
  std::string host = "localhost";
  std::string expected;
  SECTION("a host name that does not match") {
    host = "wrong.example";
    expected = "hostname mismatch";
  }
  SECTION("an expired certificate") {
    cert = pki.expired_cert;
    key = pki.expired_key;
    expected = "expired";
  }
  SECTION("a self-signed certificate") {
    cert = pki.self_signed_cert;
    key = pki.self_signed_key;
    expected = "self";
  }
  with_runtime([&](runtime& rt) {
    auto l = tls_listen(rt, k, counting(made_server, echoing(js)),
                        server_ctx(cert, key));
    tls_options opts;
    opts.server_hostname = host;
    auto t = tls_connect(rt, k, l, counting(made_client, recording(jc)),
                         client_ctx(pki), opts);
    REQUIRE_FALSE(t);
    INFO("error: " << describe(t.error()));
    CHECK(t.error().code() == static_cast<uint8_t>(errc::certificate_verify_failed));
    CHECK(describe(t.error()).find(expected) != std::string::npos);
    CHECK(made_client->load() == 0);
    // The server refused nothing but saw the client's alert: no protocol.
    std::this_thread::sleep_for(100ms);
    CHECK(made_server->load() == 0);
    CHECK(jc->events().empty());
    // A correct client right after is served.
    if (cert == pki.cert) {
      auto ok = tls_connect(rt, k, l, recording(jc), client_ctx(pki));
      REQUIRE(ok);
      ok->write("ping");
      REQUIRE(jc->wait([](journal& j) { return j.data_size_unlocked() >= 4; }));
      CHECK(made_server->load() == 1);
      ok->close();
      REQUIRE(jc->wait_for("connection_lost"));
    }
    l.srv.close();
  });
}

SCENARIO("TLS timeouts: zero or less is an error; a silent peer hits them") {
  auto k = any_kind();
  INFO("transport: " << name_of(k));
  test_pki pki;
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    SECTION("zero and negative timeouts are refused") {
      raw_listener l{k};
      tls_options opts;
      opts.server_hostname = "localhost";
      opts.handshake_timeout = 0ms;
      auto t = tls_connect_raw(rt, k, l, recording(j), client_ctx(pki), opts);
      REQUIRE_FALSE(t);
      CHECK(t.error().code() == static_cast<uint8_t>(errc::invalid_argument));
      opts.handshake_timeout = 1s;
      opts.shutdown_timeout = -5ms;
      auto t2 = rt.create_connection(recording(j), "127.0.0.1", 1,
                                     client_ctx(pki), opts);
      REQUIRE_FALSE(t2);
      CHECK(t2.error().code() == static_cast<uint8_t>(errc::invalid_argument));
      server_options sopts;
      sopts.tls = server_ctx(pki.cert, pki.key);
      sopts.tls_handshake_timeout = 0ms;
      CHECK_FALSE(rt.create_server(recording(j), "127.0.0.1", 0, sopts));
      CHECK(j->events().empty());
    }
    SECTION("a server that never answers the ClientHello") {
      raw_listener l{k};
      tls_options opts;
      opts.server_hostname = "localhost";
      opts.handshake_timeout = 300ms;
      auto start = std::chrono::steady_clock::now();
      auto t = tls_connect_raw(rt, k, l, recording(j), client_ctx(pki), opts);
      auto took = std::chrono::steady_clock::now() - start;
      REQUIRE_FALSE(t);
      CHECK(t.error().code() == static_cast<uint8_t>(errc::timed_out));
      CHECK(took >= 250ms);
      CHECK(took < 5s);
      CHECK(j->events().empty());
      // The socket is gone: the peer reads EOF.
      peer p{::accept4(l.fd, nullptr, nullptr, SOCK_CLOEXEC)};
      bool eof = false;
      p.recv_all(&eof, 5s);
      CHECK(eof);
    }
    SECTION("a client that vanishes in the middle of its handshake") {
      auto l = tls_listen(rt, k, echoing(j), server_ctx(pki.cert, pki.key),
                          300ms);
      auto p = connect_peer(k, l);
      // The start of a ClientHello record, then nothing.
      p.send_all(std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11));
      bool eof = false;
      p.recv_all(&eof, 5s);
      CHECK(eof);
      CHECK(j->events().empty());
      l.srv.close();
    }
    SECTION("a peer silent at shutdown") {
      raw_listener l{k};
      tls_options opts;
      opts.shutdown_timeout = 300ms;
      auto [t, srv] = connect_to_peer(rt, k, l, recording(j), pki,
                                      server_ctx(pki.cert, pki.key), opts);
      REQUIRE(t);
      t->close();
      REQUIRE(j->wait_for("connection_lost", 1, 5s));
      CHECK(j->lost_reason() == make_error(errc::timed_out));
    }
  });
}

SCENARIO("closing a TLS connection: close_notify both ways, and FIN") {
  auto k = any_kind();
  INFO("transport: " << name_of(k));
  test_pki pki;
  auto j = std::make_shared<journal>();
  // What the protocol writes in eof_received goes out before its
  // close_notify (as asyncio's).
  auto last_words = recording(j, [](recorder& r) {
    r.on_eof = [](transport& t) { t.write("last words"); };
  });
  with_runtime([&](runtime& rt) {
    raw_listener l{k};
    auto sctx = server_ctx(pki.cert, pki.key);
    auto [t, srv] = connect_to_peer(rt, k, l, last_words, pki, sctx);
    REQUIRE(t);
    REQUIRE(srv);
    const std::vector<std::string> ended{"connection_made", "data_received",
                                         "eof_received", "connection_lost"};
    SECTION("the peer's close_notify: eof_received, then ours back") {
      srv->write_all("bye");
      srv->send_close_notify();
      REQUIRE(j->wait_for("connection_lost"));
      CHECK_FALSE(j->lost_reason());
      CHECK(j->events() == ended);
      CHECK(j->data() == "bye");
      bool clean = false;
      CHECK(srv->read_all(&clean) == "last words");
      CHECK(clean);
    }
    SECTION("the peer's FIN without close_notify is not an error: "
            "eof_received, as asyncio's") {
      srv->write_all("bye");
      srv->shutdown_write();
      REQUIRE(j->wait_for("connection_lost"));
      CHECK_FALSE(j->lost_reason());
      CHECK(j->data() == "bye");
      CHECK(j->events() == ended);
      bool clean = false;
      CHECK(srv->read_all(&clean) == "last words");
      CHECK(clean);
    }
    SECTION("close flushes, sends close_notify and waits for the answer") {
      auto payload = big(2 * 1024 * 1024);
      t->write(payload);
      t->close();
      CHECK(t->is_closing());
      bool clean = false;
      auto got = srv->read_all(&clean);
      CHECK(clean);
      CHECK(got == payload);
      CHECK(j->count("connection_lost") == 0);
      srv->send_close_notify();
      REQUIRE(j->wait_for("connection_lost"));
      CHECK_FALSE(j->lost_reason());
    }
    t->abort();
    REQUIRE(j->wait_for("connection_lost"));
    CHECK(j->count("connection_lost") == 1);
  });
}

SCENARIO("a TLS protocol that closes in eof_received after the peer's FIN "
         "ends at once") {
  // No close_notify can follow a bare FIN: the layer does not wait for one
  // (it waited for the shutdown timeout, then said timed_out).
  auto k = any_kind();
  INFO("transport: " << name_of(k));
  test_pki pki;
  auto j = std::make_shared<journal>();
  auto closes = recording(j, [](recorder& r) {
    r.on_eof = [](transport& t) {
      t.write("bye");
      t.close();
    };
    r.keep_open = true;
  });
  with_runtime([&](runtime& rt) {
    raw_listener l{k};
    tls_options opts;
    opts.shutdown_timeout = 10s;
    auto [t, srv] = connect_to_peer(rt, k, l, closes, pki,
                                    server_ctx(pki.cert, pki.key), opts);
    REQUIRE(t);
    REQUIRE(srv);
    srv->write_all("hello");
    srv->shutdown_write();
    auto t0 = std::chrono::steady_clock::now();
    REQUIRE(j->wait_for("connection_lost", 1, 5s));
    CHECK(std::chrono::steady_clock::now() - t0 < 3s);
    CHECK_FALSE(j->lost_reason());
    CHECK(j->data() == "hello");
    bool clean = false;
    CHECK(srv->read_all(&clean) == "bye");
    CHECK(clean);
  });
}

SCENARIO("TLS flow control: 512 KiB write watermark, reading paused at "
         "256 KiB of ciphertext") {
  auto k = any_kind();
  INFO("transport: " << name_of(k));
  test_pki pki;
  auto j = std::make_shared<journal>();
  auto payload = big(4 * 1024 * 1024);
  with_runtime([&](runtime& rt) {
    raw_listener l{k};
    // A plain connection first, upgraded with start_tls, so that the test
    // can watch the transport below.
    auto [plain, p] = l.connect(rt, recording(j));
    REQUIRE(plain);
    REQUIRE(j->wait_for("connection_made"));
    auto sctx = server_ctx(pki.cert, pki.key);
    tls_peer srv{p.release(), sctx.native_handle(), true};
    std::thread hs{[&] { srv.handshake(); }};
    tls_options opts;
    opts.server_hostname = "localhost";
    auto t = start_tls(*plain, plain->get_protocol(), client_ctx(pki), opts);
    if (!t)
      srv.shutdown_write();
    hs.join();
    INFO("start_tls: " << (t ? std::string{"ok"} : describe(t.error())));
    REQUIRE(t);
    SECTION("writing: pause at the high watermark, resume at the low") {
      // More than loopback's socket buffers take.
      payload = big(24 * 1024 * 1024);
      for (size_t i = 0; i < payload.size(); i += 65536)
        t->write(payload.substr(i, 65536));
      REQUIRE(j->wait_for("pause_writing"));
      CHECK(t->get_write_buffer_size() >= 256 * 1024);
      auto got = srv.read_n(payload.size());
      CHECK(got == payload);
      REQUIRE(j->wait_for("resume_writing"));
    }
    SECTION("reading: the layer stops the transport below") {
      t->pause_reading();
      std::thread writer{[&] { srv.write_all(payload); }};
      REQUIRE(eventually([&plain = plain] { return !plain->is_reading(); }));
      std::this_thread::sleep_for(100ms);
      CHECK(j->data_size_unlocked() == 0);
      t->resume_reading();
      REQUIRE(j->wait([&](journal& jj) {
        return jj.data_size_unlocked() >= payload.size();
      }, 10s));
      writer.join();
      CHECK(j->data() == payload);
      CHECK(plain->is_reading());
    }
    t->abort();
    REQUIRE(j->wait_for("connection_lost"));
  });
}

SCENARIO("start_tls upgrades a live connection and loses no byte in flight") {
  auto k = any_kind();
  INFO("transport: " << name_of(k));
  test_pki pki;
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    auto sctx = server_ctx(pki.cert, pki.key);
    SECTION("not on a datagram transport") {
      auto t = rt.create_datagram_endpoint(
        [] { return std::make_unique<datagram_protocol>(); },
        {endpoint::inet("127.0.0.1", 0)});
      REQUIRE(t);
      auto up = start_tls(*t, t->get_protocol(), sctx,
                          {true, "", 60s, 30s, {}});
      REQUIRE_FALSE(up);
      CHECK(up.error().code() == static_cast<uint8_t>(errc::not_supported));
      t->close();
    }
    SECTION("STARTTLS with the ClientHello right behind it") {
      // A protocol that answers a STARTTLS line by starting TLS with what
      // came after it, then echoes through the TLS transport.
      auto tls = std::make_shared<transport>();
      auto l = listen(rt, k, recording(j, [&](recorder& r) {
        r.on_data = [&, tls, buf = std::make_shared<std::string>()](
                      transport& t, const bytes& data) {
          if (*tls) {
            tls->write(data);
            return;
          }
          buf->append(data.begin(), data.end());
          auto pos = buf->find('\n');
          if (pos == std::string::npos)
            return;
          tls_options opts;
          opts.server_side = true;
          opts.unread = bytes(buf->begin() + static_cast<long>(pos) + 1,
                              buf->end());
          // No Catch assertions here: this runs on the loop thread.
          auto up = start_tls(t, t.get_protocol(), sctx, opts);
          if (up)
            *tls = *up;
          j->add(up ? "upgraded" : "start_tls failed");
        };
      }));
      auto p = connect_peer(k, l);
      auto cctx = client_ctx(pki);
      tls_peer cli{p.release(), cctx.native_handle(), false, "localhost"};
      SSL_set1_host(cli.native(), "localhost");
      // No wait for an answer: the ClientHello follows at once.
      ::send(cli.fd(), "STARTTLS\n", 9, MSG_NOSIGNAL);
      REQUIRE(cli.handshake());
      // One thread only: an SSL object is not for concurrent use.
      auto payload = big(512 * 1024);
      std::string got;
      for (size_t i = 0; i < payload.size(); i += 16384) {
        cli.write_all(payload.substr(i, 16384));
        got += cli.read_n(std::min<size_t>(16384, payload.size() - i));
      }
      INFO("echoed " << got.size() << " of " << payload.size()
                     << "; events: " << j->events().size());
      CHECK(got == payload);
      CHECK(j->data().substr(0, 9) == "STARTTLS\n");
      CHECK(j->count("upgraded") == 1);
      cli.send_close_notify();
      REQUIRE(j->wait_for("connection_lost"));
      CHECK_FALSE(j->lost_reason());
      l.srv.close();
    }
    SECTION("TLS inside TLS") {
      // Outer TLS from a server; the inner layer is started by both ends.
      auto inner = std::make_shared<transport>();
      auto js = std::make_shared<journal>();
      auto l = tls_listen(rt, k, recording(js, [&, inner](recorder& r) {
        r.on_data = [&, inner](transport& t, const bytes& data) {
          if (*inner) {
            inner->write(data);
            return;
          }
          tls_options opts;
          opts.server_side = true;
          auto up = start_tls(t, t.get_protocol(), sctx, opts);
          if (up)
            *inner = *up;
          js->add(up ? "upgraded" : "start_tls failed");
        };
      }), sctx);
      auto outer = tls_connect(rt, k, l, recording(j), client_ctx(pki));
      REQUIRE(outer);
      REQUIRE(j->wait_for("connection_made"));
      outer->write("INNER\n");
      REQUIRE(js->wait_for("upgraded"));
      tls_options opts;
      opts.server_hostname = "localhost";
      auto t = start_tls(*outer, outer->get_protocol(), client_ctx(pki), opts);
      REQUIRE(t);
      auto payload = big(300 * 1024);
      t->write(payload);
      REQUIRE(j->wait([&](journal& jj) {
        return jj.data_size_unlocked() >= payload.size();
      }, 10s));
      CHECK(j->data() == payload);
      auto cipher = t->get_extra_info("cipher");
      REQUIRE(cipher);
      // Extra info not of the inner layer comes from the outer one.
      CHECK(t->get_extra_info("peername"));
      t->close();
      REQUIRE(j->wait_for("connection_lost"));
      CHECK_FALSE(j->lost_reason());
      l.srv.close();
    }
  });
}

SCENARIO("garbage instead of a ClientHello ends only that connection") {
  auto k = any_kind();
  INFO("transport: " << name_of(k));
  test_pki pki;
  auto made = std::make_shared<std::atomic<int>>(0);
  auto js = std::make_shared<journal>();
  auto jc = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    auto l = tls_listen(rt, k, counting(made, echoing(js)),
                        server_ctx(pki.cert, pki.key));
    auto good = tls_connect(rt, k, l, recording(jc), client_ctx(pki));
    REQUIRE(good);
    auto p = connect_peer(k, l);
    p.send_all("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    bool eof = false;
    p.recv_all(&eof, 5s);
    CHECK(eof);
    // The good connection's server side finishes its handshake on its own
    // loop, maybe after the garbage's end on another.
    CHECK(eventually([&] { return made->load() == 1; }));
    good->write("still here");
    REQUIRE(jc->wait([](journal& j) { return j.data_size_unlocked() >= 10; }));
    CHECK(jc->data() == "still here");
    CHECK(made->load() == 1);
    good->close();
    REQUIRE(jc->wait_for("connection_lost"));
    l.srv.close();
  });
}

SCENARIO("writes made during the handshake pause the protocol, and the "
         "handshake's end resumes it") {
  auto k = any_kind();
  INFO("transport: " << name_of(k));
  test_pki pki;
  auto j = std::make_shared<journal>();
  auto payload = big(1024 * 1024);
  with_runtime([&](runtime& rt) {
    raw_listener l{k};
    auto [plain, p] = l.connect(rt, recording(j));
    REQUIRE(plain);
    REQUIRE(j->wait_for("connection_made"));
    auto sctx = server_ctx(pki.cert, pki.key);
    tls_peer srv{p.release(), sctx.native_handle(), true};
    tls_options opts;
    opts.server_hostname = "localhost";
    auto t = start_tls(*plain, plain->get_protocol(), client_ctx(pki), opts);
    REQUIRE(t);
    // Item 22: the context at once, the session's keys only after.
    CHECK(t->get_extra_info("sslcontext"));
    CHECK_FALSE(t->get_extra_info("cipher"));
    CHECK_FALSE(t->get_extra_info("peercert"));
    CHECK(t->get_extra_info("peername"));
    // The peer has not answered the ClientHello: all of it waits.
    t->write(payload);
    REQUIRE(j->wait_for("pause_writing"));
    CHECK(t->get_write_buffer_size() >= payload.size());
    std::string got;
    std::thread peer_side{[&] {
      if (srv.handshake())
        got = srv.read_n(payload.size());
    }};
    peer_side.join();
    CHECK(got == payload);
    REQUIRE(j->wait_for("resume_writing"));
    t->abort();
    REQUIRE(j->wait_for("connection_lost"));
  });
}

SCENARIO("pause_reading inside data_received stops TLS deliveries at once") {
  auto k = any_kind();
  INFO("transport: " << name_of(k));
  test_pki pki;
  auto js = std::make_shared<journal>();
  auto jc = std::make_shared<journal>();
  auto payload = big(1024 * 1024);
  with_runtime([&](runtime& rt) {
    auto l = tls_listen(rt, k, recording(js, [&](recorder& r) {
      r.on_made = [payload](transport& t) { t.write(payload); };
    }), server_ctx(pki.cert, pki.key));
    auto t = tls_connect(rt, k, l, recording(jc, [](recorder& r) {
      r.on_data = [first = true](transport& tt, const bytes&) mutable {
        if (first)
          tt.pause_reading();
        first = false;
      };
    }), client_ctx(pki));
    REQUIRE(t);
    REQUIRE(jc->wait_for("data_received"));
    std::this_thread::sleep_for(200ms);
    CHECK(jc->count("data_received") == 1);
    t->resume_reading();
    REQUIRE(jc->wait([&](journal& jj) {
      return jj.data_size_unlocked() >= payload.size();
    }, 10s));
    CHECK(jc->data() == payload);
    t->close();
    REQUIRE(jc->wait_for("connection_lost"));
    l.srv.close();
  });
}

SCENARIO("close() during the handshake aborts") {
  auto k = any_kind();
  INFO("transport: " << name_of(k));
  test_pki pki;
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    raw_listener l{k};
    auto [plain, p] = l.connect(rt, recording(j));
    REQUIRE(plain);
    REQUIRE(j->wait_for("connection_made"));
    tls_options opts;
    opts.server_hostname = "localhost";
    auto t = start_tls(*plain, plain->get_protocol(), client_ctx(pki), opts);
    REQUIRE(t);
    t->write("never sent in clear");
    t->close();
    REQUIRE(j->wait_for("connection_lost"));
    CHECK_FALSE(j->lost_reason());
    CHECK(j->count("connection_lost") == 1);
    // The peer got the ClientHello at most, then the connection ended.
    bool eof = false;
    auto got = p.recv_all(&eof, 5s);
    CHECK(eof);
    CHECK(got.find("never sent") == std::string::npos);
    CHECK(plain->is_closing());
  });
}

SCENARIO("a garbage record after the handshake ends the connection with "
         "tls_error, and only it") {
  auto k = any_kind();
  INFO("transport: " << name_of(k));
  test_pki pki;
  auto j = std::make_shared<journal>();
  auto js = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    raw_listener l{k};
    auto sctx = server_ctx(pki.cert, pki.key);
    auto [t, srv] = connect_to_peer(rt, k, l, recording(j), pki, sctx);
    REQUIRE(t);
    // Another TLS connection on the same runtime, untouched by the fault.
    auto other_srv = tls_listen(rt, k, echoing(js), sctx);
    auto other = tls_connect(rt, k, other_srv, recording(js), client_ctx(pki));
    REQUIRE(other);
    srv->write_all("fine");
    REQUIRE(j->wait([](journal& jj) { return jj.data_size_unlocked() >= 4; }));
    // An application-data record whose MAC cannot match.
    std::string junk("\x17\x03\x03\x00\x20", 5);
    junk += std::string(32, '\x5a');
    ::send(srv->fd(), junk.data(), junk.size(), MSG_NOSIGNAL);
    REQUIRE(j->wait_for("connection_lost"));
    CHECK(code_of(j->lost_reason()) == errc::tls_error);
    CHECK(j->data() == "fine");
    other->write("still here");
    REQUIRE(js->wait([](journal& jj) { return jj.data_size_unlocked() >= 20; }));
    other->close();
    other_srv.srv.close();
  });
}

SCENARIO("records that came before a reset are delivered, then "
         "connection_lost(connection_reset)") {
  auto k = GENERATE(kind::tcp, kind::unix_socket);
  auto paused = GENERATE(false, true);
  INFO("transport: " << name_of(k) << (paused ? ", protocol paused" : ""));
  with_runtime([&](runtime& rt) {
    test_pki pki;
    auto j = std::make_shared<journal>();
    auto l = tls_listen(rt, k, recording(j, [paused](recorder& r) {
      r.on_made = [paused](transport& t) {
        if (paused)
          t.pause_reading();
        t.write("greeting\n");
      };
    }), server_ctx(pki.cert, pki.key));
    auto p = connect_peer(k, l);
    auto cctx = client_ctx(pki);
    {
      tls_peer cli{p.release(), cctx.native_handle(), false, "localhost"};
      REQUIRE(cli.handshake());
      // The greeting waits unread, so closing resets the connection.
      pollfd pfd{cli.fd(), POLLIN, 0};
      REQUIRE(::poll(&pfd, 1, 5000) == 1);
      REQUIRE(j->wait_for("connection_made"));
      cli.write_all("hello\n");
      std::this_thread::sleep_for(50ms);
    }
    if (paused) {
      std::this_thread::sleep_for(100ms);
      CHECK(j->count("connection_lost") == 0);
      j->handle().resume_reading();
    }
    REQUIRE(j->wait_for("connection_lost"));
    CHECK(j->data() == "hello\n");
    CHECK(j->count("eof_received") == 0);
    CHECK(code_of(j->lost_reason()) == errc::connection_reset);
  });
}

SCENARIO("start_tls with an answer: after the handshake with the transport, "
         "or with the handshake's error") {
  auto k = any_kind();
  INFO("transport: " << name_of(k));
  test_pki pki;
  test_pki other;
  auto ok = GENERATE(true, false);
  INFO(std::string{ok ? "the server's CA is trusted"
                       : "another CA is trusted"});
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    raw_listener l{k};
    auto [plain, p] = l.connect(rt, recording(j));
    REQUIRE(plain);
    REQUIRE(j->wait_for("connection_made"));
    auto sctx = server_ctx(pki.cert, pki.key);
    tls_peer srv{p.release(), sctx.native_handle(), true};
    tls_options opts;
    opts.server_hostname = "localhost";
    struct answer {
      caf::expected<transport> t{caf::error{}};
      bool had_cipher = false;
      bool on_loop = false;
    };
    auto answered = std::make_shared<std::promise<answer>>();
    auto result = answered->get_future();
    auto t = start_tls(*plain, plain->get_protocol(),
                       client_ctx(ok ? pki : other), opts,
                       [&rt, answered](caf::expected<transport> x) {
                         answer a;
                         a.on_loop = rt.loops().on_loop_thread();
                         a.had_cipher
                           = x && x->get_extra_info("cipher").has_value();
                         a.t = std::move(x);
                         answered->set_value(std::move(a));
                       });
    REQUIRE(t);
    // Not before the peer has answered the ClientHello.
    CHECK(result.wait_for(200ms) == std::future_status::timeout);
    std::thread hs{[&] { srv.handshake(); }};
    auto ready = result.wait_for(10s) == std::future_status::ready;
    if (!ready)
      srv.shutdown_write();
    hs.join();
    REQUIRE(ready);
    auto a = result.get();
    CHECK(a.on_loop);
    if (ok) {
      REQUIRE(a.t);
      CHECK(a.t->actor() == t->actor());
      CHECK(a.had_cipher);
      t->write("after the answer");
      CHECK(srv.read_n(16) == "after the answer");
      srv.write_all("back");
      REQUIRE(j->wait([](journal& jj) { return jj.data_size_unlocked() >= 4; }));
      CHECK(j->data() == "back");
      t->abort();
    } else {
      REQUIRE_FALSE(a.t);
      CHECK(a.t.error() == make_error(errc::certificate_verify_failed));
      // The protocol hears the same error.
      REQUIRE(j->wait_for("connection_lost"));
      CHECK(j->lost_reason() == make_error(errc::certificate_verify_failed));
    }
    REQUIRE(j->wait_for("connection_lost"));
  });
}
