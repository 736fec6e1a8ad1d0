#include "tact/runtime/detail/sock_address.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

namespace tact::detail {

void set_port(sock_address& addr, uint16_t port) {
  if (addr.family() == AF_INET)
    reinterpret_cast<sockaddr_in*>(&addr.storage)->sin_port = htons(port);
  else if (addr.family() == AF_INET6)
    reinterpret_cast<sockaddr_in6*>(&addr.storage)->sin6_port = htons(port);
}

uint16_t port_of(const sock_address& addr) {
  if (addr.family() == AF_INET)
    return ntohs(reinterpret_cast<const sockaddr_in*>(&addr.storage)->sin_port);
  if (addr.family() == AF_INET6)
    return ntohs(
      reinterpret_cast<const sockaddr_in6*>(&addr.storage)->sin6_port);
  return 0;
}

} // namespace tact::detail
