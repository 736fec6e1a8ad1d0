// Servers, as asyncio's create_server has them: listening options, errors that name
// the address, accepting, and closing with or without the clients.

#include <catch2/catch.hpp>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <thread>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <caf/after.hpp>
#include <caf/scoped_actor.hpp>

#include "support/harness.hpp"
#include "support/tls_support.hpp"
#include "tact/protocols/echo.hpp"
#include "tact/runtime/url.hpp"
#include "tact/transports/tls.hpp"

using namespace tact;
using namespace tact::test;

namespace {

protocol_factory echo() {
  return [] { return std::make_unique<echo_protocol>(); };
}

bool ipv6_available() {
  auto fd = ::socket(AF_INET6, SOCK_STREAM, 0);
  if (fd < 0)
    return false;
  sockaddr_in6 addr{};
  addr.sin6_family = AF_INET6;
  addr.sin6_addr = in6addr_loopback;
  auto ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return ok;
}

// A blocking connect to `l`: 0 (then closed at once) or the errno.
int connect_errno(kind k, const listening& l) {
  auto fd = ::socket(k == kind::unix_socket ? AF_UNIX : AF_INET,
                     SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  int rc;
  if (k == kind::unix_socket) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, l.unix_path.c_str(),
                 sizeof(addr.sun_path) - 1);
    rc = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  } else {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(l.port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    rc = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  }
  auto err = rc == 0 ? 0 : errno;
  ::close(fd);
  return err;
}

// Waits until the actor of `srv` has ended.
void wait_gone(runtime& rt, const server& srv) {
  caf::scoped_actor self{rt.system()};
  self->monitor(srv.actor());
  bool gone = false;
  self->receive([&](const caf::down_msg&) { gone = true; },
                caf::after(std::chrono::seconds{10}) >> [] {});
  REQUIRE(gone);
}

} // namespace

SCENARIO("server_options default to asyncio's") {
  server_options opts;
  CHECK(opts.backlog == 100);
  CHECK(opts.reuse_address);
  CHECK_FALSE(opts.reuse_port);
}

SCENARIO("a server reports its real addresses") {
  with_runtime([](runtime& rt) {
    auto srv = rt.create_server(echo(), "127.0.0.1", 0);
    REQUIRE(srv);
    CHECK(srv->port() != 0);
    REQUIRE(srv->urls().size() == 1);
    CHECK(srv->urls()[0] == "tcp://127.0.0.1:" + std::to_string(srv->port()));
    CHECK(srv->is_serving());
    auto path = temp_socket_path();
    auto usrv = rt.create_unix_server(echo(), path);
    REQUIRE(usrv);
    CHECK(usrv->urls() == std::vector<std::string>{"unix://" + path});
    usrv->close();
    // Closing a Unix server removes its socket file.
    CHECK(eventually([&] { return ::access(path.c_str(), F_OK) != 0; }));
    // A TLS server says so in its URLs (it said tcp:// and unix://).
    test_pki pki;
    auto ctx = tls_context::server({.cert_file = pki.cert,
                                    .key_file = pki.key});
    REQUIRE(ctx);
    server_options topts;
    topts.tls = *ctx;
    auto tsrv = rt.create_server(echo(), "127.0.0.1", 0, topts);
    REQUIRE(tsrv);
    CHECK(tsrv->urls()
          == std::vector<std::string>{"tls://127.0.0.1:"
                                      + std::to_string(tsrv->port())});
    auto tpath = temp_socket_path();
    auto tusrv = rt.create_unix_server(echo(), tpath, topts);
    REQUIRE(tusrv);
    CHECK(tusrv->urls() == std::vector<std::string>{"tls+unix://" + tpath});
    auto parsed = parse_url(tusrv->urls()[0]);
    REQUIRE(parsed);
    CHECK(parsed->path == tpath);
    CHECK(to_string(*parsed) == tusrv->urls()[0]);
  });
}

