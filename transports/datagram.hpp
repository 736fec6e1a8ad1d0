#pragma once

// The options of a datagram endpoint (UDP or Unix datagram socket).

#include <cstdint>
#include <optional>

#include "tact/runtime/endpoint.hpp"

namespace tact {

/// An address family, for `create_datagram_endpoint` without addresses.
enum class address_family : uint8_t { unspecified, ipv4, ipv6 };

/// asyncio's keyword arguments of `create_datagram_endpoint`.
struct datagram_options {
  /// Address to bind; the host may be a name (resolved on the loop) or
  /// empty for every interface; port 0 picks a free port.
  std::optional<endpoint> local_addr;
  /// Peer to connect to (the endpoint then only talks to it).
  std::optional<endpoint> remote_addr;
  /// Restricts the addresses above to one family; needed when neither is
  /// given (an unbound socket of that family).
  address_family family = address_family::unspecified;
  /// SO_REUSEPORT.
  bool reuse_port = false;
  /// SO_BROADCAST.
  bool allow_broadcast = false;
};

} // namespace tact
