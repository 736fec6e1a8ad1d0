#pragma once

// A socket address as the resolver hands it to the transports.

#include <cstdint>

#include <sys/socket.h>

namespace tact::detail {

/// A resolved socket address.
struct sock_address {
  sockaddr_storage storage{};
  socklen_t length = 0;

  [[nodiscard]] int family() const noexcept { return storage.ss_family; }
  [[nodiscard]] const sockaddr* get() const noexcept {
    return reinterpret_cast<const sockaddr*>(&storage);
  }
};

/// Sets the port of an IPv4 or IPv6 address (others are left alone).
void set_port(sock_address& addr, uint16_t port);

/// The port of an IPv4 or IPv6 address, 0 for others.
[[nodiscard]] uint16_t port_of(const sock_address& addr);

} // namespace tact::detail
