#pragma once

#include <cstdint>
#include <string>

#include <caf/meta/type_name.hpp>

#include "tact/export.hpp"

namespace tact {

/// The address of a datagram peer, as asyncio passes it to
/// `datagram_received` and takes it in `sendto`: a numeric host and a port
/// for UDP, a path for Unix datagram sockets.
///
/// A Unix socket that was never bound (asyncio's "unnamed" end) has an
/// empty endpoint: it can send, but nothing can be sent back to it.
struct endpoint {
  /// Numeric IPv4 or IPv6 address (UDP); empty for Unix sockets.
  std::string host;

  /// UDP port; 0 for Unix sockets.
  uint16_t port = 0;

  /// Unix socket path; empty for UDP and for an unnamed Unix socket.
  std::string path;

  /// A UDP endpoint. `host` must be a numeric address: `sendto` does not
  /// resolve names (it would block the loop).
  [[nodiscard]] static endpoint inet(std::string host, uint16_t port) {
    return endpoint{std::move(host), port, {}};
  }

  /// A Unix datagram socket at `path`.
  [[nodiscard]] static endpoint unix_path(std::string path) {
    return endpoint{{}, 0, std::move(path)};
  }

  /// Whether this is no address at all (an unnamed Unix socket).
  [[nodiscard]] bool empty() const noexcept {
    return host.empty() && path.empty();
  }

  friend bool operator==(const endpoint&, const endpoint&) = default;
};

/// `host:port`, `[host]:port` for IPv6, the path for Unix sockets, or an
/// empty string for an unnamed socket.
[[nodiscard]] TACT_EXPORT std::string to_string(const endpoint& x);

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, endpoint& x) {
  return f(caf::meta::type_name("tact.endpoint"), x.host, x.port, x.path);
}

} // namespace tact
