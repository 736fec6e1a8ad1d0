// The server actor: owns listening sockets, accepts, and makes a transport
// and a protocol for each connection.

#include "tact/transports/server.hpp"
#include "tact/transports/detail/socket.hpp"

#include <cerrno>
#include <chrono>
#include <mutex>
#include <unordered_set>

#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <caf/actor_system.hpp>
#include <caf/atom.hpp>
#include <caf/send.hpp>

#include "tact/runtime/detail/loop_group.hpp"
#include "tact/runtime/detail/multiplexer.hpp"
#include "tact/runtime/detail/mux_actor.hpp"
#include "tact/runtime/detail/resolver.hpp"
#include "tact/runtime/errc.hpp"
#include "tact/runtime/messages.hpp"
#include "tact/transports/detail/server.hpp"
#include "tact/transports/detail/tls.hpp"

namespace tact {

namespace detail {

// The listening sockets: shut down at once by close(), from any thread, so
// that a connection tried after it returns is refused; closed on the
// server's loop once they are out of its epoll (closed elsewhere, their
// numbers could go to new descriptors while the loop still polls them).
struct listen_sockets {
  std::mutex mtx;
  std::vector<int> fds;
  bool closed = false;
  // A Unix server's socket file and which file it is: removed only while
  // the path still names it, so that a server started on the same path
  // meanwhile keeps its own.
  std::string path;
  dev_t dev = 0;
  ino_t ino = 0;

  // Again and again is harmless: a second shutdown only fails.
  void shut_down() {
    std::lock_guard<std::mutex> guard{mtx};
    if (closed)
      return;
    for (auto fd : fds)
      ::shutdown(fd, SHUT_RDWR);
    remove_file();
  }

  void close() {
    std::lock_guard<std::mutex> guard{mtx};
    if (closed)
      return;
    closed = true;
    for (auto fd : fds)
      ::close(fd);
    fds.clear();
    remove_file();
  }

private:
  void remove_file() {
    struct stat st{};
    if (!path.empty() && ::stat(path.c_str(), &st) == 0 && st.st_dev == dev
        && st.st_ino == ino)
      ::unlink(path.c_str());
    path.clear();
  }
};

} // namespace detail

namespace {

using close_atom = caf::atom_constant<caf::atom("close")>;
using close_clients_atom = caf::atom_constant<caf::atom("closecli")>;
using abort_clients_atom = caf::atom_constant<caf::atom("abortcli")>;
using retry_atom = caf::atom_constant<caf::atom("retryacc")>;
using last_client_atom = caf::atom_constant<caf::atom("lastcli")>;

// The connections a server accepted and that have not ended: touched by
// the server, and by each transport at its end, on that transport's loop,
// which may be another.
struct client_set {
  std::mutex mtx;
  std::unordered_set<caf::actor_addr> addrs;
  // Transports that ended before the server had added them (another loop
  // ran them at once): not to be added.
  std::unordered_set<caf::actor_addr> gone;
  bool closed = false;

  std::vector<caf::actor_addr> all() {
    std::lock_guard<std::mutex> guard{mtx};
    return {addrs.begin(), addrs.end()};
  }
};

// asyncio waits this long before accepting again after EMFILE and friends.
constexpr auto accept_retry_delay = std::chrono::seconds{1};

class server_actor;

// Whether `addr` is one address, not IPv4's or IPv6's wildcard.
bool names_one_address(const detail::sock_address& addr) {
  if (addr.family() == AF_INET)
    return reinterpret_cast<const sockaddr_in*>(&addr.storage)->sin_addr.s_addr
           != htonl(INADDR_ANY);
  if (addr.family() == AF_INET6)
    return !IN6_IS_ADDR_UNSPECIFIED(
      &reinterpret_cast<const sockaddr_in6*>(&addr.storage)->sin6_addr);
  return addr.length > 0;
}

// One listening descriptor on the loop.
class listener final : public detail::io_handler {
public:
  listener(server_actor* owner, int fd) : owner_(owner), fd_(fd) {
    // Every socket it accepts has this local address, unless it is a
    // wildcard: then each has the address the client connected to.
    auto bound = detail::local_address(fd);
    if (names_one_address(bound))
      local_ = bound;
  }