SCENARIO("a bind failure names the address") {
  with_runtime([](runtime& rt) {
    auto first = rt.create_server(echo(), "127.0.0.1", 0);
    REQUIRE(first);
    auto second = rt.create_server(echo(), "127.0.0.1", first->port(),
                                   server_options{.reuse_address = false});
    REQUIRE_FALSE(second);
    CHECK(code_of(second.error()) == errc::address_in_use);
    CHECK(describe(second.error()).find("127.0.0.1:"
                                        + std::to_string(first->port()))
          != std::string::npos);
    auto bad = rt.create_server(echo(), "no-such-host.invalid", 0);
    REQUIRE_FALSE(bad);
    CHECK(code_of(bad.error()) == errc::name_resolution_failed);
  });
}

SCENARIO("SO_REUSEADDR is on by default") {
  with_runtime([](runtime& rt) {
    auto srv = rt.create_server(echo(), "127.0.0.1", 0);
    REQUIRE(srv);
    auto port = srv->port();
    {
      // The server side closes first, so its end stays in TIME_WAIT.
      listening l{*srv, {}, port};
      auto p = connect_peer(kind::tcp, l);
      p.send_all("x");
      CHECK(p.recv_n(1) == "x");
      srv->close_clients();
      bool eof = false;
      p.recv_all(&eof, 2s);
      CHECK(eof);
    }
    srv->close();
    REQUIRE(eventually([&] { return srv->active_connections() == 0; }));
    auto again = rt.create_server(echo(), "127.0.0.1", port);
    CHECK(again);
  });
}

SCENARIO("SO_REUSEPORT is on request") {
  with_runtime([](runtime& rt) {
    server_options shared{.reuse_port = true};
    auto a = rt.create_server(echo(), "127.0.0.1", 0, shared);
    REQUIRE(a);
    auto b = rt.create_server(echo(), "127.0.0.1", a->port(), shared);
    CHECK(b);
    auto c = rt.create_server(echo(), "127.0.0.1", a->port());
    CHECK_FALSE(c);
  });
}

SCENARIO("IPv6 listening sockets are IPV6_V6ONLY") {
  if (!ipv6_available()) {
    WARN("IPv6 is not available here; skipped");
    return;
  }
  with_runtime([](runtime& rt) {
    auto v6 = rt.create_server(echo(), "::", 0);
    REQUIRE(v6);
    // Without V6ONLY the wildcard IPv6 socket would own the IPv4 port too.
    auto v4 = rt.create_server(echo(), "0.0.0.0", v6->port());
    CHECK(v4);
    auto loop6 = rt.create_server(echo(), "::1", 0);
    REQUIRE(loop6);
    CHECK(loop6->urls()[0] == "tcp://[::1]:" + std::to_string(loop6->port()));
  });
}

SCENARIO("a burst of connections is accepted and served") {
  with_runtime([](runtime& rt) {
    auto srv = rt.create_server(echo(), "127.0.0.1", 0);
    REQUIRE(srv);
    listening l{*srv, {}, srv->port()};
    std::vector<peer> peers;
    for (int i = 0; i < 150; ++i)
      peers.push_back(connect_peer(kind::tcp, l));
    for (size_t i = 0; i < peers.size(); ++i) {
      auto msg = "peer " + std::to_string(i);
      peers[i].send_all(msg);
      CHECK(peers[i].recv_n(msg.size()) == msg);
    }
    CHECK(srv->active_connections() == 150);
  });
}

SCENARIO("closing a server refuses new connections and keeps live ones") {
  auto k = GENERATE(kind::tcp, kind::unix_socket);
  INFO("transport: " << name_of(k));
  with_runtime([&](runtime& rt) {
    auto l = listen(rt, k, echo());
    auto live = connect_peer(k, l);
    live.send_all("a");
    CHECK(live.recv_n(1) == "a");
    l.srv.close();
    CHECK_FALSE(l.srv.is_serving());
    // As with asyncio's close(), a connection tried once it has returned
    // is refused (a Unix server's file is gone).
    CHECK(connect_errno(k, l) == (k == kind::tcp ? ECONNREFUSED : ENOENT));
    live.send_all("b");
    CHECK(live.recv_n(1) == "b");
    SECTION("close_clients flushes and closes them") {
      l.srv.close_clients();
      bool eof = false;
      live.recv_all(&eof, 2s);
      CHECK(eof);
    }
    SECTION("abort_clients drops them") {
      l.srv.abort_clients();
      bool eof = false;
      live.recv_all(&eof, 2s);
      CHECK(eof);
    }
    CHECK(eventually([&] { return l.srv.active_connections() == 0; }));
  });
}

