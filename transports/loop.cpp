// asyncio's loop operations for sockets: create_server, create_unix_server,
// create_connection, create_unix_connection, connect_accepted_socket,
// create_datagram_endpoint and its Unix variant, connect_read_pipe and
// connect_write_pipe. Each runs on the caller's
// thread up to the point where a connected, bound or listening descriptor
// is handed to the loop.

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "tact/runtime/detail/multiplexer.hpp"
#include "tact/runtime/detail/resolver.hpp"
#include "tact/runtime/errc.hpp"
#include "tact/runtime/runtime.hpp"
#include "tact/transports/detail/connector.hpp"
#include "tact/transports/detail/datagram.hpp"
#include "tact/transports/detail/pipe.hpp"
#include "tact/transports/detail/server.hpp"
#include "tact/transports/detail/socket.hpp"
#include "tact/transports/detail/stream.hpp"
#include "tact/transports/detail/tls.hpp"

#include <future>

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

// With a TLS context, each connection's protocol is a TLS layer that makes
// the application's protocol after its handshake.
caf::expected<protocol_factory> server_factory(protocol_factory factory,
                                               const server_options& opts,
                                               uint64_t read_credit) {
  if (!opts.tls)
    return factory;
  tls_options tls;
  tls.server_side = true;
  tls.handshake_timeout = opts.tls_handshake_timeout;
  tls.shutdown_timeout = opts.tls_shutdown_timeout;
  if (auto err = detail::check_tls_options(opts.tls, tls, true))
    return err;
  return protocol_factory::with_loop(
    [ctx = opts.tls, tls, factory = std::move(factory),
     read_credit](detail::multiplexer& mux) {
      detail::tls_setup setup;
      setup.ctx = ctx;
      setup.opts = tls;
      setup.factory = factory;
      setup.read_credit = read_credit;
      return detail::spawn_tls(mux, std::move(setup)).actor();
    });
}

// The per-connection limits of `opts`, checked.
caf::expected<detail::stream_limits>
stream_limits_of(const connection_options& opts) {
  detail::stream_limits limits;
  // A day at most: the transport's clock arithmetic stays in range.
  if (opts.idle_timeout.count() < 0 || opts.idle_timeout > std::chrono::hours{24})
    return make_error(errc::invalid_argument,
                      "idle_timeout must be from 0 to 24 h");
  limits.idle_timeout = opts.idle_timeout;
  if (opts.keepalive) {
    auto& k = *opts.keepalive;
    if (k.idle.count() < 1 || k.interval.count() < 1 || k.count < 1
        || k.idle.count() > 32767 || k.interval.count() > 32767
        || k.count > 127)
      return make_error(errc::invalid_argument,
                        "keepalive: idle and interval must be 1 to 32767 s, "
                        "count 1 to 127");
    limits.keepalive = true;
    limits.keepalive_idle = k.idle;
    limits.keepalive_interval = k.interval;
    limits.keepalive_count = k.count;
  }
  return limits;
}

caf::expected<detail::stream_limits>
stream_limits_of(const server_options& opts) {
  return stream_limits_of(connection_options{opts.idle_timeout,
                                             opts.keepalive});
}

// A factory whose protocol is a client TLS layer; the layer answers `done`
// after its handshake.
caf::expected<protocol_factory>
tls_client_factory(const tls_context& ctx, tls_options opts,
                   protocol_factory factory, uint64_t read_credit,
                   transport_callback done) {
  opts.server_side = false;
  if (auto err = detail::check_tls_options(ctx, opts, false))
    return err;
  detail::tls_setup setup;
  setup.ctx = ctx;
  setup.opts = std::move(opts);
  setup.factory = std::move(factory);
  setup.read_credit = read_credit;
  setup.on_ready = std::move(done);
  return protocol_factory::with_loop(
    [setup = std::move(setup)](detail::multiplexer& mux) mutable {
      return detail::spawn_tls(mux, std::move(setup)).actor();
    });
}