  void handle_io(uint32_t events) override;

  caf::strong_actor_ptr io_owner() override;

  int fd() const noexcept { return fd_; }

  void reset() noexcept { fd_ = -1; }

  // The local address of the sockets it accepts; empty when each differs.
  const detail::sock_address& local() const noexcept { return local_; }

private:
  server_actor* owner_;
  int fd_;
  detail::sock_address local_;
};

class server_actor final : public detail::mux_actor {
public:
  server_actor(caf::actor_config& cfg, detail::multiplexer& mux,
               std::vector<int> fds, detail::stream_kind kind,
               protocol_factory factory, uint64_t read_credit, int backlog,
               std::shared_ptr<detail::server_state> state,
               detail::stream_limits limits, bool spread)
    : detail::mux_actor(cfg, mux), kind_(kind), factory_(std::move(factory)),
      read_credit_(read_credit), backlog_(backlog), state_(std::move(state)),
      limits_(limits), spread_(spread) {
    for (auto fd : fds)
      listeners_.push_back(std::make_unique<listener>(this, fd));
  }

  ~server_actor() override {
    close_listeners();
  }

  caf::behavior make_behavior() override {
    mux().track(id(), caf::actor_cast<caf::actor>(this), true);
    for (auto& l : listeners_)
      mux().add(l->fd(), EPOLLIN, l.get());
    return {
      [this](close_atom) {
        close_listeners();
        maybe_quit();
      },
      [this](last_client_atom) {
        maybe_quit();
      },
      [this](close_clients_atom) {
        // A copy: a close may end a connection at once, which takes it
        // out of the set.
        for (auto& c : clients_->all())
          caf::anon_send(detail::top_layer(caf::actor_cast<caf::actor>(c)),
                         op::close{});
      },
      [this](abort_clients_atom) {
        for (auto& c : clients_->all())
          caf::anon_send(detail::top_layer(caf::actor_cast<caf::actor>(c)),
                         op::abort{});
      },
      [this](retry_atom) {
        if (!paused_ || closed_)
          return;
        paused_ = false;
        for (auto& l : listeners_)
          mux().add(l->fd(), EPOLLIN, l.get());
      },
    };
  }

  void accept_from(const listener& from) {
    if (paused_ || closed_)
      return;
    if (!state_->serving.load()) {
      // close() from another thread shut the sockets down; its message
      // is on its way.
      close_listeners();
      return;
    }
    auto lfd = from.fd();
    for (int i = 0; i < backlog_; ++i) {
      detail::sock_address peer;
      peer.length = sizeof(peer.storage);
      auto fd = ::accept4(lfd, reinterpret_cast<sockaddr*>(&peer.storage),
                          &peer.length, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        auto err = errno;
        switch (err) {
          case EAGAIN:
#if EAGAIN != EWOULDBLOCK
          case EWOULDBLOCK:
#endif
            return;
          case EINTR:
          case ECONNABORTED:
          case EPROTO:
            continue;
          case EMFILE:
          case ENFILE:
          case ENOBUFS:
          case ENOMEM:
            pause_accepting(err);
            return;
          default:
            // A TCP listener shut down by close() meanwhile: EINVAL.
            if (!state_->serving.load())
              close_listeners();
            else
              mux().warn(describe(error_from_errno(err, "accept")));
            return;
        }
      }
      // A successful accept ends a pause episode.
      reported_ = false;
      detail::socket_origin origin;
      origin.peer = &peer;
      origin.local = &from.local();
      origin.accepted = true;
      start_connection(fd, origin);
    }
  }

