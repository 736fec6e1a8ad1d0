#pragma once

// Socket helpers shared by the transports; never included by public headers.

#include <cstdint>
#include <string>
#include <vector>

#include <sys/socket.h>

#include <caf/config_value.hpp>
#include <caf/expected.hpp>

#include "tact/runtime/detail/sock_address.hpp"
#include "tact/runtime/detail/transport_state.hpp"

namespace tact::detail {

/// What the code that made a connected socket knows of it already.
struct socket_origin {
  /// The peer's address (from accept or connect): saves a getpeername.
  const sock_address* peer = nullptr;
  /// This end's address, when the listener that accepted the socket was
  /// bound to one address (not a wildcard): saves a getsockname.
  const sock_address* local = nullptr;
  /// Accepted: read as soon as the protocol has handled connection_made,
  /// before waiting in epoll, since the client has mostly spoken first
  /// (one pass of the loop fewer; a read that finds nothing costs a
  /// system call).
  bool accepted = false;
};

/// Removes a socket file left at `path` by an earlier process, as asyncio
/// does before binding there; anything else at `path` is left for bind()
/// to refuse.
void remove_stale_socket(const std::string& path);

/// Makes a Unix socket address; errors for a path too long.
caf::expected<sock_address> unix_address(const std::string& path);

/// `host:port`, with brackets around IPv6 hosts; a path for Unix sockets.
[[nodiscard]] std::string to_string(const sock_address& addr);

/// The address as asyncio's extra info shows it: `[host, port]` for IPv4,
/// `[host, port, flowinfo, scope_id]` for IPv6, the path for Unix sockets
/// (empty for an unnamed one).
[[nodiscard]] caf::config_value to_config_value(const sock_address& addr);

/// The address of a datagram's sender as protocols see it.
[[nodiscard]] endpoint to_endpoint(const sock_address& addr);

/// The socket address of `ep`: a numeric IPv4 or IPv6 host, or a path.
/// Host names are an error (`errc::invalid_argument`): resolving them would
/// block the loop.
caf::expected<sock_address> to_sock_address(const endpoint& ep);

/// The compact form kept in a transport's shared state.
[[nodiscard]] address_info to_address_info(const sock_address& addr);

/// getsockname / getpeername; an empty address on failure.
[[nodiscard]] sock_address local_address(int fd);
[[nodiscard]] sock_address peer_address(int fd);

/// Sets O_NONBLOCK; returns false on failure.
bool set_nonblocking(int fd, bool on);

/// Sets TCP_NODELAY.
bool set_nodelay(int fd);

/// Reads and clears SO_ERROR.
[[nodiscard]] int socket_error(int fd);

/// Bytes the kernel holds for reading on `fd` (0 if it cannot tell).
[[nodiscard]] size_t unread_bytes(int fd);

/// The socket's SO_DOMAIN, or -1 if `fd` is not a socket.
[[nodiscard]] int socket_domain(int fd);

/// The socket's SO_TYPE, or -1 if `fd` is not a socket.
[[nodiscard]] int socket_type(int fd);

} // namespace tact::detail