// Runs an asynchronous loop operation and waits for its answer (off the
// loop).
template <class T>
caf::expected<T>
wait_for(const std::function<void(std::function<void(caf::expected<T>)>)>& op) {
  auto done = std::make_shared<std::promise<caf::expected<T>>>();
  auto result = done->get_future();
  op([done = std::move(done)](caf::expected<T> x) {
    done->set_value(std::move(x));
  });
  // An answer handler dropped unanswered (the loop stopped) breaks the
  // promise.
  try {
    return result.get();
  } catch (const std::future_error&) {
    return make_error(errc::closed, "the loop stopped before answering");
  }
}

caf::error check_connect_options(const connection_options& opts) {
  if (opts.connect_timeout.count() < 0)
    return make_error(errc::invalid_argument,
                      "connect_timeout must not be negative");
  if (opts.happy_eyeballs_delay && opts.happy_eyeballs_delay->count() < 0)
    return make_error(errc::invalid_argument,
                      "happy_eyeballs_delay must not be negative");
  return caf::none;
}

// Every connect: checks the options, puts a client TLS layer on top when
// `ctx` is given (the layer answers after its handshake, so the plain
// connect answers only its failure), and connects on the loop, at once
// when called there. An error is answered later, never from inside.
void open_stream(detail::multiplexer& mux, uint64_t read_credit,
                 detail::connect_target target, const connection_options& opts,
                 protocol_factory factory, transport_callback done,
                 const tls_context* ctx = nullptr, tls_options tls = {}) {
  auto fail = [&](caf::error err) {
    mux.post([done = std::move(done), err = std::move(err)] { done(err); });
  };
  if (auto err = check_connect_options(opts))
    return fail(std::move(err));
  auto limits = stream_limits_of(opts);
  if (!limits)
    return fail(std::move(limits.error()));
  if (ctx != nullptr) {
    auto layered = tls_client_factory(*ctx, std::move(tls), std::move(factory),
                                      read_credit, done);
    if (!layered)
      return fail(std::move(layered.error()));
    factory = std::move(*layered);
    done = [answer = std::move(done)](caf::expected<transport> plain) {
      if (!plain)
        answer(std::move(plain.error()));
    };
  }
  target.limits = *limits;
  target.timeout = opts.connect_timeout;
  target.happy_eyeballs_delay = opts.happy_eyeballs_delay;
  target.read_credit = read_credit;
  auto run = [&mux, target = std::move(target), factory = std::move(factory),
              done = std::move(done)]() mutable {
    detail::connect_stream(mux, std::move(target), std::move(factory),
                           std::move(done));
  };
  if (mux.on_loop_thread())
    run();
  else
    mux.post(std::move(run));
}

// Starts the transport of a connected stream socket and, off the loop,
// returns once its protocol has handled connection_made (asyncio's
// create_connection awaits that too): a handle the protocol stored there
// is set when the caller goes on.
transport start_stream(detail::multiplexer& mux, int fd, caf::actor protocol,
                       detail::stream_kind kind, uint64_t read_credit,
                       const detail::stream_limits& limits = {}) {
  if (mux.on_loop_thread())
    return detail::spawn_stream_transport(mux, fd, std::move(protocol), kind,
                                          read_credit, {}, limits);
  auto made = std::make_shared<std::promise<void>>();
  auto done = made->get_future();
  auto t = detail::spawn_stream_transport(mux, fd, std::move(protocol), kind,
                                          read_credit,
                                          [made](transport) {
                                            made->set_value();
                                          },
                                          limits);
  done.wait();
  return t;
}

} // namespace

void runtime::connect(protocol_factory factory, std::string host,
                      uint16_t port, connection_options opts,
                      transport_callback done) {
  detail::connect_target target;
  target.host = std::move(host);
  target.port = port;
  open_stream(*mux_, opts_.read_credit, std::move(target), opts,
              std::move(factory), std::move(done));
}

void runtime::connect(protocol_factory factory, std::string host,
                      uint16_t port, tls_context ctx, tls_options tls,
                      connection_options opts, transport_callback done) {
  if (tls.server_hostname.empty())
    tls.server_hostname = host;
  detail::connect_target target;
  target.host = std::move(host);
  target.port = port;
  open_stream(*mux_, opts_.read_credit, std::move(target), opts,
              std::move(factory), std::move(done), &ctx, std::move(tls));
}

