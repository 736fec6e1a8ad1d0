// TLS against OpenSSL's own command-line peers, TLS 1.2 and 1.3, on TCP and
// Unix sockets: `openssl s_client` talks to a tact server, and a tact
// client talks to `openssl s_server -rev` (which answers each line
// reversed).

#include <catch2/catch.hpp>

#include <string>

#include <unistd.h>

#include "support/any_kind.hpp"
#include "support/harness.hpp"
#include "support/tls_support.hpp"
#include "tact/transports/tls.hpp"

using namespace tact;
using namespace tact::test;

namespace {

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

SCENARIO("TLS 1.2 offers only ECDHE with AEAD suites unless told otherwise") {
  // An RSA certificate, so that static-RSA and CBC suites could be chosen
  // if the server offered them (testssl found AES128-SHA and AES256-SHA256
  // offered before).
  test_pki pki;
  auto key = pki.dir + "/rsa.key";
  auto cert = pki.dir + "/rsa.pem";
  {
    child gen{{"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
               "-keyout", key, "-out", cert, "-days", "1", "-subj",
               "/CN=localhost"}};
    REQUIRE(gen.wait() == 0);
  }
  with_runtime([&](runtime& rt) {
    // s_client limited to one TLS 1.2 suite against a server with
    // `ciphers`: did the handshake carry a line?
    auto handshake = [&](const std::string& suite,
                         const std::string& ciphers) {
      tls_server_options sopts{cert, key};
      sopts.tls12_ciphers = ciphers;
      auto ctx = tls_context::server(sopts);
      REQUIRE(ctx);
      server_options opts;
      opts.tls = *ctx;
      auto srv = rt.create_server(
        recording(std::make_shared<journal>(),
                  [](recorder& r) {
                    r.on_data = [](transport& t, const bytes& data) {
                      t.write(data);
                    };
                  }),
        "127.0.0.1", 0, opts);
      REQUIRE(srv);
      child c{{"openssl", "s_client", "-connect",
               "127.0.0.1:" + std::to_string(srv->port()), "-tls1_2",
               "-cipher", suite}};
      c.send("suite check\n");
      auto ok = c.wait_for("suite check", std::chrono::seconds{5});
      c.close_stdin();
      c.wait();
      srv->close();
      INFO(c.output());
      return ok;
    };
    for (auto suite : {"AES128-SHA", "AES256-SHA256", "ECDHE-RSA-AES128-SHA",
                       "ECDHE-RSA-AES256-SHA384"}) {
      INFO("refused: " << suite);
      CHECK_FALSE(handshake(suite, ""));
    }
    for (auto suite : {"ECDHE-RSA-AES128-GCM-SHA256",
                       "ECDHE-RSA-AES256-GCM-SHA384",
                       "ECDHE-RSA-CHACHA20-POLY1305"}) {
      INFO("accepted: " << suite);
      CHECK(handshake(suite, ""));
    }
    // Widened on purpose, the old suite works.
    CHECK(handshake("AES128-SHA", "AES128-SHA"));
    // A list with no suite OpenSSL knows is an error that says which.
    tls_server_options bad{cert, key};
    bad.tls12_ciphers = "NO-SUCH-SUITE";
    auto ctx = tls_context::server(bad);
    REQUIRE_FALSE(ctx);
    CHECK(code_of(ctx.error()) == errc::invalid_argument);
  });
}

SCENARIO("openssl s_client resumes its sessions with a tact TLS server") {
  test_pki pki;
  with_runtime([&](runtime& rt) {
    auto ctx = tls_context::server({pki.cert, pki.key});
    REQUIRE(ctx);
    server_options opts;
    opts.tls = *ctx;
    auto echo = [] {
      struct echoing final : protocol {
        void data_received(bytes data) override { t.write(std::move(data)); }
        void connection_made(transport& made) override { t = made; }
        transport t;
      };
      return std::make_unique<echoing>();
    };
    auto srv = rt.create_server(echo, "127.0.0.1", 0, opts);
    REQUIRE(srv);
    std::vector<std::string> base{"openssl", "s_client", "-connect",
                                  "127.0.0.1:" + std::to_string(srv->port()),
                                  "-CAfile", pki.ca_cert,
                                  "-verify_return_error", "-servername",
                                  "localhost"};
    auto count = [](const std::string& text, const std::string& what) {
      size_t n = 0;
      for (auto at = text.find(what); at != std::string::npos;
           at = text.find(what, at + 1))
        ++n;
      return n;
    };
    // TLS 1.2: one full handshake, then five reconnections with its session.
    {
      auto argv = base;
      argv.insert(argv.end(), {"-tls1_2", "-reconnect"});
      child c{argv};
      c.close_stdin();
      CHECK(c.wait() == 0);
      INFO(c.output());
      CHECK(count(c.output(), "New, TLSv1.2") == 1);
      CHECK(count(c.output(), "Reused, TLSv1.2") == 5);
    }
    // TLS 1.3: the ticket comes after the handshake; the first client reads
    // an echo (and the ticket with it) and saves the session, the second
    // offers it.
    auto session = temp_socket_path() + ".session";
    {
      auto argv = base;
      argv.insert(argv.end(), {"-tls1_3", "-sess_out", session});
      child c{argv};
      c.send("first visit\n");
      REQUIRE(c.wait_for("first visit"));
      c.close_stdin();
      CHECK(c.wait() == 0);
      INFO(c.output());
      CHECK(count(c.output(), "New, TLSv1.3") == 1);
    }
    {
      auto argv = base;
      argv.insert(argv.end(), {"-tls1_3", "-sess_in", session});
      child c{argv};
      c.send("second visit\n");
      REQUIRE(c.wait_for("second visit"));
      c.close_stdin();
      CHECK(c.wait() == 0);
      INFO(c.output());
      CHECK(count(c.output(), "Reused, TLSv1.3") == 1);
    }
    ::unlink(session.c_str());
    srv->close();
  });
}
