// Distribution (DESIGN.md "Distribution"): a connection whose transport
// runs here and whose protocol is an actor on another process, reached
// over CAF's BASP; that process dying ends the connection.

#include <catch2/catch.hpp>

#include <csignal>
#include <string>

#include <caf/scoped_actor.hpp>

#include "support/harness.hpp"
#include "support/node.hpp"
#include "support/tls_support.hpp"
#include "tact/runtime/messages.hpp"

using namespace tact;
using namespace tact::test;

namespace {

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

} // namespace

SCENARIO("a protocol actor on another process serves a connection made "
         "here") {
  with_runtime([](runtime& rt) {
    child node{{TACT_TEST_NODE}};
    auto proto = remote_protocol(rt, published_port(node));
    raw_listener far{kind::tcp};
    auto [t, peer_end] = far.connect(rt, [proto] { return proto; });
    REQUIRE(t);
    // Bytes go to the other process and come back upper-cased through a
    // transport handle that crossed with connection_made.
    peer_end.send_all("hello over basp");
    CHECK(peer_end.recv_n(15) == "HELLO OVER BASP");
    std::string big_text(300000, 'x');
    peer_end.send_all(big_text);
    CHECK(peer_end.recv_n(300000) == std::string(300000, 'X'));
    // eof_received is a request across nodes; its answer closes.
    peer_end.shutdown_write();
    bool eof = false;
    CHECK(peer_end.recv_all(&eof).empty());
    CHECK(eof);
    CHECK(eventually([&] { return t->is_closing(); }));
    node.close_stdin();
    CHECK(node.wait() == 0);
  }, nullptr, distributed());
}

SCENARIO("the other process dying ends the connection with protocol_down, "
         "and an unreachable node is an error") {
  with_runtime([](runtime& rt) {
    auto j = std::make_shared<journal>();
    caf::actor proto;
    {
      child node{{TACT_TEST_NODE}};
      proto = remote_protocol(rt, published_port(node));
      raw_listener far{kind::tcp};
      auto [t, peer_end] = far.connect(rt, [proto] { return proto; });
      REQUIRE(t);
      peer_end.send_all("ping");
      CHECK(peer_end.recv_n(4) == "PING");
      ::kill(node.pid(), SIGKILL);
      bool eof = false;
      peer_end.recv_all(&eof, std::chrono::seconds{10});
      CHECK(eventually([&] { return t->is_closing(); }, 10s));
    }
    // Nothing listens there any more.
    auto gone = rt.remote_actor("127.0.0.1", free_port());
    CHECK_FALSE(gone);
  }, nullptr, distributed());
}