void runtime::connect_unix(protocol_factory factory, std::string path,
                           connection_options opts, transport_callback done,
                           std::optional<tls_context> ctx, tls_options tls) {
  if (opts.keepalive) {
    mux_->post([done = std::move(done)] {
      done(make_error(errc::invalid_argument,
                      "keepalive on a Unix socket connection"));
    });
    return;
  }
  detail::connect_target target;
  target.path = std::move(path);
  open_stream(*mux_, opts_.read_credit, std::move(target), opts,
              std::move(factory), std::move(done), ctx ? &*ctx : nullptr,
              std::move(tls));
}

caf::expected<transport>
runtime::create_connection(protocol_factory factory, const std::string& host,
                           uint16_t port, const tls_context& ctx,
                           tls_options opts, connection_options conn) {
  if (auto err = check_thread(*mux_))
    return err;
  return wait_for<transport>([&](transport_callback done) {
    connect(std::move(factory), host, port, ctx, std::move(opts), conn,
            std::move(done));
  });
}

caf::expected<transport>
runtime::create_unix_connection(protocol_factory factory,
                                const std::string& path, const tls_context& ctx,
                                tls_options opts, connection_options conn) {
  if (auto err = check_thread(*mux_))
    return err;
  return wait_for<transport>([&](transport_callback done) {
    connect_unix(std::move(factory), path, conn, std::move(done), ctx,
                 std::move(opts));
  });
}

namespace {

// Opens a listening TCP socket on each of `addrs` (with port 0 and several
// addresses, the others get the port the first one got, as asyncio users
// expect one port per server) and starts the server.
caf::expected<server> listen_tcp(detail::multiplexer& mux,
                                 std::vector<detail::sock_address> addrs,
                                 uint16_t port, const server_options& opts,
                                 protocol_factory factory,
                                 uint64_t read_credit,
                                 const detail::stream_limits& limits) {
  std::vector<int> fds;
  std::vector<std::string> urls;
  uint16_t bound_port = 0;
  for (auto& target : addrs) {
    if (port == 0 && bound_port != 0)
      detail::set_port(target, bound_port);
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
    if (bound_port == 0)
      bound_port = detail::port_of(local);
    urls.push_back((opts.tls ? "tls://" : "tcp://")
                   + detail::to_string(local));
    fds.push_back(fd);
  }
  return detail::spawn_server(mux, std::move(fds), detail::stream_kind::tcp,
                              std::move(factory), read_credit, opts.backlog,
                              std::string{}, std::move(urls), bound_port,
                              limits);
}

caf::expected<server> listen_unix_socket(detail::multiplexer& mux,
                                         const std::string& path,
                                         const server_options& opts,
                                         protocol_factory factory,
                                         uint64_t read_credit,
                                         const detail::stream_limits& limits) {
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
  std::vector<std::string> urls{(opts.tls ? "tls+unix://" : "unix://")
                                + path};
  return detail::spawn_server(mux, std::move(fds),
                              detail::stream_kind::unix_socket,
                              std::move(factory), read_credit, opts.backlog,
                              path, std::move(urls), 0, limits);
}

// The server-wide checks and the factory every listen uses: `done` gets
// the error, or `open` runs on the loop with the factory and the limits.
using open_server = std::function<void(protocol_factory,
                                       detail::stream_limits)>;

void prepare_server(detail::multiplexer& mux, protocol_factory factory,
                    const server_options& opts, uint64_t read_credit,
                    server_callback& done, open_server open) {
  auto fail = [&](caf::error err) {
    mux.post([done = std::move(done), err = std::move(err)] { done(err); });
  };
  if (opts.backlog <= 0)
    return fail(make_error(errc::invalid_argument, "backlog must be positive"));
  auto limits = stream_limits_of(opts);
  if (!limits)
    return fail(std::move(limits.error()));
  auto made = server_factory(std::move(factory), opts, read_credit);
  if (!made)
    return fail(std::move(made.error()));
  mux.post([open = std::move(open), factory = std::move(*made),
            limits = *limits]() mutable {
    open(std::move(factory), limits);
  });
}

} // namespace

