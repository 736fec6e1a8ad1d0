// TLS against OpenSSL's own command-line peers, TLS 1.2 and 1.3, on TCP and
// Unix sockets: `openssl s_client` talks to a tact server, and a tact
// client talks to `openssl s_server -rev` (which answers each line
// reversed).

#include <catch2/catch.hpp>

#include <string>

#include "support/harness.hpp"
#include "support/tls_support.hpp"
#include "tact/transports/tls.hpp"

using namespace tact;
using namespace tact::test;

namespace {

kind any_kind() {
  return GENERATE(kind::tcp, kind::unix_socket);
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

} // namespace

SCENARIO("openssl s_client talks to a tact TLS server") {
  auto k = any_kind();
  std::string version = GENERATE("1.2", "1.3");
  INFO("transport: " << name_of(k) << ", TLS " << version);
  test_pki pki;
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    auto ctx = tls_context::server({pki.cert, pki.key});
    REQUIRE(ctx);
    server_options opts;
    opts.tls = *ctx;
    listening l;
    auto echo = recording(j, [](recorder& r) {
      r.on_data = [](transport& t, const bytes& data) { t.write(data); };
    });
    std::vector<std::string> argv{"openssl", "s_client"};
    if (k == kind::tcp) {
      auto srv = rt.create_server(echo, "127.0.0.1", 0, opts);
      REQUIRE(srv);
      l.srv = *srv;
      argv.insert(argv.end(),
                  {"-connect", "127.0.0.1:" + std::to_string(srv->port())});
    } else {
      l.unix_path = temp_socket_path();
      auto srv = rt.create_unix_server(echo, l.unix_path, opts);
      REQUIRE(srv);
      l.srv = *srv;
      argv.insert(argv.end(), {"-unix", l.unix_path});
    }
    argv.insert(argv.end(),
                {"-CAfile", pki.ca_cert, "-verify_return_error", "-servername",
                 "localhost", "-verify_hostname", "localhost",
                 version == "1.2" ? "-tls1_2" : "-tls1_3"});
    child c{argv};
    c.send("interop token 4711\n");
    REQUIRE(c.wait_for("interop token 4711"));
    REQUIRE(j->wait_for("connection_made"));
    auto cipher = j->handle().get_extra_info("cipher");
    REQUIRE(cipher);
    CHECK(contains(caf::to_string(*cipher), "TLSv" + version));
    // EOF on its stdin: s_client sends close_notify and exits.
    c.close_stdin();
    CHECK(c.wait() == 0);
    INFO(c.output());
    CHECK(contains(c.output(), "Verify return code: 0 (ok)"));
    CHECK(contains(c.output(), "TLSv" + version));
    REQUIRE(j->wait_for("connection_lost"));
    CHECK_FALSE(j->lost_reason());
    CHECK(j->count("eof_received") == 1);
    CHECK(j->data() == "interop token 4711\n");
    l.srv.close();
  });
}

SCENARIO("a tact TLS client talks to openssl s_server") {
  auto k = any_kind();
  std::string version = GENERATE("1.2", "1.3");
  INFO("transport: " << name_of(k) << ", TLS " << version);
  test_pki pki;
  auto j = std::make_shared<journal>();
  std::vector<std::string> argv{"openssl", "s_server", "-rev", "-cert",
                                pki.cert, "-key", pki.key,
                                version == "1.2" ? "-tls1_2" : "-tls1_3"};
  std::string path;
  if (k == kind::tcp) {
    argv.insert(argv.end(), {"-accept", "127.0.0.1:0"});
  } else {
    path = temp_socket_path();
    argv.insert(argv.end(), {"-unix", path});
  }
  child srv{argv};
  REQUIRE(srv.wait_for("ACCEPT"));
  REQUIRE(srv.wait_for("\n"));
  with_runtime([&](runtime& rt) {
    tls_client_options copts;
    copts.ca_file = pki.ca_cert;
    auto ctx = tls_context::client(copts);
    REQUIRE(ctx);
    tls_options opts;
    opts.server_hostname = "localhost";
    caf::expected<transport> t{caf::error{}};
    if (k == kind::tcp) {
      auto out = srv.output();
      auto pos = out.find("ACCEPT 127.0.0.1:");
      REQUIRE(pos != std::string::npos);
      auto port = std::stoi(out.substr(pos + 17));
      t = rt.create_connection(recording(j), "127.0.0.1",
                               static_cast<uint16_t>(port), *ctx, opts);
    } else {
      t = rt.create_unix_connection(recording(j), path, *ctx, opts);
    }
    REQUIRE(t);
    auto cipher = t->get_extra_info("cipher");
    REQUIRE(cipher);
    CHECK(contains(caf::to_string(*cipher), "TLSv" + version));
    t->write("hello tact\n");
    REQUIRE(j->wait([](journal& jj) { return jj.data_size_unlocked() >= 11; }));
    CHECK(j->data() == "tcat olleh\n");
    t->close();
    REQUIRE(j->wait_for("connection_lost", 1, 10s));
    INFO(srv.output());
    CHECK_FALSE(j->lost_reason());
  });
}
