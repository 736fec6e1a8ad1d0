#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>
#include <string>

#include <caf/actor.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/expected.hpp>

#include "tact/export.hpp"
#include "tact/actors/protocol.hpp"
#include "tact/runtime/endpoint.hpp"
#include "tact/runtime/resolver_options.hpp"
#include "tact/runtime/transport.hpp"
#include "tact/runtime/url.hpp"
#include "tact/transports/datagram.hpp"
#include "tact/transports/server.hpp"
#include "tact/transports/subprocess.hpp"
#include "tact/transports/tls.hpp"

namespace tact {

namespace detail {
class loop_group;
class multiplexer;
} // namespace detail

/// A cluster's trust settings (`runtime_options::cluster_tls`): every link
/// between nodes is TLS 1.3 with both ends presenting a certificate signed
/// by the cluster's CA (CAF's openssl module). See docs/security.md for
/// what is and is not checked.
struct cluster_tls_options {
  /// The cluster CA's certificate (PEM): the only issuer trusted.
  std::string ca_file;
  /// This node's certificate (PEM, signed by that CA) and its private key.
  std::string cert_file;
  std::string key_file;
  /// The key's passphrase, when it is encrypted.
  std::string key_passphrase;
};

/// Settings of a `runtime`.
struct runtime_options {
  /// Bytes a connection may have delivered to its protocol and not yet
  /// consumed; past it the transport stops reading until the protocol
  /// catches up.
  size_t read_credit = 256 * 1024;

  /// How many loops (threads with their own epoll, timers and ready list)
  /// carry the runtime's I/O; 0: one per CPU the process may use (its
  /// affinity mask, capped by its cgroup's CPU quota). Unset: the
  /// environment's `TACT_LOOPS` (a number, 0 as here), else one. A
  /// connection, its transport and its class protocol stay on one loop
  /// for their whole life; see `spawn_on_loop` for where things go.
  std::optional<size_t> loops;

  /// Blocks SIGINT and SIGTERM in the constructing thread before any thread
  /// starts, so that `wait_for_signal()` receives them. Set it in programs
  /// that want asyncio-style clean shutdown on Ctrl-C.
  bool handle_signals = false;

  /// Where warnings go (dropped writes, accept pauses, failed callbacks).
  /// Default: one line on stderr each.
  std::function<void(const std::string&)> on_warning;

  /// Sets the actor system up for distribution (CAF's io middleman, tact's
  /// message types announced; see `tact/runtime/distribution.hpp`), so
  /// that `publish` and `remote_actor` work and protocols and transports
  /// may live on different nodes.
  bool distributed = false;

  /// With `distributed`: the cluster's CA and this node's certificate.
  /// Then `publish` and `remote_actor` speak BASP inside mutually
  /// authenticated TLS 1.3 only; a peer without a certificate from the CA
  /// gets no handshake, let alone an actor. Files that do not load, or a
  /// certificate the CA did not sign, make `publish` and `remote_actor`
  /// fail with `errc::invalid_argument` saying which. OpenSSL is then
  /// initialised without its cleanup at exit (CAF's TLS thread may still be
  /// ending when `main` returns); a program that uses OpenSSL before it
  /// creates the runtime calls `OPENSSL_init_crypto(OPENSSL_INIT_NO_ATEXIT,
  /// nullptr)` first.
  std::optional<cluster_tls_options> cluster_tls;

  /// Without `cluster_tls`, `publish` on anything but a loopback address is
  /// refused (CAF's plain BASP admits whoever connects and carries every
  /// message in clear text); this allows it anyway.
  bool allow_insecure_distribution = false;

  /// How host names are resolved: c-ares on the loop, with the system's
  /// name servers unless given.
  resolver_options resolver;

