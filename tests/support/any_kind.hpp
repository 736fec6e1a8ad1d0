// Runs a Catch2 test once per stream socket kind.
#pragma once

#include <catch2/catch.hpp>

#include "support/harness.hpp"

namespace tact::test {

/// TCP on one pass of the enclosing test case, a Unix socket on the next
/// (a Catch2 generator: call it once per test case, at its top).
inline kind any_kind() {
  return GENERATE(kind::tcp, kind::unix_socket);
}

} // namespace tact::test