SCENARIO("close() from a thread that runs no loop refuses at once") {
  auto k = GENERATE(kind::tcp, kind::unix_socket);
  INFO("transport: " << name_of(k));
  with_runtime([&](runtime& rt) {
    // Closed from this thread, never a loop's: without the sockets shut
    // down at once, the loop's close would come a moment later.
    for (int round = 0; round < 50; ++round) {
      auto l = listen(rt, k, echo());
      REQUIRE(connect_errno(k, l) == 0);
      l.srv.close();
      CHECK(connect_errno(k, l) == (k == kind::tcp ? ECONNREFUSED : ENOENT));
    }
  });
}

SCENARIO("a Unix server on a path another server had keeps its file when "
         "the other one closes") {
  // Started right after the other's close(), or over it while it listens
  // (as asyncio's, a new server removes a socket file in its way, even a
  // live server's): either way the other's loop closes its socket later,
  // and the path is the new server's.
  auto close_first = GENERATE(true, false);
  INFO("the other closed " << (close_first ? "first" : "after"));
  with_runtime([&](runtime& rt) {
    for (int round = 0; round < 20; ++round) {
      auto old = listen(rt, kind::unix_socket, echo());
      if (close_first)
        old.srv.close();
      auto next = rt.create_unix_server(echo(), old.unix_path);
      REQUIRE(next);
      old.srv.close();
      wait_gone(rt, old.srv);
      listening again{*next, old.unix_path, 0};
      auto p = connect_peer(kind::unix_socket, again);
      p.send_all("x");
      CHECK(p.recv_n(1) == "x");
      next->close();
    }
  });
}

SCENARIO("idle_timeout ends a connection that moves no byte either way; "
         "keepalive is set on accepted TCP connections") {
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    server_options opts;
    opts.idle_timeout = 300ms;
    opts.keepalive = keepalive_options{std::chrono::seconds{7},
                                       std::chrono::seconds{3}, 2};
    std::atomic<int> fd{-1};
    auto echoing = recording(j, [&fd](recorder& r) {
      r.on_made = [&fd](transport& t) {
        fd = static_cast<int>(
          caf::get<int64_t>(*t.get_extra_info("socket")));
      };
      r.on_data = [](transport& t, const bytes& data) { t.write(data); };
    });
    auto srv = rt.create_server(echoing, "127.0.0.1", 0, opts);
    REQUIRE(srv);
    auto p = connect_peer(kind::tcp, listening{*srv, {}, srv->port()});
    REQUIRE(eventually([&] { return fd.load() >= 0; }));
    // The kernel's keepalive settings on the server's end.
    auto opt = [&](int level, int name) {
      int value = -1;
      socklen_t len = sizeof(value);
      ::getsockopt(fd.load(), level, name, &value, &len);
      return value;
    };
    CHECK(opt(SOL_SOCKET, SO_KEEPALIVE) == 1);
    CHECK(opt(IPPROTO_TCP, TCP_KEEPIDLE) == 7);
    CHECK(opt(IPPROTO_TCP, TCP_KEEPINTVL) == 3);
    CHECK(opt(IPPROTO_TCP, TCP_KEEPCNT) == 2);
    // A byte each 100 ms for a second: never idle for 300 ms.
    auto quiet_since = std::chrono::steady_clock::now();
    for (int i = 0; i < 10; ++i) {
      p.send_all("x");
      CHECK(p.recv_n(1) == "x");
      quiet_since = std::chrono::steady_clock::now();
      std::this_thread::sleep_for(100ms);
    }
    CHECK(j->count("connection_lost") == 0);
    // Then silence: the server ends it, and says why.
    REQUIRE(j->wait_for("connection_lost", 1, 5s));
    auto waited = std::chrono::steady_clock::now() - quiet_since;
    CHECK(waited >= 250ms);
    CHECK(waited < 3s);
    CHECK(code_of(j->lost_reason()) == errc::timed_out);
    // The peer hears the end.
    CHECK(p.readable_within(2s));
    // Wrong values are errors.
    server_options bad;
    bad.idle_timeout = -1ms;
    CHECK_FALSE(rt.create_server(echoing, "127.0.0.1", 0, bad));
    server_options bad_keepalive;
    bad_keepalive.keepalive = keepalive_options{std::chrono::seconds{0}};
    CHECK_FALSE(rt.create_server(echoing, "127.0.0.1", 0, bad_keepalive));
  });
}