void runtime::listen(protocol_factory factory, std::string host, uint16_t port,
                     server_options opts, server_callback done) {
  auto* mux = mux_.get();
  auto credit = opts_.read_credit;
  auto open = [mux, host = std::move(host), port, opts, credit,
               done](protocol_factory made,
                     detail::stream_limits limits) mutable {
    mux->names().resolve(
      host, port, true,
      [mux, port, opts = std::move(opts), credit, done = std::move(done),
       factory = std::move(made),
       limits](caf::expected<std::vector<detail::sock_address>> addrs) mutable {
        if (!addrs)
          return done(std::move(addrs.error()));
        done(listen_tcp(*mux, std::move(*addrs), port, opts,
                        std::move(factory), credit, limits));
      });
  };
  prepare_server(*mux_, std::move(factory), opts, opts_.read_credit, done,
                 std::move(open));
}

void runtime::listen_unix(protocol_factory factory, std::string path,
                          server_options opts, server_callback done) {
  auto* mux = mux_.get();
  auto credit = opts_.read_credit;
  auto open = [mux, path = std::move(path), opts, credit,
               done](protocol_factory made,
                     detail::stream_limits limits) mutable {
    done(listen_unix_socket(*mux, path, opts, std::move(made), credit,
                            limits));
  };
  prepare_server(*mux_, std::move(factory), opts, opts_.read_credit, done,
                 std::move(open));
}

caf::expected<server> runtime::create_server(protocol_factory factory,
                                             const std::string& host,
                                             uint16_t port,
                                             server_options opts) {
  if (auto err = check_thread(*mux_))
    return err;
  return wait_for<server>([&](server_callback done) {
    listen(std::move(factory), host, port, std::move(opts), std::move(done));
  });
}

caf::expected<server> runtime::create_unix_server(protocol_factory factory,
                                                  const std::string& path,
                                                  server_options opts) {
  if (auto err = check_thread(*mux_))
    return err;
  return wait_for<server>([&](server_callback done) {
    listen_unix(std::move(factory), path, std::move(opts), std::move(done));
  });
}

caf::expected<transport> runtime::create_connection(protocol_factory factory,
                                                    const std::string& host,
                                                    uint16_t port,
                                                    connection_options opts) {
  if (auto err = check_thread(*mux_))
    return err;
  return wait_for<transport>([&](transport_callback done) {
    connect(std::move(factory), host, port, opts, std::move(done));
  });
}

caf::expected<transport>
runtime::create_unix_connection(protocol_factory factory,
                                const std::string& path,
                                connection_options opts) {
  if (auto err = check_thread(*mux_))
    return err;
  return wait_for<transport>([&](transport_callback done) {
    connect_unix(std::move(factory), path, opts, std::move(done));
  });
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
  return start_stream(*mux_, fd, factory(*mux_), kind, opts_.read_credit);
}