  caf::strong_actor_ptr owner() {
    return caf::actor_cast<caf::strong_actor_ptr>(this);
  }

private:
  void pause_accepting(int err) {
    paused_ = true;
    ++state_->accept_pauses;
    // Report once per episode, not at every retry (asyncio logs each one).
    if (!reported_) {
      reported_ = true;
      mux().warn(describe(error_from_errno(err, "accept"))
                 + "; accepting paused, retrying every second");
    }
    for (auto& l : listeners_)
      mux().remove(l->fd());
    delayed_send(this, accept_retry_delay, retry_atom::value);
  }

  // The loop a new connection lives on: the least loaded one, unless the
  // server keeps its connections.
  detail::multiplexer& loop_for_connection() {
    auto* loops = mux().group();
    if (!spread_ || loops == nullptr)
      return mux();
    return loops->least_loaded();
  }

  void start_connection(int fd, const detail::socket_origin& origin) {
    // Made and started from here, whichever loop they go to (spawning is
    // thread-safe, and counts at once for the next connection's choice).
    auto& loop = loop_for_connection();
    // What the factory starts (an actor on "the" loop, a loop operation)
    // belongs with the connection's loop.
    detail::loop_group::placement here{loop};
    auto proto = factory_.make(loop);
    if (!proto || !*proto) {
      if (!proto)
        mux().warn(describe(proto.error()));
      ::close(fd);
      return;
    }
    // The transport takes itself out of the set when it ends: no monitor,
    // and no down message per connection.
    auto on_lost = [clients = clients_, state = state_,
                    me = caf::weak_actor_ptr{ctrl()}](
                     const caf::actor_addr& addr) {
      bool last = false;
      {
        std::lock_guard<std::mutex> guard{clients->mtx};
        if (clients->addrs.erase(addr) == 0)
          clients->gone.insert(addr);
        state->active = clients->addrs.size();
        last = clients->closed && clients->addrs.empty();
      }
      if (last)
        if (auto strong = me.lock())
          caf::anon_send(caf::actor_cast<caf::actor>(strong),
                         last_client_atom::value);
    };
    auto t = detail::spawn_stream_transport(loop, fd, std::move(*proto), kind_,
                                            read_credit_, {}, limits_, &origin,
                                            std::move(on_lost));
    std::lock_guard<std::mutex> guard{clients_->mtx};
    auto addr = t.actor().address();
    if (clients_->gone.erase(addr) == 0)
      clients_->addrs.insert(std::move(addr));
    state_->active = clients_->addrs.size();
  }

  // The listener objects stay until the actor goes: an event for one of
  // them may still be pending in the loop's current batch.
  void close_listeners() {
    if (closed_)
      return;
    closed_ = true;
    state_->serving = false;
    for (auto& l : listeners_) {
      if (!paused_)
        mux().remove(l->fd());
      l->reset();
    }
    state_->listening->close();
  }

  void maybe_quit() {
    bool empty = false;
    {
      std::lock_guard<std::mutex> guard{clients_->mtx};
      clients_->closed = closed_;
      empty = clients_->addrs.empty();
    }
    if (closed_ && empty) {
      mux().untrack(id());
      quit();
    }
  }