SCENARIO("create_connection takes the same idle timeout and keepalive") {
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    raw_listener l{kind::tcp};
    connection_options opts;
    opts.idle_timeout = 300ms;
    opts.keepalive = keepalive_options{std::chrono::seconds{9},
                                       std::chrono::seconds{4}, 3};
    auto t = rt.create_connection(recording(j), "127.0.0.1", l.port, opts);
    REQUIRE(t);
    peer p{::accept4(l.fd, nullptr, nullptr, SOCK_CLOEXEC)};
    REQUIRE(p.fd() >= 0);
    auto fd = static_cast<int>(caf::get<int64_t>(*t->get_extra_info("socket")));
    auto opt = [&](int level, int name) {
      int value = -1;
      socklen_t len = sizeof(value);
      ::getsockopt(fd, level, name, &value, &len);
      return value;
    };
    CHECK(opt(SOL_SOCKET, SO_KEEPALIVE) == 1);
    CHECK(opt(IPPROTO_TCP, TCP_KEEPIDLE) == 9);
    CHECK(opt(IPPROTO_TCP, TCP_KEEPINTVL) == 4);
    CHECK(opt(IPPROTO_TCP, TCP_KEEPCNT) == 3);
    // Writes count as movement too.
    for (int i = 0; i < 6; ++i) {
      t->write("y");
      CHECK(p.recv_n(1) == "y");
      std::this_thread::sleep_for(100ms);
    }
    CHECK(j->count("connection_lost") == 0);
    auto quiet_since = std::chrono::steady_clock::now();
    REQUIRE(j->wait_for("connection_lost", 1, 5s));
    auto waited = std::chrono::steady_clock::now() - quiet_since;
    CHECK(waited >= 150ms);
    CHECK(waited < 3s);
    CHECK(code_of(j->lost_reason()) == errc::timed_out);
    CHECK(p.readable_within(2s));
    // Unix sockets take the idle timeout; keepalive is TCP's.
    raw_listener u{kind::unix_socket};
    connection_options unix_opts;
    unix_opts.keepalive = keepalive_options{};
    CHECK(code_of(rt.create_unix_connection(recording(j), u.path, unix_opts)
                    .error())
          == errc::invalid_argument);
    connection_options bad;
    bad.idle_timeout = -5ms;
    CHECK(code_of(rt.create_connection(recording(j), "127.0.0.1", l.port, bad)
                    .error())
          == errc::invalid_argument);
  });
}

SCENARIO("a server from a URL: tcp, unix, tls and tls+unix, or a clear error") {
  test_pki pki;
  with_runtime([&](runtime& rt) {
    auto echo = [] { return std::make_unique<echo_protocol>(); };
    auto path = temp_socket_path();
    auto tls_path = temp_socket_path();
    auto query = "?cert=" + pki.cert + "&key=" + pki.key;
    for (const auto& text : {std::string{"tcp://127.0.0.1:0"},
                             "unix://" + path,
                             "tls://127.0.0.1:0" + query,
                             "tls+unix://" + tls_path + query}) {
      INFO(text);
      auto u = parse_url(text);
      REQUIRE(u);
      auto srv = rt.create_server(echo, *u);
      REQUIRE(srv);
      REQUIRE(srv->urls().size() == 1);
      // What it reports is the scheme it was asked for.
      CHECK(srv->urls().front().rfind(u->scheme + "://", 0) == 0);
      srv->close();
    }
    auto udp = parse_url("udp://127.0.0.1:0");
    REQUIRE(udp);
    CHECK(code_of(rt.create_server(echo, *udp).error())
          == errc::invalid_argument);
    auto no_key = parse_url("tls://127.0.0.1:0?cert=" + pki.cert);
    REQUIRE(no_key);
    CHECK(code_of(rt.create_server(echo, *no_key).error())
          == errc::invalid_argument);
  });
}