namespace {

// Opens a datagram socket of `family`, with asyncio's options, bound to
// `local` and connected to `remote` when given.
caf::expected<int> datagram_socket(int family, const detail::sock_address* local,
                                 const detail::sock_address* remote,
                                 const datagram_options& opts) {
  auto fd = ::socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return error_from_errno(errno, "socket");
  int one = 1;
  if (opts.reuse_port
      && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) {
    auto err = errno;
    ::close(fd);
    return error_from_errno(err, "SO_REUSEPORT");
  }
  if (opts.allow_broadcast)
    setsockopt(fd, SOL_SOCKET, SO_BROADCAST, &one, sizeof(one));
  if (local && ::bind(fd, local->get(), local->length) != 0) {
    auto err = errno;
    ::close(fd);
    return error_from_errno(err, "bind " + detail::to_string(*local));
  }
  if (remote && ::connect(fd, remote->get(), remote->length) != 0) {
    auto err = errno;
    ::close(fd);
    return error_from_errno(err, "connect " + detail::to_string(*remote));
  }
  return fd;
}

int to_af(address_family family) {
  switch (family) {
    case address_family::ipv4: return AF_INET;
    case address_family::ipv6: return AF_INET6;
    default: return AF_UNSPEC;
  }
}

// Picks the socket of a datagram endpoint from the resolved addresses.
caf::expected<int>
datagram_endpoint_socket(int want, const std::vector<detail::sock_address>& locals,
                         const std::vector<detail::sock_address>& remotes,
                         const datagram_options& opts) {
  if (locals.empty() && remotes.empty()) {
    if (want != AF_UNSPEC)
      return datagram_socket(want, nullptr, nullptr, opts);
    return make_error(errc::invalid_argument,
                      "unexpected address family: give local_addr, "
                      "remote_addr or family");
  }
  // asyncio's order: each family the local addresses have (or the remote
  // ones, when no local address is given), local and remote of that
  // family together; the first pair that binds and connects wins.
  caf::expected<int> fd = make_error(errc::invalid_argument,
                                     "local_addr and remote_addr have no "
                                     "family in common");
  auto try_family = [&](int family, const detail::sock_address* local) {
    if (remotes.empty())
      return datagram_socket(family, local, nullptr, opts);
    caf::expected<int> last = make_error(errc::invalid_argument);
    for (auto& remote : remotes) {
      if (remote.family() != family)
        continue;
      last = datagram_socket(family, local, &remote, opts);
      if (last)
        break;
    }
    return last;
  };
  if (!locals.empty()) {
    for (auto& local : locals) {
      if (!remotes.empty()
          && std::none_of(remotes.begin(), remotes.end(),
                          [&](auto& r) { return r.family() == local.family(); }))
        continue;
      fd = try_family(local.family(), &local);
      if (fd)
        break;
    }
  } else {
    for (auto& remote : remotes) {
      fd = datagram_socket(remote.family(), nullptr, &remote, opts);
      if (fd)
        break;
    }
  }
  return fd;
}

// The datagram transport of the socket `fd` (closed when the factory
// fails).
caf::expected<transport> start_datagram(detail::multiplexer& mux, int fd,
                                        const protocol_factory& factory,
                                        uint64_t read_credit) {
  auto proto = factory.make(mux);
  if (!proto) {
    ::close(fd);
    return std::move(proto.error());
  }
  return detail::spawn_datagram_transport(mux, fd, std::move(*proto),
                                          read_credit);
}

using addresses_callback
  = std::function<void(caf::expected<std::vector<detail::sock_address>>)>;

// Resolves `ep` on the loop, keeping the addresses of family `want`
// (AF_UNSPEC: all); no endpoint is no address.
void resolve_endpoint(detail::multiplexer& mux,
                      const std::optional<endpoint>& ep, bool passive,
                      int want, addresses_callback done) {
  if (!ep)
    return done(std::vector<detail::sock_address>{});
  mux.names().resolve(
    ep->host, ep->port, passive,
    [want, host = ep->host, done = std::move(done)](
      caf::expected<std::vector<detail::sock_address>> addrs) {
      if (!addrs)
        return done(std::move(addrs.error()));
      std::vector<detail::sock_address> result;
      for (auto& a : *addrs)
        if (want == AF_UNSPEC || a.family() == want)
          result.push_back(a);
      if (result.empty())
        return done(make_error(errc::name_resolution_failed,
                               "no address of the requested family for '"
                                 + host + "'"));
      done(std::move(result));
    });
}

} // namespace

void runtime::open_datagram(protocol_factory factory, datagram_options opts,
                            transport_callback done) {
  auto* mux = mux_.get();
  auto credit = opts_.read_credit;
  mux->post([mux, credit, factory = std::move(factory), opts = std::move(opts),
             done = std::move(done)]() mutable {
    auto want = to_af(opts.family);
    auto local = opts.local_addr;
    resolve_endpoint(
      *mux, local, true, want,
      [mux, credit, want, factory = std::move(factory), opts = std::move(opts),
       done = std::move(done)](auto locals) mutable {
        if (!locals)
          return done(std::move(locals.error()));
        auto remote = opts.remote_addr;
        resolve_endpoint(
          *mux, remote, false, want,
          [mux, credit, want, factory = std::move(factory),
           opts = std::move(opts), locals = std::move(*locals),
           done = std::move(done)](auto remotes) mutable {
            if (!remotes)
              return done(std::move(remotes.error()));
            auto fd = datagram_endpoint_socket(want, locals, *remotes, opts);
            if (!fd)
              return done(std::move(fd.error()));
            done(start_datagram(*mux, *fd, factory, credit));
          });
      });
  });
}