  detail::stream_kind kind_;
  protocol_factory factory_;
  uint64_t read_credit_;
  int backlog_;
  std::shared_ptr<detail::server_state> state_;
  detail::stream_limits limits_;
  bool spread_;
  std::vector<std::unique_ptr<listener>> listeners_;
  std::shared_ptr<client_set> clients_ = std::make_shared<client_set>();
  bool paused_ = false;
  bool reported_ = false;
  bool closed_ = false;
};

void listener::handle_io(uint32_t) {
  if (fd_ >= 0)
    owner_->accept_from(*this);
}

caf::strong_actor_ptr listener::io_owner() {
  return owner_->owner();
}

} // namespace

server::server(caf::actor actor, std::shared_ptr<detail::server_state> state)
  : actor_(std::move(actor)), state_(std::move(state)) {
  // nop
}

void server::close() {
  if (!state_)
    return;
  // Every caller, not only the first: a second close() returns once the
  // first one's shutdown is done (or the loop has closed the sockets).
  auto first = state_->serving.exchange(false);
  state_->listening->shut_down();
  if (first)
    caf::anon_send(actor_, close_atom::value);
}

void server::close_clients() {
  caf::anon_send(actor_, close_clients_atom::value);
}

void server::abort_clients() {
  caf::anon_send(actor_, abort_clients_atom::value);
}

bool server::is_serving() const noexcept {
  return state_ && state_->serving.load();
}

const std::vector<std::string>& server::urls() const noexcept {
  static const std::vector<std::string> none;
  return state_ ? state_->urls : none;
}

uint16_t server::port() const noexcept {
  return state_ ? state_->port : 0;
}

size_t server::active_connections() const noexcept {
  return state_ ? state_->active.load() : 0;
}

uint64_t server::accept_pauses() const noexcept {
  return state_ ? state_->accept_pauses.load() : 0;
}

namespace detail {

server spawn_server(multiplexer& mux, std::vector<int> fds, stream_kind kind,
                    protocol_factory factory, uint64_t read_credit,
                    int backlog, std::string unlink_path,
                    std::vector<std::string> urls, uint16_t port,
                    stream_limits limits, bool spread) {
  auto state = std::make_shared<server_state>();
  state->urls = std::move(urls);
  state->port = port;
  state->listening = std::make_shared<listen_sockets>();
  state->listening->fds = fds;
  struct stat st{};
  if (!unlink_path.empty() && ::stat(unlink_path.c_str(), &st) == 0) {
    state->listening->path = std::move(unlink_path);
    state->listening->dev = st.st_dev;
    state->listening->ino = st.st_ino;
  }
  auto self = mux.system().spawn<server_actor>(
    mux, std::move(fds), kind, std::move(factory), read_credit, backlog,
    state, limits, spread);
  return server{std::move(self), std::move(state)};
}

} // namespace detail

namespace detail {

// -- loop operations: create_server, create_unix_server ------------------------

namespace {

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
      return detail::spawn_tls(mux, {.ctx = ctx,
                                     .opts = tls,
                                     .factory = factory,
                                     .read_credit = read_credit})
        .actor();
    });
}

caf::expected<detail::stream_limits>
limits_of(const server_options& opts) {
  return stream_limits_of(connection_options{opts.idle_timeout,
                                             opts.keepalive});
}

// Opens a listening TCP socket on each of `addrs` (with port 0 and several
// addresses, the others get the port the first one got, as asyncio users
// expect one port per server) and starts the server.
caf::expected<server> listen_on(detail::multiplexer& mux,
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
                              limits, opts.spread);
}

caf::expected<server> listen_on_path(detail::multiplexer& mux,
                                         const std::string& path,
                                         const server_options& opts,
                                         protocol_factory factory,
                                         uint64_t read_credit,
                                         const detail::stream_limits& limits) {
  auto addr = detail::unix_address(path);
  if (!addr)
    return std::move(addr.error());
  detail::remove_stale_socket(path);
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
                              path, std::move(urls), 0, limits, opts.spread);
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
  auto limits = limits_of(opts);
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

void listen_tcp(multiplexer& mux_ref, uint64_t credit,
                protocol_factory factory, std::string host, uint16_t port,
                server_options opts, server_callback done) {
  auto* mux = &mux_ref;
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
        done(listen_on(*mux, std::move(*addrs), port, opts,
                       std::move(factory), credit, limits));
      });
  };
  prepare_server(mux_ref, std::move(factory), opts, credit, done,
                 std::move(open));
}

void listen_unix(multiplexer& mux_ref, uint64_t credit,
                 protocol_factory factory, std::string path,
                 server_options opts, server_callback done) {
  auto* mux = &mux_ref;
  auto open = [mux, path = std::move(path), opts, credit,
               done](protocol_factory made,
                     detail::stream_limits limits) mutable {
    done(listen_on_path(*mux, path, opts, std::move(made), credit, limits));
  };
  prepare_server(mux_ref, std::move(factory), opts, credit, done,
                 std::move(open));
}

} // namespace detail

} // namespace tact