  /// Called with the actor system's configuration before the system
  /// starts (after `distributed` has set it up): to announce one's own
  /// message types with `add_message_type`, or to set CAF options.
  std::function<void(caf::actor_system_config&)> configure;
};

/// The answer of `runtime::remote_actor`: the remote actor or the error.
using actor_callback = std::function<void(caf::expected<caf::actor>)>;

/// Requests for the loop's operations, for actors: sent to `runtime::loop()`
/// with `request`, they are answered with the new transport without
/// blocking anyone (asyncio's `await loop.create_connection(...)`):
///
///     self->request(rt.loop(), 10s, loop_ops::connect{factory, "db", 5432})
///       .then([=](tact::transport t) { ... },
///             [=](caf::error& err) { ... });
///
/// They carry a protocol factory, so they stay on this node.
namespace loop_ops {

/// `runtime::connect` / `connect_unix`: answered with the `transport` once
/// its protocol has handled `connection_made` (after the TLS handshake
/// with `tls`), or with the error.
struct connect {
  protocol_factory factory;
  /// A TCP host (a name or a numeric address) and port...
  std::string host;
  uint16_t port = 0;
  /// ... or, when not empty, the path of a Unix socket.
  std::string path;
  connection_options options = {};
  /// A client TLS context: the connection is TLS.
  std::optional<tls_context> tls = {};
  tls_options tls_opts = {};
};

/// `runtime::spawn_process`: answered with the subprocess `transport` once
/// its protocol has handled `connection_made`, or with the reason the
/// child could not start.
struct spawn_process {
  protocol_factory factory;
  std::vector<std::string> argv;
  subprocess_options options = {};
};

/// `runtime::listen` / `listen_unix`: answered with the `server` once it
/// listens, or with the error.
struct listen {
  protocol_factory factory;
  /// A TCP host (a name, a numeric address, or empty for every
  /// interface) and port (0: a free one)...
  std::string host;
  uint16_t port = 0;
  /// ... or, when not empty, the path of a Unix socket.
  std::string path;
  server_options options = {};
};

/// `runtime::open_datagram` / `open_unix_datagram`: answered with the
/// datagram `transport`, or with the error.
struct open_datagram {
  protocol_factory factory;
  /// UDP...
  datagram_options options = {};
  /// ... or, when set, a Unix datagram socket bound to `local_path`
  /// (empty: unnamed) and connected to `remote_path` (empty: not).
  bool unix_socket = false;
  std::string local_path;
  std::string remote_path;
};

/// `runtime::remote_actor`: answered with the actor published at
/// `host:port` by another node, or with the error.
struct remote_actor {
  std::string host;
  uint16_t port = 0;
};

} // namespace loop_ops

/// The event loop and the actor system behind it: asyncio's loop.
///
/// Owns a `caf::actor_system` and one or more loops, each a thread with
/// its own epoll (`runtime_options::loops`). Transports, servers and class
/// protocols are actors resumed by the thread of their loop. What an actor
/// of a loop starts (a connection, a server, a child) lives on that same
/// loop; what another thread starts goes to the least loaded loop, and a
/// server hands each connection it accepts to the least loaded loop. The
/// factory methods below are asyncio's loop methods, in two forms: the
/// asynchronous ones (`connect`, `spawn_process`, and the `loop_ops`
/// requests to `loop()`) never block and may be called from any thread or
/// actor; the blocking ones (`create_connection`, `subprocess_exec`, ...)
/// are for `main()` and other threads of one's own, and return an error
/// instead of throwing. Calling a blocking one from an actor that lives on
/// the loop is `errc::would_deadlock`.
///
/// Destroying the runtime aborts every connection, waits for the loop's
/// actors to finish, and then for every other actor of the system (so
/// behaviour protocols must quit once they get `connection_lost`).
class TACT_EXPORT runtime {
public:
  explicit runtime(runtime_options opts = {});
  ~runtime();

  runtime(const runtime&) = delete;
  runtime& operator=(const runtime&) = delete;

  // -- loop operations without blocking -------------------------------------------

  /// asyncio's `create_connection` without blocking anyone: resolves
  /// `host` on the loop (c-ares), connects to each address in turn (or
  /// with Happy Eyeballs, `opts.happy_eyeballs_delay`) with a non-blocking
  /// connect() the loop watches, within `opts.connect_timeout`; then
  /// `done` gets the transport once its protocol has handled
  /// `connection_made`, or the error (no protocol is made then). Any
  /// thread; `done` runs on the loop, never before this returns.
  void connect(protocol_factory factory, std::string host, uint16_t port,
               connection_options opts, transport_callback done);

  /// The same over TLS: `done` gets the transport after the handshake.
  /// The name checked and sent as SNI is `tls.server_hostname`, else
  /// `host`.
  void connect(protocol_factory factory, std::string host, uint16_t port,
               tls_context ctx, tls_options tls, connection_options opts,
               transport_callback done);

  /// `connect` to the Unix socket at `path` (TLS when `ctx` is given).
  void connect_unix(protocol_factory factory, std::string path,
                    connection_options opts, transport_callback done,
                    std::optional<tls_context> ctx = {},
                    tls_options tls = {});

  /// From a coroutine (`tact/actors/stream.hpp`): `connect`, awaited —
  /// `co_await rt.connect(factory, host, port)` gives the transport once
  /// its protocol has handled `connection_made`, or the error. (Overloads
  /// rather than default arguments: GCC 12 destroys a default argument of
  /// a call inside `co_await` twice.)
  transport_op connect(protocol_factory factory, std::string host,
                       uint16_t port);
  transport_op connect(protocol_factory factory, std::string host,
                       uint16_t port, connection_options opts);

