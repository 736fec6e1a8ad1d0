#include "tact/transports/detail/socket.hpp"

#include <cerrno>
#include <cstring>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "tact/runtime/errc.hpp"

namespace tact::detail {

void remove_stale_socket(const std::string& path) {
  struct stat st{};
  if (::stat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode))
    ::unlink(path.c_str());
}

caf::expected<sock_address> unix_address(const std::string& path) {
  sockaddr_un un{};
  if (path.empty() || path.size() >= sizeof(un.sun_path))
    return make_error(errc::invalid_argument,
                      "unix socket path must have 1 to "
                        + std::to_string(sizeof(un.sun_path) - 1)
                        + " bytes: '" + path + "'");
  un.sun_family = AF_UNIX;
  std::memcpy(un.sun_path, path.data(), path.size());
  sock_address addr;
  std::memcpy(&addr.storage, &un, sizeof(un));
  addr.length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path)
                                       + path.size() + 1);
  return addr;
}

namespace {

std::string host_of(const sock_address& addr) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (addr.family() == AF_INET) {
    auto* in = reinterpret_cast<const sockaddr_in*>(&addr.storage);
    inet_ntop(AF_INET, &in->sin_addr, buf, sizeof(buf));
  } else if (addr.family() == AF_INET6) {
    auto* in6 = reinterpret_cast<const sockaddr_in6*>(&addr.storage);
    inet_ntop(AF_INET6, &in6->sin6_addr, buf, sizeof(buf));
  }
  return buf;
}

std::string path_of(const sock_address& addr) {
  auto* un = reinterpret_cast<const sockaddr_un*>(&addr.storage);
  auto offset = offsetof(sockaddr_un, sun_path);
  if (addr.length <= offset)
    return {};
  auto len = addr.length - offset;
  // An abstract address starts with a NUL byte; show it as '@name'.
  if (un->sun_path[0] == '\0')
    return "@" + std::string(un->sun_path + 1, len - 1);
  return std::string(un->sun_path, strnlen(un->sun_path, len));
}

} // namespace

std::string to_string(const sock_address& addr) {
  switch (addr.family()) {
    case AF_INET:
      return host_of(addr) + ":" + std::to_string(port_of(addr));
    case AF_INET6:
      return "[" + host_of(addr) + "]:" + std::to_string(port_of(addr));
    case AF_UNIX:
      return path_of(addr);
    default:
      return {};
  }
}

address_info to_address_info(const sock_address& addr) {
  address_info result;
  switch (addr.family()) {
    case AF_INET: {
      auto* in = reinterpret_cast<const sockaddr_in*>(&addr.storage);
      result.family = 4;
      result.port = ntohs(in->sin_port);
      std::memcpy(result.ip.data(), &in->sin_addr, 4);
      break;
    }
    case AF_INET6: {
      auto* in6 = reinterpret_cast<const sockaddr_in6*>(&addr.storage);
      result.family = 6;
      result.port = ntohs(in6->sin6_port);
      std::memcpy(result.ip.data(), &in6->sin6_addr, 16);
      result.flowinfo = ntohl(in6->sin6_flowinfo);
      result.scope_id = in6->sin6_scope_id;
      break;
    }
    case AF_UNIX:
      result.family = 1;
      if (auto path = path_of(addr); !path.empty())
        result.path = std::make_unique<const std::string>(std::move(path));
      break;
    default:
      break;
  }
  return result;
}

endpoint to_endpoint(const sock_address& addr) {
  return to_endpoint(to_address_info(addr));
}

caf::expected<sock_address> to_sock_address(const endpoint& ep) {
  if (ep.host.empty()) {
    if (ep.path.empty())
      return make_error(errc::invalid_argument, "empty address");
    return unix_address(ep.path);
  }
  sock_address addr;
  auto* in = reinterpret_cast<sockaddr_in*>(&addr.storage);
  if (inet_pton(AF_INET, ep.host.c_str(), &in->sin_addr) == 1) {
    in->sin_family = AF_INET;
    in->sin_port = htons(ep.port);
    addr.length = sizeof(sockaddr_in);
    return addr;
  }
  auto* in6 = reinterpret_cast<sockaddr_in6*>(&addr.storage);
  if (inet_pton(AF_INET6, ep.host.c_str(), &in6->sin6_addr) == 1) {
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(ep.port);
    addr.length = sizeof(sockaddr_in6);
    return addr;
  }
  return make_error(errc::invalid_argument,
                    "not a numeric IPv4 or IPv6 address: '" + ep.host + "'");
}

caf::config_value to_config_value(const sock_address& addr) {
  return to_config_value(to_address_info(addr));
}

sock_address local_address(int fd) {
  sock_address addr;
  addr.length = sizeof(addr.storage);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr.storage), &addr.length)
      != 0)
    addr = sock_address{};
  return addr;
}

sock_address peer_address(int fd) {
  sock_address addr;
  addr.length = sizeof(addr.storage);
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&addr.storage), &addr.length)
      != 0)
    addr = sock_address{};
  return addr;
}

bool set_nonblocking(int fd, bool on) {
  auto flags = fcntl(fd, F_GETFL, 0);
  if (flags < 0)
    return false;
  flags = on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
  return fcntl(fd, F_SETFL, flags) == 0;
}

bool set_nodelay(int fd) {
  int one = 1;
  return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) == 0;
}

size_t unread_bytes(int fd) {
  int n = 0;
  if (::ioctl(fd, FIONREAD, &n) != 0 || n < 0)
    return 0;
  return static_cast<size_t>(n);
}

int socket_error(int fd) {
  int err = 0;
  socklen_t len = sizeof(err);
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
    return errno;
  return err;
}

int socket_domain(int fd) {
  int value = 0;
  socklen_t len = sizeof(value);
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &value, &len) != 0)
    return -1;
  return value;
}

int socket_type(int fd) {
  int value = 0;
  socklen_t len = sizeof(value);
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &value, &len) != 0)
    return -1;
  return value;
}

} // namespace tact::detail
