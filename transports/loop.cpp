// asyncio's loop operations for stream sockets: create_server,
// create_unix_server, create_connection, create_unix_connection and
// connect_accepted_socket. Each runs on the caller's thread up to the point
// where a connected or listening descriptor is handed to the loop.

#include <cerrno>
#include <cstring>

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "tact/runtime/detail/multiplexer.hpp"
#include "tact/runtime/errc.hpp"
#include "tact/runtime/runtime.hpp"
#include "tact/transports/detail/server.hpp"
#include "tact/transports/detail/socket.hpp"
#include "tact/transports/detail/stream.hpp"

namespace tact {

namespace {

caf::error check_thread(detail::multiplexer& mux) {
  if (mux.on_loop_thread())
    return make_error(errc::would_deadlock,
                      "blocking loop operation called on the loop thread");
  return caf::none;
}

void close_all(std::vector<int>& fds) {
  for (auto fd : fds)
    ::close(fd);
  fds.clear();
}

} // namespace

caf::expected<server> runtime::create_server(protocol_factory factory,
                                             const std::string& host,
                                             uint16_t port,
                                             server_options opts) {
  if (auto err = check_thread(*mux_))
    return err;
  if (opts.backlog <= 0)
    return make_error(errc::invalid_argument, "backlog must be positive");
  auto addrs = detail::resolve(host, port, true);
  if (!addrs)
    return std::move(addrs.error());
  std::vector<int> fds;
  std::vector<std::string> urls;
  uint16_t bound_port = 0;
  for (auto& addr : *addrs) {
    // With port 0 and several addresses, bind the others to the port the
    // first one got, as asyncio users expect one port per server.
    auto target = addr;
    if (port == 0 && bound_port != 0) {
      if (target.family() == AF_INET)
        reinterpret_cast<sockaddr_in*>(&target.storage)->sin_port
          = htons(bound_port);
      else
        reinterpret_cast<sockaddr_in6*>(&target.storage)->sin6_port
          = htons(bound_port);
    }
    auto fd = ::socket(target.family(), SOCK_STREAM | SOCK_NONBLOCK
                                          | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      auto err = errno;
      close_all(fds);
      return error_from_errno(err, "socket for " + detail::to_string(target));
    }
    int one = 1;
    if (opts.reuse_address)
      setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (opts.reuse_port)
      setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (target.family() == AF_INET6)
      setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (::bind(fd, target.get(), target.length) != 0
        || ::listen(fd, opts.backlog) != 0) {
      auto err = errno;
      ::close(fd);
      close_all(fds);
      return error_from_errno(err, "bind " + detail::to_string(target));
    }
    auto local = detail::local_address(fd);
    if (bound_port == 0) {
      auto value = detail::to_config_value(local);
      bound_port = static_cast<uint16_t>(
        caf::get<int64_t>(caf::get<caf::config_value::list>(value)[1]));
    }
    urls.push_back("tcp://" + detail::to_string(local));
    fds.push_back(fd);
  }
  return detail::spawn_server(*mux_, std::move(fds), detail::stream_kind::tcp,
                              std::move(factory), opts_.read_credit,
                              opts.backlog, std::string{}, std::move(urls),
                              bound_port);
}

caf::expected<server> runtime::create_unix_server(protocol_factory factory,
                                                  const std::string& path,
                                                  server_options opts) {
  if (auto err = check_thread(*mux_))
    return err;
  if (opts.backlog <= 0)
    return make_error(errc::invalid_argument, "backlog must be positive");
  auto addr = detail::unix_address(path);
  if (!addr)
    return std::move(addr.error());
  // Replace a stale socket file, as asyncio does; anything else there is an
  // error from bind().
  struct stat st{};
  if (::stat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode))
    ::unlink(path.c_str());
  auto fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return error_from_errno(errno, "socket for " + path);
  if (::bind(fd, addr->get(), addr->length) != 0
      || ::listen(fd, opts.backlog) != 0) {
    auto err = errno;
    ::close(fd);
    return error_from_errno(err, "bind " + path);
  }
  std::vector<int> fds{fd};
  std::vector<std::string> urls{"unix://" + path};
  return detail::spawn_server(*mux_, std::move(fds),
                              detail::stream_kind::unix_socket,
                              std::move(factory), opts_.read_credit,
                              opts.backlog, path, std::move(urls), 0);
}

caf::expected<transport> runtime::create_connection(protocol_factory factory,
                                                    const std::string& host,
                                                    uint16_t port) {
  if (auto err = check_thread(*mux_))
    return err;
  auto addrs = detail::resolve(host, port, false);
  if (!addrs)
    return std::move(addrs.error());
  caf::error last;
  for (auto& addr : *addrs) {
    auto fd = ::socket(addr.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      last = error_from_errno(errno, "socket");
      continue;
    }
    int rc;
    do {
      rc = ::connect(fd, addr.get(), addr.length);
    } while (rc != 0 && errno == EINTR);
    if (rc != 0) {
      last = error_from_errno(errno, "connect " + detail::to_string(addr));
      ::close(fd);
      continue;
    }
    detail::set_nonblocking(fd, true);
    return detail::spawn_stream_transport(*mux_, fd, factory(*mux_),
                                          detail::stream_kind::tcp,
                                          opts_.read_credit);
  }
  return last;
}

caf::expected<transport>
runtime::create_unix_connection(protocol_factory factory,
                                const std::string& path) {
  if (auto err = check_thread(*mux_))
    return err;
  auto addr = detail::unix_address(path);
  if (!addr)
    return std::move(addr.error());
  auto fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return error_from_errno(errno, "socket");
  int rc;
  do {
    rc = ::connect(fd, addr->get(), addr->length);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    auto err = errno;
    ::close(fd);
    return error_from_errno(err, "connect " + path);
  }
  detail::set_nonblocking(fd, true);
  return detail::spawn_stream_transport(*mux_, fd, factory(*mux_),
                                        detail::stream_kind::unix_socket,
                                        opts_.read_credit);
}

caf::expected<transport>
runtime::connect_accepted_socket(protocol_factory factory, int fd) {
  auto domain = detail::socket_domain(fd);
  if (domain < 0)
    return make_error(errc::bad_file_descriptor,
                      "descriptor " + std::to_string(fd) + " is not a socket");
  if (detail::socket_type(fd) != SOCK_STREAM)
    return make_error(errc::invalid_argument,
                      "descriptor " + std::to_string(fd)
                        + " is not a stream socket");
  detail::set_nonblocking(fd, true);
  auto kind = domain == AF_UNIX ? detail::stream_kind::unix_socket
                                : detail::stream_kind::tcp;
  return detail::spawn_stream_transport(*mux_, fd, factory(*mux_), kind,
                                        opts_.read_credit);
}

} // namespace tact