  /// From a coroutine: `connect_unix`, awaited.
  transport_op connect_unix(protocol_factory factory, std::string path);

  /// From a coroutine: `spawn_process`, awaited (the child's own
  /// protocol from `factory`; for its output as streams, see
  /// `create_subprocess_exec`).
  transport_op spawn_process(protocol_factory factory,
                             std::vector<std::string> argv,
                             subprocess_options opts);

  /// asyncio's `subprocess_exec` without blocking the caller: the child is
  /// started by the runtime's one spawning thread (fork and exec take a
  /// moment, more in a large process, which the loop keeps for its
  /// connections), and `done` gets its transport once its protocol has
  /// handled `connection_made`, or the reason it could not start, on the
  /// loop.
  void spawn_process(protocol_factory factory, std::vector<std::string> argv,
                     subprocess_options opts, transport_callback done);

  /// asyncio's `create_server` without blocking anyone: resolves `host` on
  /// the loop (c-ares; empty: every interface), listens on each address
  /// (with port 0, one free port for all), and `done` gets the server or
  /// the error, on the loop, never before this returns.
  void listen(protocol_factory factory, std::string host, uint16_t port,
              server_options opts, server_callback done);

  /// `listen` on a Unix socket at `path` (a stale socket file there is
  /// replaced; the file is removed when the server closes).
  void listen_unix(protocol_factory factory, std::string path,
                   server_options opts, server_callback done);

  /// asyncio's `create_datagram_endpoint` without blocking anyone: the
  /// names in `opts` are resolved on the loop; `done` gets the transport
  /// or the error, on the loop, never before this returns.
  void open_datagram(protocol_factory factory, datagram_options opts,
                     transport_callback done);

  /// `open_datagram` for Unix datagram sockets: bound to `local_path`
  /// (empty: unnamed) and connected to `remote_path` (empty: unconnected).
  void open_unix_datagram(protocol_factory factory, std::string local_path,
                          std::string remote_path, transport_callback done);

  /// `remote_actor` without blocking anyone: CAF's middleman connects on
  /// its own thread, and `done` gets the actor or the error on the loop.
  /// Needs `runtime_options::distributed`.
  void remote_actor(std::string host, uint16_t port, actor_callback done);

  /// The actor that answers `loop_ops` requests: how behaviours and class
  /// protocols use the operations above. Each loop has one; asked on a
  /// loop's thread, that loop's (so what it starts lives beside the
  /// asker), else the least loaded loop's.
  caf::actor loop();

  // -- loop operations that block the calling thread ------------------------------

  /// `listen`, waiting for its answer: listens on `host:port` (every
  /// address `host` resolves to; an empty host means all interfaces; port
  /// 0 picks a free port).
  caf::expected<server> create_server(protocol_factory factory,
                                      const std::string& host, uint16_t port,
                                      server_options opts = {});

  /// `listen_unix`, waiting for its answer.
  caf::expected<server> create_unix_server(protocol_factory factory,
                                           const std::string& path,
                                           server_options opts = {});

  /// A server on the address `where` names (`tact/runtime/url.hpp`):
  /// `tcp://HOST:PORT`, `unix://PATH`, or the same over TLS,
  /// `tls://HOST:PORT?cert=FILE&key=FILE` and `tls+unix://PATH?cert=…&key=…`
  /// (the certificate and key in PEM; unless `opts.tls` is set already).
  /// Another scheme, or TLS without both files, is `errc::invalid_argument`.
  caf::expected<server> create_server(protocol_factory factory,
                                      const url& where,
                                      server_options opts = {});

  /// `connect`, waiting for its answer: connects to `host:port`, trying
  /// each resolved address in turn; `opts` sets an idle timeout and TCP
  /// keepalive on the connection.
  caf::expected<transport> create_connection(protocol_factory factory,
                                             const std::string& host,
                                             uint16_t port,
                                             connection_options opts = {});

  /// Connects to the Unix socket at `path` (`opts.keepalive` is TCP's and
  /// refused here).
  caf::expected<transport> create_unix_connection(protocol_factory factory,
                                                  const std::string& path,
                                                  connection_options opts = {});

  /// Connects to `host:port` over TLS (asyncio's `ssl=`): returns once the
  /// handshake is done and the protocol has had `connection_made`, or with
  /// the handshake's error (no protocol is made then). The name checked and
  /// sent as SNI is `opts.server_hostname`, else `host`.
  caf::expected<transport> create_connection(protocol_factory factory,
                                             const std::string& host,
                                             uint16_t port,
                                             const tls_context& ctx,
                                             tls_options opts = {},
                                             connection_options conn = {});