void runtime::open_unix_datagram(protocol_factory factory,
                                 std::string local_path,
                                 std::string remote_path,
                                 transport_callback done) {
  auto* mux = mux_.get();
  auto credit = opts_.read_credit;
  mux->post([mux, credit, factory = std::move(factory),
             local_path = std::move(local_path),
             remote_path = std::move(remote_path),
             done = std::move(done)]() mutable {
    std::optional<detail::sock_address> local;
    std::optional<detail::sock_address> remote;
    if (!local_path.empty()) {
      auto addr = detail::unix_address(local_path);
      if (!addr)
        return done(std::move(addr.error()));
      local = *addr;
      // Replace a stale socket file, as asyncio does.
      struct stat st{};
      if (::stat(local_path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode))
        ::unlink(local_path.c_str());
    }
    if (!remote_path.empty()) {
      auto addr = detail::unix_address(remote_path);
      if (!addr)
        return done(std::move(addr.error()));
      remote = *addr;
    }
    auto fd = datagram_socket(AF_UNIX, local ? &*local : nullptr,
                              remote ? &*remote : nullptr, datagram_options{});
    if (!fd)
      return done(std::move(fd.error()));
    done(start_datagram(*mux, *fd, factory, credit));
  });
}

caf::expected<transport>
runtime::create_datagram_endpoint(protocol_factory factory,
                                  datagram_options opts) {
  if (auto err = check_thread(*mux_))
    return err;
  return wait_for<transport>([&](transport_callback done) {
    open_datagram(std::move(factory), std::move(opts), std::move(done));
  });
}

caf::expected<transport>
runtime::create_unix_datagram_endpoint(protocol_factory factory,
                                       const std::string& local_path,
                                       const std::string& remote_path) {
  if (auto err = check_thread(*mux_))
    return err;
  return wait_for<transport>([&](transport_callback done) {
    open_unix_datagram(std::move(factory), local_path, remote_path,
                       std::move(done));
  });
}

namespace {

// asyncio's check: pipes, sockets and character devices only.
caf::error check_pipe_fd(int fd) {
  struct stat st{};
  if (::fstat(fd, &st) != 0)
    return error_from_errno(errno, "fstat of descriptor " + std::to_string(fd));
  if (!S_ISFIFO(st.st_mode) && !S_ISSOCK(st.st_mode) && !S_ISCHR(st.st_mode))
    return make_error(errc::invalid_argument,
                      "descriptor " + std::to_string(fd)
                        + " is not a pipe, socket or character device");
  // Some character devices (/dev/null, /dev/zero) cannot be watched by
  // epoll: say so now rather than after connection_made.
  int probe = ::epoll_create1(EPOLL_CLOEXEC);
  if (probe < 0)
    return error_from_errno(errno, "epoll_create1");
  epoll_event ev{};
  ev.events = EPOLLIN;
  auto rc = ::epoll_ctl(probe, EPOLL_CTL_ADD, fd, &ev);
  auto err = errno;
  ::close(probe);
  if (rc != 0)
    return error_from_errno(err, "descriptor " + std::to_string(fd)
                                   + " cannot be watched by epoll");
  if (!detail::set_nonblocking(fd, true))
    return error_from_errno(errno, "O_NONBLOCK on descriptor "
                                     + std::to_string(fd));
  return caf::none;
}

} // namespace

caf::expected<transport> runtime::connect_read_pipe(protocol_factory factory,
                                                    int fd) {
  if (auto err = check_pipe_fd(fd))
    return err;
  return detail::spawn_read_pipe_transport(*mux_, fd, factory(*mux_),
                                           opts_.read_credit);
}

caf::expected<transport> runtime::connect_write_pipe(protocol_factory factory,
                                                     int fd) {
  if (auto err = check_pipe_fd(fd))
    return err;
  return detail::spawn_write_pipe_transport(*mux_, fd, factory(*mux_));
}

} // namespace tact
