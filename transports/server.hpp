#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/expected.hpp>

#include "tact/export.hpp"
#include "tact/transports/tls.hpp"

namespace tact {

namespace detail {
struct server_state;
} // namespace detail

/// TCP keepalive probes (`SO_KEEPALIVE`): the kernel notices a peer whose
/// host or link went away and ends the connection (`connection_lost` with
/// `timed_out`) when `count` probes, `interval` apart after `idle` of
/// silence, go unanswered.
struct keepalive_options {
  std::chrono::seconds idle{60};
  std::chrono::seconds interval{10};
  int count = 6;
};

/// Per-connection limits of `create_connection` and
/// `create_unix_connection` (a server's are in `server_options`).
struct connection_options {
  /// A connection that moves no byte either way (read or written to the
  /// kernel) for this long is ended with `connection_lost(timed_out)`;
  /// zero: never (asyncio has no such limit); at most 24 h.
  std::chrono::milliseconds idle_timeout{0};
  /// TCP keepalive (TCP only); none: the system's default (off).
  std::optional<keepalive_options> keepalive;
  /// How long connecting may take, the name's lookup and every address
  /// tried included; past it `errc::timed_out`. Zero: no limit but the
  /// kernel's (about two minutes per unanswered TCP address).
  std::chrono::milliseconds connect_timeout{0};
  /// asyncio's `happy_eyeballs_delay` (RFC 8305): the next address is
  /// tried this long after the previous one started, without waiting for
  /// it to fail, and the first to connect wins; the addresses alternate
  /// between IPv6 and IPv4 (asyncio's `interleave=1`). None: one address
  /// after the other, in the resolver's order.
  std::optional<std::chrono::milliseconds> happy_eyeballs_delay;
};

/// Options of `create_server` and `create_unix_server` (asyncio's defaults).
struct server_options {
  /// listen() backlog; also how many connections one readiness accepts.
  int backlog = 100;
  /// SO_REUSEADDR (TCP only).
  bool reuse_address = true;
  /// SO_REUSEPORT (TCP only).
  bool reuse_port = false;
  /// A server TLS context: every connection is TLS (asyncio's `ssl=`), and
  /// each protocol is made once its handshake is done.
  tls_context tls;
  /// asyncio's `ssl_handshake_timeout` and `ssl_shutdown_timeout`.
  std::chrono::milliseconds tls_handshake_timeout = std::chrono::seconds{60};
  std::chrono::milliseconds tls_shutdown_timeout = std::chrono::seconds{30};
  /// A connection that moves no byte either way (read or written to the
  /// kernel) for this long is ended with `connection_lost(timed_out)`;
  /// zero: never (asyncio has no such limit); at most 24 h.
  std::chrono::milliseconds idle_timeout{0};
  /// TCP keepalive on every accepted connection (TCP only); none: the
  /// system's default (off).
  std::optional<keepalive_options> keepalive;
  /// With several loops (`runtime_options::loops`): each accepted
  /// connection goes to the loop with the fewest live actors (the server
  /// accepts on its own loop and hands the socket over). False: they all
  /// stay on the server's loop, beside the actors that live there.
  bool spread = true;
};

/// A listening server: asyncio's `Server`.
///
/// The server accepts on every bound socket and makes a transport and a
/// protocol for each connection. Closing it refuses new connections and
/// leaves live ones open; `close_clients()` and `abort_clients()` end those.
/// Thread safety: every method may be called from any thread.
class TACT_EXPORT server {
public:
  server() = default;

  server(caf::actor actor, std::shared_ptr<detail::server_state> state);

  /// Stops accepting and closes the listening sockets (and removes a Unix
  /// socket file the server created, if the path still names it). Live
  /// connections stay. Idempotent. As with asyncio's, a connection tried
  /// once `close()` has returned is refused (a Unix server's file is gone),
  /// from whichever thread it was called (the sockets are shut down at
  /// once, closed on the loop).
  void close();

  /// `close()` on every live connection (each flushes first).
  void close_clients();

  /// `abort()` on every live connection.
  void abort_clients();

  /// True until `close()`.
  [[nodiscard]] bool is_serving() const noexcept;

  /// The bound addresses as URLs (`tcp://127.0.0.1:8080`,
  /// `tcp://[::1]:8080`, `unix:///run/x.sock`), with real port numbers;
  /// `tls://` and `tls+unix://` for servers with `server_options::tls`.
  [[nodiscard]] const std::vector<std::string>& urls() const noexcept;

  /// The port of the first bound TCP socket, 0 for Unix servers.
  [[nodiscard]] uint16_t port() const noexcept;

  /// Connections accepted and not yet lost.
  [[nodiscard]] size_t active_connections() const noexcept;

  /// Accept attempts that failed for lack of descriptors or memory, each
  /// followed by a one-second pause (a long shortage counts once a second;
  /// the warning comes once per shortage).
  [[nodiscard]] uint64_t accept_pauses() const noexcept;

  /// The server actor.
  [[nodiscard]] const caf::actor& actor() const noexcept { return actor_; }

  [[nodiscard]] explicit operator bool() const noexcept {
    return static_cast<bool>(actor_);
  }

private:
  caf::actor actor_;
  std::shared_ptr<detail::server_state> state_;
};

namespace detail {

/// The listening sockets of a server, shared by its handles and its actor.
struct listen_sockets;

/// What a server shares with its handles.
struct server_state {
  std::vector<std::string> urls;
  uint16_t port = 0;
  std::atomic<bool> serving{true};
  std::atomic<size_t> active{0};
  std::atomic<uint64_t> accept_pauses{0};
  std::shared_ptr<listen_sockets> listening;
};

} // namespace detail

/// The answer of `runtime::listen`: the new server or the error.
using server_callback = std::function<void(caf::expected<server>)>;

} // namespace tact

// A server handle stays on its node (`loop_ops::listen` answers with it).
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(tact::server)