  /// Connects to the Unix socket at `path` over TLS; a context that
  /// verifies needs `opts.server_hostname`.
  caf::expected<transport> create_unix_connection(protocol_factory factory,
                                                  const std::string& path,
                                                  const tls_context& ctx,
                                                  tls_options opts = {},
                                                  connection_options conn = {});

  /// Wraps an already connected stream socket (TCP or Unix); takes
  /// ownership of `fd`.
  caf::expected<transport> connect_accepted_socket(protocol_factory factory,
                                                   int fd);

  /// `open_datagram`, waiting for its answer: opens a UDP endpoint that
  /// binds `local_addr` and/or connects to `remote_addr` (asyncio's
  /// `create_datagram_endpoint`). The protocol is
  /// usually a `tact::datagram_protocol`.
  caf::expected<transport> create_datagram_endpoint(protocol_factory factory,
                                                    datagram_options opts);

  /// Opens a Unix datagram endpoint bound to `local_path` (a stale socket
  /// file there is replaced; empty: unnamed, it can send but not be
  /// answered) and connected to `remote_path` (empty: unconnected).
  caf::expected<transport>
  create_unix_datagram_endpoint(protocol_factory factory,
                                const std::string& local_path,
                                const std::string& remote_path = {});

  /// Reads the pipe `fd` (asyncio's `connect_read_pipe`): a FIFO, a socket
  /// or a character device, else `errc::invalid_argument`. Takes ownership
  /// of `fd` on success and makes it non-blocking. At EOF the protocol gets
  /// `eof_received` and then `connection_lost`. Off the loop, returns once
  /// the protocol has handled `connection_made` (as asyncio's).
  caf::expected<transport> connect_read_pipe(protocol_factory factory, int fd);

  /// Writes to the pipe `fd` (asyncio's `connect_write_pipe`); the same kinds
  /// of descriptor and ownership as `connect_read_pipe`. `close()` is
  /// `write_eof()`: drain, then `connection_lost`.
  caf::expected<transport> connect_write_pipe(protocol_factory factory, int fd);

  /// Starts `argv[0]` (looked up in PATH unless it has a '/') with the
  /// arguments `argv[1...]` (asyncio's `subprocess_exec`). The protocol is
  /// usually a `tact::subprocess_protocol`. A start failure (not found, not
  /// executable, bad working directory) is an error reply with the OS's
  /// reason, and no protocol is made. Returns once the protocol has
  /// handled `connection_made` (as asyncio's): what it set there is set.
  caf::expected<transport> subprocess_exec(protocol_factory factory,
                                           std::vector<std::string> argv,
                                           subprocess_options opts = {});

  /// Runs `command` with `/bin/sh -c` (asyncio's `subprocess_shell`).
  caf::expected<transport> subprocess_shell(protocol_factory factory,
                                            const std::string& command,
                                            subprocess_options opts = {});

  /// From a coroutine (`tact/actors/stream.hpp`): starts `argv[0]` as
  /// `subprocess_exec` does and gives a `tact::process` to read its output
  /// from and wait for (asyncio's `asyncio.create_subprocess_exec`):
  ///
  ///     auto child = co_await rt.create_subprocess_exec({"ls", "-l"});
  ///     while (auto line = co_await child->out().read_line()) ...
  ///
  /// The child is started off the loop (as `spawn_process`); a start
  /// failure is the error. Outside a coroutine: `errc::not_supported`.
  ///
  /// (Overloads, not a default argument: GCC 12 destroys a default
  /// argument of a call inside `co_await` twice.)
  process_op create_subprocess_exec(std::vector<std::string> argv);
  process_op create_subprocess_exec(std::vector<std::string> argv,
                                    subprocess_options opts);

  /// The same with `/bin/sh -c command` (asyncio's
  /// `create_subprocess_shell`).
  process_op create_subprocess_shell(std::string command);
  process_op create_subprocess_shell(std::string command,
                                     subprocess_options opts);

  /// asyncio's `loop.sendfile(transport, file, offset, count)`: sends
  /// `count` bytes of the regular file `fd` from `offset` (to its end when
  /// `count` is empty) on `t`, after what was written before, and returns
  /// the bytes sent once they are all handed on; blocks until then. The
  /// kernel's `sendfile(2)` on TCP, Unix and write-pipe transports, reads
  /// and writes in chunks on TLS (asyncio's fallback); see
  /// `transport::sendfile` for the rules and errors. Behaviours ask
  /// without blocking: `request(t.actor(), infinite, *make_sendfile(...))`
  /// is answered with the same count.
  caf::expected<uint64_t> sendfile(transport t, int fd, uint64_t offset = 0,
                                   std::optional<uint64_t> count = {});

