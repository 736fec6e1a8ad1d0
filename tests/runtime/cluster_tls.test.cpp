// A cluster's links with runtime_options::cluster_tls: BASP inside TLS 1.3
// with a certificate from the cluster's CA on both ends. The secured node
// is a process of its own (tact_test_node with a CA, a certificate and a
// key); the peers that try it are runtimes here, `openssl s_client`, and a
// raw socket sending what a stranger would.

#include <catch2/catch.hpp>

#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <caf/scoped_actor.hpp>

#include "support/harness.hpp"
#include "support/node.hpp"
#include "support/tls_support.hpp"

using namespace tact;
using namespace tact::test;

namespace {

runtime_options node_with(const test_pki* pki) {
  runtime_options opts;
  opts.distributed = true;
  if (pki != nullptr)
    opts.cluster_tls = cluster_tls_options{pki->ca_cert, pki->client_cert,
                                           pki->client_key, {}};
  return opts;
}

std::string read_file(const std::string& path) {
  std::ifstream in{path};
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A plain TCP connection to 127.0.0.1:`port`, as a stranger makes it.
int connect_tcp(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

uint16_t published_port(child& node) {
  REQUIRE(node.wait_for("published on "));
  auto& out = node.output();
  auto at = out.find("published on ") + 13;
  return static_cast<uint16_t>(std::stoi(out.substr(at)));
}

} // namespace

SCENARIO("a node with the cluster's certificate gets in; one without, or "
         "with another CA's, gets no actor") {
  test_pki pki;
  test_pki other;
  REQUIRE(node_reports_do_not_halt());
  child node{{TACT_TEST_NODE, pki.ca_cert, pki.cert, pki.key}};
  auto port = published_port(node);
  // A member of the cluster: the actor, and it answers.
  with_runtime([&](runtime& rt) {
    auto maker = rt.remote_actor("127.0.0.1", port);
    REQUIRE(maker);
    caf::scoped_actor self{rt.system()};
    bool made = false;
    self->request(*maker, std::chrono::seconds{10}, make_atom::value)
      .receive(
        [&](caf::actor& a) {
          made = static_cast<bool>(a);
          // It waits for a connection that will not come: ended here, or
          // the node would wait for it at exit.
          self->send_exit(a, caf::exit_reason::user_shutdown);
        },
        [&](caf::error& err) { FAIL("make: " << describe(err)); });
    CHECK(made);
  }, nullptr, node_with(&pki));
  // A stranger speaking plain BASP: refused, and quickly.
  with_runtime([&](runtime& rt) {
    auto t0 = std::chrono::steady_clock::now();
    auto stranger = rt.remote_actor("127.0.0.1", port);
    CHECK_FALSE(stranger);
    CHECK(std::chrono::steady_clock::now() - t0 < 15s);
  }, nullptr, node_with(nullptr));
  // A node of another cluster (its own CA, its own certificate), asking
  // with the blocking call and from a behaviour.
  with_runtime([&](runtime& rt) {
    auto foreign = rt.remote_actor("127.0.0.1", port);
    CHECK_FALSE(foreign);
    CHECK_FALSE(ask_from_loop<caf::actor>(
      rt, loop_ops::remote_actor{"127.0.0.1", port}));
  }, nullptr, node_with(&other));
  // The secured node is still there for its cluster, both ways.
  with_runtime([&](runtime& rt) {
    CHECK(rt.remote_actor("127.0.0.1", port));
    CHECK(ask_from_loop<caf::actor>(
      rt, loop_ops::remote_actor{"127.0.0.1", port}));
  }, nullptr, node_with(&pki));
  node.close_stdin();
  CHECK(node.wait() == 0);
  CHECK_FALSE(tsan_report_names_tact(node.output()));
}

SCENARIO("a link stays up while strangers fail their handshakes on the "
         "same node") {
  // The node's TLS links share one thread; each stranger leaves an OpenSSL
  // error behind there. Before tact emptied the queue before each TLS
  // call, the next healthy link that waited for data inherited that error
  // and was closed (runtime/openssl_queue.cpp).
  test_pki pki;
  test_pki other;
  REQUIRE(node_reports_do_not_halt());
  child node{{TACT_TEST_NODE, pki.ca_cert, pki.cert, pki.key}};
  auto port = published_port(node);
  with_runtime([&](runtime& rt) {
    auto maker = rt.remote_actor("127.0.0.1", port);
    REQUIRE(maker);
    caf::scoped_actor self{rt.system()};
    auto ask = [&] {
      bool made = false;
      self->request(*maker, std::chrono::seconds{10}, make_atom::value)
        .receive(
          [&](caf::actor& a) {
            made = static_cast<bool>(a);
            self->send_exit(a, caf::exit_reason::user_shutdown);
          },
          [&](caf::error& err) { INFO("make: " << describe(err)); });
      return made;
    };
    REQUIRE(ask());
    for (int round = 0; round < 3; ++round) {
      // Garbage where a ClientHello belongs.
      {
        peer p{connect_tcp(port)};
        REQUIRE(p.fd() >= 0);
        p.send_all(std::string(64, 'x'));
        CHECK(p.readable_within(10s));
      }
      // A TLS client of another cluster.
      {
        child c{{"openssl", "s_client", "-connect",
                 "127.0.0.1:" + std::to_string(port), "-tls1_3", "-cert",
                 other.client_cert, "-key", other.client_key, "-brief"}};
        c.close_stdin();
        c.wait(15s);
      }
      // The link made before still carries requests both ways.
      CHECK(ask());
    }
  }, nullptr, node_with(&pki));
  node.close_stdin();
  CHECK(node.wait() == 0);
  CHECK_FALSE(tsan_report_names_tact(node.output()));
}

SCENARIO("the links are TLS 1.3 with a client certificate required "
         "(openssl s_client as the peer)") {
  test_pki pki;
  REQUIRE(node_reports_do_not_halt());
  child node{{TACT_TEST_NODE, pki.ca_cert, pki.cert, pki.key}};
  auto port = published_port(node);
  auto connect = "127.0.0.1:" + std::to_string(port);
  // `until_closed`: keep stdin open, so that s_client waits for what the
  // server sends after the handshake (its alert) and ends when it closes.
  auto s_client = [&](std::vector<std::string> extra,
                      bool until_closed = false) {
    std::vector<std::string> argv{"openssl", "s_client", "-connect", connect,
                                  "-CAfile", pki.ca_cert, "-brief"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    child c{argv};
    if (!until_closed)
      c.close_stdin();
    c.wait(15s);
    return c.output();
  };
  // TLS 1.2 is refused even with the cluster's certificate.
  auto tls12 = s_client({"-tls1_2", "-cert", pki.client_cert, "-key",
                         pki.client_key});
  CHECK_THAT(tls12, !Catch::Contains("Protocol version: TLSv1.2"));
  // TLS 1.3 with the certificate: the handshake completes.
  auto tls13 = s_client({"-tls1_3", "-cert", pki.client_cert, "-key",
                         pki.client_key});
  CHECK_THAT(tls13, Catch::Contains("Protocol version: TLSv1.3"));
  CHECK_THAT(tls13, Catch::Contains("Verification: OK"));
  // Without a certificate the server ends the handshake (TLS 1.3 sends its
  // alert after the client's Finished: no BASP byte gets through).
  auto anonymous = s_client({"-tls1_3"}, true);
  CHECK_THAT(anonymous, Catch::Contains("alert")
                          || Catch::Contains("certificate required"));
  node.close_stdin();
  CHECK(node.wait() == 0);
  CHECK_FALSE(tsan_report_names_tact(node.output()));
}

SCENARIO("a 4 GiB BASP header from a stranger costs the node nothing") {
  test_pki pki;
  REQUIRE(node_reports_do_not_halt());
  child node{{TACT_TEST_NODE, pki.ca_cert, pki.cert, pki.key}};
  auto port = published_port(node);
  auto rss_kib = [&] {
    auto status = read_file("/proc/" + std::to_string(node.pid()) + "/status");
    auto at = status.find("VmRSS:");
    return at == std::string::npos ? 0L : std::stol(status.substr(at + 6));
  };
  auto before = rss_kib();
  // BASP's header: operation, padding, flags, payload length 0xFFFFFFFF,
  // then the rest; twice, on two connections.
  std::string header(32, '\0');
  header[0] = 0;  // server handshake
  header[4] = header[5] = header[6] = header[7] = '\xff';
  for (int i = 0; i < 2; ++i) {
    peer p{connect_tcp(port)};
    REQUIRE(p.fd() >= 0);
    p.send_all(header);
    // The node ends the connection (a TLS alert, then EOF).
    CHECK(p.readable_within(10s));
  }
  std::this_thread::sleep_for(500ms);
  auto after = rss_kib();
  INFO("RSS before " << before << " KiB, after " << after << " KiB");
  // Two handshakes' worth: a few MiB (more under the sanitizers, whose
  // shadow memory grows with every page and thread touched), never the
  // 4 GiB announced.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  CHECK(after - before < 128 * 1024);
#else
  CHECK(after - before < 8 * 1024);
#endif
  // And it still serves its cluster.
  with_runtime([&](runtime& rt) {
    CHECK(rt.remote_actor("127.0.0.1", port));
  }, nullptr, node_with(&pki));
  node.close_stdin();
  CHECK(node.wait() == 0);
  CHECK_FALSE(tsan_report_names_tact(node.output()));
}

SCENARIO("trust settings that do not load, and publishing in clear text "
         "beyond loopback, are refused with the reason") {
  test_pki pki;
  test_pki other;
  // A certificate from another CA than the one named.
  with_runtime([&](runtime& rt) {
    auto maker = rt.system().spawn([] { return caf::behavior{[](int) {}}; });
    auto port = rt.publish(maker, 0, "127.0.0.1");
    REQUIRE_FALSE(port);
    CHECK(code_of(port.error()) == errc::invalid_argument);
    CHECK_THAT(describe(port.error()), Catch::Contains("not signed by"));
    CHECK_FALSE(rt.remote_actor("127.0.0.1", 1));
    caf::anon_send_exit(maker, caf::exit_reason::user_shutdown);
  }, nullptr, [&] {
    auto opts = node_with(&pki);
    opts.cluster_tls->ca_file = other.ca_cert;
    return opts;
  }());
  // A key that is not the certificate's.
  with_runtime([&](runtime& rt) {
    auto maker = rt.system().spawn([] { return caf::behavior{[](int) {}}; });
    auto port = rt.publish(maker, 0, "127.0.0.1");
    REQUIRE_FALSE(port);
    // OpenSSL refuses the key itself: "key values mismatch".
    CHECK_THAT(describe(port.error()), Catch::Contains("cannot load the key")
                                         && Catch::Contains("mismatch"));
    caf::anon_send_exit(maker, caf::exit_reason::user_shutdown);
  }, nullptr, [&] {
    auto opts = node_with(&pki);
    opts.cluster_tls->key_file = pki.key;
    return opts;
  }());
  // No trust settings: loopback only, unless allowed explicitly.
  with_runtime([&](runtime& rt) {
    auto maker = rt.system().spawn([] { return caf::behavior{[](int) {}}; });
    auto wide = rt.publish(maker, 0, "0.0.0.0");
    REQUIRE_FALSE(wide);
    CHECK(code_of(wide.error()) == errc::permission_denied);
    CHECK(rt.publish(maker, 0, "127.0.0.1"));
    caf::anon_send_exit(maker, caf::exit_reason::user_shutdown);
  }, nullptr, node_with(nullptr));
  with_runtime([&](runtime& rt) {
    auto maker = rt.system().spawn([] { return caf::behavior{[](int) {}}; });
    CHECK(rt.publish(maker, 0, "0.0.0.0"));
    caf::anon_send_exit(maker, caf::exit_reason::user_shutdown);
  }, nullptr, [] {
    auto opts = node_with(nullptr);
    opts.allow_insecure_distribution = true;
    return opts;
  }());
}
