// Runs a Catch2 test once per stream socket kind, or per stream transport.
#pragma once

#include <catch2/catch.hpp>

#include "support/harness.hpp"

namespace tact::test {

/// TCP on one pass of the enclosing test case, a Unix socket on the next
/// (a Catch2 generator: call it once per test case, at its top).
inline kind any_kind() {
  return GENERATE(kind::tcp, kind::unix_socket);
}

/// The same over every transport the asyncio contract holds for: TCP,
/// Unix, TLS over TCP and line framing over TCP.
inline kind any_stream_kind() {
  return GENERATE(kind::tcp, kind::unix_socket, kind::tls, kind::lines);
}

} // namespace tact::test
