#pragma once

#include <chrono>
#include <cstddef>
#include <string>
#include <vector>

namespace tact {

/// How the loop resolves host names (`runtime_options::resolver`). Names
/// are looked up with c-ares on the loop itself: a lookup takes neither a
/// thread nor the loop's time while it waits.
struct resolver_options {
  /// Name servers as numeric `host` or `host:port` (IPv6 in brackets with
  /// a port); empty: the system's (/etc/resolv.conf). The hosts file is
  /// read first either way.
  std::vector<std::string> servers;
  /// How long one try waits for a server's answer.
  std::chrono::milliseconds timeout{2000};
  /// Tries per server before the lookup fails.
  int tries = 2;
  /// Answers kept for their time to live, by name; 0 keeps none.
  size_t cache_entries = 1024;
  /// Names asked of the name servers at once; further names wait their
  /// turn, so that a burst does not overrun the servers' or this socket's
  /// buffers (UDP drops what does not fit, and each drop costs a timeout).
  size_t max_queries = 128;
  /// Names being looked up or waiting to be; a lookup of one more fails at
  /// once with `errc::out_of_resources`. Lookups of a name already being
  /// looked up wait for that one.
  size_t max_pending = 65536;
};

} // namespace tact