  // -- distribution -----------------------------------------------------------------

  /// Makes `whom` reachable from other nodes on `port` (0: any free port)
  /// of the address `host` (`0.0.0.0` or `::` for every interface); returns
  /// the port. Blocks; needs `runtime_options::distributed` (else
  /// `errc::not_supported`). With `cluster_tls` only the cluster's nodes
  /// get in; without it only a loopback address is allowed, unless
  /// `allow_insecure_distribution` (`errc::permission_denied`).
  caf::expected<uint16_t> publish(const caf::actor& whom, uint16_t port,
                                  const std::string& host);

  /// The actor published at `host:port` by another node; blocks until the
  /// node answers or refuses (the asynchronous form is above). Needs
  /// `runtime_options::distributed`.
  caf::expected<caf::actor> remote_actor(const std::string& host,
                                         uint16_t port);

  // -- actors -----------------------------------------------------------------------

  /// Spawns a behaviour on a loop thread, where transports live: its
  /// messages to and from the transports of that loop need no thread
  /// hand-off. It must not block. Called on a loop's thread, that loop;
  /// else the least loaded one.
  caf::actor spawn_on_loop(std::function<caf::behavior(caf::event_based_actor*)> init);

  /// The same on the loop `index` (`0 <= index < loop_count()`, else
  /// `std::out_of_range`).
  caf::actor spawn_on_loop(size_t index,
                           std::function<caf::behavior(caf::event_based_actor*)> init);

  /// Runs `fn` on a thread of its own, off the loop (asyncio's
  /// `run_in_executor`): for work that blocks, such as the loop operations
  /// above when an actor on the loop needs one. The runtime waits for every
  /// such call to return before it is destroyed, so `fn` may use it. Once
  /// `shutdown` has begun, `errc::closed` and `fn` does not run. An
  /// exception thrown by `fn` is reported through the warning hook.
  caf::error run_in_executor(std::function<void()> fn);

  // -- shutdown ---------------------------------------------------------------------

  /// asyncio-style clean shutdown: stops every server, closes every
  /// connection (flushing what is buffered), and aborts what is still open
  /// after `grace`. Blocks until every connection is gone.
  void shutdown(std::chrono::milliseconds grace = std::chrono::seconds{1});

  /// Waits for SIGINT or SIGTERM and returns its number; needs
  /// `runtime_options::handle_signals`.
  int wait_for_signal();

  // -- access ---------------------------------------------------------------------------

  [[nodiscard]] caf::actor_system& system() noexcept { return *system_; }

  /// The first loop.
  [[nodiscard]] detail::multiplexer& mux() noexcept;

  /// The loop `index` (`0 <= index < loop_count()`).
  [[nodiscard]] detail::multiplexer& mux(size_t index) noexcept;

  /// How many loops run.
  [[nodiscard]] size_t loop_count() const noexcept;

  /// All the loops.
  [[nodiscard]] detail::loop_group& loops() noexcept { return *loops_; }

  [[nodiscard]] const runtime_options& options() const noexcept {
    return opts_;
  }

private:
  struct config;

  // Why distribution cannot be used (not enabled, unusable cluster trust
  // settings), for `what`; none: it can.
  caf::error check_distributed(const char* what) const;

  // `remote_actor` from the actor `self`: asks CAF's middleman actor (the
  // openssl one with cluster TLS); `done` runs in `self`'s context.
  void ask_middleman(caf::event_based_actor* self, std::string host,
                     uint16_t port, actor_callback done);

  // Runs `job` on the thread that starts children; false once the runtime
  // is shutting down.
  bool post_spawn(std::function<void()> job);

  runtime_options opts_;
  std::unique_ptr<config> cfg_;
  std::unique_ptr<caf::actor_system> system_;
  std::unique_ptr<detail::loop_group> loops_;
  bool shut_down_ = false;
  struct executor;
  std::shared_ptr<executor> executor_;
  struct spawner;
  std::shared_ptr<spawner> spawner_;
  // Why the cluster's trust settings cannot be used (none: usable).
  caf::error cluster_tls_error_;
  std::mutex loop_mtx_;
  // `loop()`'s actor of each loop, made on first use.
  std::vector<caf::actor> loop_actors_;
};

} // namespace tact

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(tact::loop_ops::connect)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(tact::loop_ops::spawn_process)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(tact::loop_ops::listen)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(tact::loop_ops::open_datagram)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(tact::loop_ops::remote_actor)
