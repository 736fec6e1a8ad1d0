// Endpoint URLs as the examples take them.

#include <catch2/catch.hpp>

#include "tact/runtime/errc.hpp"
#include "tact/runtime/url.hpp"

using namespace tact;

SCENARIO("TCP, IPv6 and Unix URLs parse") {
  auto a = parse_url("tcp://127.0.0.1:8080");
  REQUIRE(a);
  CHECK(a->scheme == "tcp");
  CHECK(a->host == "127.0.0.1");
  CHECK(a->port == 8080);
  auto b = parse_url("tcp://[::1]:0");
  REQUIRE(b);
  CHECK(b->host == "::1");
  CHECK(b->port == 0);
  CHECK(to_string(*b) == "tcp://[::1]:0");
  auto c = parse_url("unix:///tmp/x.sock");
  REQUIRE(c);
  CHECK(c->path == "/tmp/x.sock");
  CHECK(to_string(*c) == "unix:///tmp/x.sock");
  auto d = parse_url("tls://example.org:443?ca=/etc/ca.pem&insecure=1");
  REQUIRE(d);
  CHECK(d->query.at("ca") == "/etc/ca.pem");
  CHECK(d->query.at("insecure") == "1");
}

SCENARIO("malformed URLs are errors that say what is wrong") {
  for (auto text : {"", "127.0.0.1:80", "tcp://", "tcp://host", "tcp://:80",
                    "tcp://host:", "tcp://host:99999", "tcp://host:8x",
                    "tcp://::1:80", "tcp://[::1]80", "tcp://[::1", "unix://",
                    "tcp://host:80?=x", "tcp://host:-1"}) {
    INFO("URL: '" << text << "'");
    auto u = parse_url(text);
    REQUIRE_FALSE(u);
    CHECK(code_of(u.error()) == errc::invalid_argument);
    CHECK(describe(u.error()).find("bad URL") != std::string::npos);
  }
}
