// Distribution (docs/distributed.md): a connection whose transport
// runs here and whose protocol is an actor on another process, reached
// over CAF's BASP; that process dying ends the connection.

#include <catch2/catch.hpp>

#include <csignal>
#include <cstdlib>
#include <string>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <caf/after.hpp>
#include <caf/scoped_actor.hpp>

#include "support/harness.hpp"
#include "support/node.hpp"
#include "support/tls_support.hpp"
#include "tact/runtime/messages.hpp"

using namespace tact;
using namespace tact::test;

namespace {

// Bytes sent in one go through the other node; the sanitizer builds, where
// CAF's serialization runs many times slower, send less.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr size_t bulk = 30000;
#else
constexpr size_t bulk = 300000;
#endif

runtime_options distributed() {
  runtime_options opts;
  opts.distributed = true;
  return opts;
}

// The second node's port, from its `published on PORT` line.
uint16_t published_port(child& node) {
  REQUIRE(node.wait_for("published on "));
  auto& out = node.output();
  auto at = out.find("published on ") + 13;
  return static_cast<uint16_t>(std::stoi(out.substr(at)));
}

// A new protocol actor from the maker published at `port`.
caf::actor remote_protocol(runtime& rt, uint16_t port) {
  auto maker = rt.remote_actor("127.0.0.1", port);
  REQUIRE(maker);
  caf::scoped_actor self{rt.system()};
  caf::actor result;
  self->request(*maker, std::chrono::seconds{10}, make_atom::value)
    .receive([&](caf::actor& a) { result = std::move(a); },
             [&](caf::error& err) { FAIL("make: " << describe(err)); });
  REQUIRE(result);
  return result;
}

// A port bound and not listening, while it lives: connecting is refused.
struct refused_port {
  refused_port() {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr))
            == 0);
    socklen_t len = sizeof(addr);
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    number = ntohs(addr.sin_port);
  }

  ~refused_port() {
    ::close(fd);
  }

  int fd = -1;
  uint16_t number = 0;
};

} // namespace

SCENARIO("a protocol actor on another process serves a connection made "
         "here") {
  with_runtime([](runtime& rt) {
    REQUIRE(node_reports_do_not_halt());
    child node{{TACT_TEST_NODE}};
    auto proto = remote_protocol(rt, published_port(node));
    raw_listener far{kind::tcp};
    auto [t, peer_end] = far.connect(rt, [proto] { return proto; });
    REQUIRE(t);
    // Bytes go to the other process and come back upper-cased through a
    // transport handle that crossed with connection_made.
    peer_end.send_all("hello over basp");
    CHECK(peer_end.recv_n(15, 30s) == "HELLO OVER BASP");
    peer_end.send_all(std::string(bulk, 'x'));
    CHECK(peer_end.recv_n(bulk, 60s) == std::string(bulk, 'X'));
    // eof_received is a request across nodes; its answer closes.
    peer_end.shutdown_write();
    bool eof = false;
    CHECK(peer_end.recv_all(&eof, 30s).empty());
    CHECK(eof);
    CHECK(eventually([&t = t] { return t->is_closing(); }));
    node.close_stdin();
    CHECK(node.wait() == 0);
  }, nullptr, distributed());
}

SCENARIO("the other process dying ends the connection, and a node that "
         "is not there is an error") {
  with_runtime([](runtime& rt) {
    caf::actor proto;
    {
      REQUIRE(node_reports_do_not_halt());
    child node{{TACT_TEST_NODE}};
      proto = remote_protocol(rt, published_port(node));
      raw_listener far{kind::tcp};
      auto [t, peer_end] = far.connect(rt, [proto] { return proto; });
      REQUIRE(t);
      peer_end.send_all("ping");
      CHECK(peer_end.recv_n(4, 30s) == "PING");
      caf::scoped_actor self{rt.system()};
      self->monitor(t->actor());
      ::kill(node.pid(), SIGKILL);
      // The transport ends by itself (its protocol is down), and the peer
      // sees the connection end.
      bool ended = false;
      self->receive([&](caf::down_msg&) { ended = true; },
                    caf::after(std::chrono::seconds{10}) >> [] {});
      CHECK(ended);
      CHECK(peer_end.readable_within(10s));
    }
    // A port bound and not listening: the connection is refused.
    refused_port port;
    CHECK_FALSE(rt.remote_actor("127.0.0.1", port.number));
  }, nullptr, distributed());
}

SCENARIO("a behaviour on the loop finds a remote actor through the loop's "
         "asynchronous remote_actor") {
  with_runtime([](runtime& rt) {
    REQUIRE(node_reports_do_not_halt());
    child node{{TACT_TEST_NODE}};
    auto port = published_port(node);
    auto found = ask_from_loop<caf::actor>(
      rt, loop_ops::remote_actor{"127.0.0.1", port});
    REQUIRE(found);
    // The actor found answers: it makes a protocol that serves a
    // connection here.
    caf::scoped_actor self{rt.system()};
    caf::actor proto;
    self->request(*found, std::chrono::seconds{10}, make_atom::value)
      .receive([&](caf::actor& a) { proto = std::move(a); },
               [&](caf::error& err) { FAIL("make: " << describe(err)); });
    REQUIRE(proto);
    raw_listener far{kind::tcp};
    auto [t, peer_end] = far.connect(rt, [proto] { return proto; });
    REQUIRE(t);
    peer_end.send_all("found");
    CHECK(peer_end.recv_n(5, 30s) == "FOUND");
    t->close();
    // A port nothing listens on: an error answer, not a hang.
    refused_port closed;
    CHECK_FALSE(ask_from_loop<caf::actor>(
      rt, loop_ops::remote_actor{"127.0.0.1", closed.number}));
    node.close_stdin();
    CHECK(node.wait() == 0);
  }, nullptr, distributed());
  // Without distribution the answer says so.
  with_runtime([](runtime& rt) {
    auto found = ask_from_loop<caf::actor>(
      rt, loop_ops::remote_actor{"127.0.0.1", 1});
    REQUIRE_FALSE(found);
    CHECK(found.error() == make_error(errc::not_supported));
  });
}
