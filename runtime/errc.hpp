#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <caf/atom.hpp>
#include <caf/error.hpp>
#include <caf/fwd.hpp>

#include "tact/export.hpp"

namespace tact {

/// Every error tact reports, as one CAF error category (`"tact"`).
///
/// Operating-system errors are translated by `from_errno` and nowhere else.
enum class errc : uint8_t {
  none = 0,
  /// The peer reset the connection (ECONNRESET).
  connection_reset,
  /// Writing to a connection whose peer is gone (EPIPE).
  broken_pipe,
  /// Nothing listens at the address (ECONNREFUSED).
  connection_refused,
  /// The connection was aborted by the network stack (ECONNABORTED).
  connection_aborted,
  /// An operation did not complete in time (ETIMEDOUT or a tact timeout).
  timed_out,
  /// The address is in use (EADDRINUSE).
  address_in_use,
  /// The address is not available on this host (EADDRNOTAVAIL).
  address_not_available,
  /// No route to the host or network (EHOSTUNREACH, ENETUNREACH).
  unreachable,
  /// A host name could not be resolved.
  name_resolution_failed,
  /// The OS refused for lack of rights (EACCES, EPERM).
  permission_denied,
  /// The process or system is out of file descriptors (EMFILE, ENFILE).
  too_many_open_files,
  /// The kernel is out of buffer space or memory (ENOBUFS, ENOMEM).
  out_of_resources,
  /// A path does not exist (ENOENT).
  no_such_file,
  /// An argument is out of range or malformed.
  invalid_argument,
  /// The file descriptor is not of a kind this operation accepts.
  bad_file_descriptor,
  /// `write()` after `write_eof()`.
  write_after_eof,
  /// The transport cannot do this (e.g. `write_eof` on TLS).
  not_supported,
  /// A protocol callback failed (threw); the connection was aborted.
  protocol_failed,
  /// The protocol actor terminated while its connection was open.
  protocol_down,
  /// The transport actor terminated without reporting `connection_lost`.
  transport_down,
  /// The transport or runtime is closed.
  closed,
  /// A blocking call was made from the multiplexer's own thread.
  would_deadlock,
  /// The process is gone (ESRCH): a signal to a child already reaped.
  no_such_process,
  /// A datagram too large for the socket (EMSGSIZE).
  message_too_long,
  /// The TLS handshake failed (a protocol error, an alert from the peer,
  /// the peer closing before it finished).
  tls_handshake_failed,
  /// The peer's certificate was refused: an untrusted, expired or
  /// self-signed chain, or a name that does not match.
  certificate_verify_failed,
  /// A TLS error on an established connection (a bad record, an alert).
  tls_error,
  /// A frame (a line, a length-prefixed message) larger than the framing
  /// allows, read or written.
  frame_too_large,
  /// The stream ended inside a frame.
  incomplete_frame,
  /// Bytes from the peer that break the format being parsed (a malformed
  /// RESP command, say).
  malformed_input,
  /// A call on a transport handle with no transport behind it (made by the
  /// default constructor, or never set).
  not_connected,
  /// Any other operating-system error.
  os_error,
};

/// Returns the enumerator's name, e.g. `"connection_reset"`.
[[nodiscard]] TACT_EXPORT std::string_view to_string(errc x);

/// The atom naming tact's error category.
inline constexpr caf::atom_value error_category = caf::atom("tact");

/// Makes a `caf::error` in tact's category.
[[nodiscard]] TACT_EXPORT caf::error make_error(errc x);

/// Makes a `caf::error` in tact's category with a context string (an
/// address, a path, the failing call).
[[nodiscard]] TACT_EXPORT caf::error make_error(errc x, std::string context);

/// Maps an errno value to `errc`; the only place tact interprets errno.
[[nodiscard]] TACT_EXPORT errc from_errno(int err);

/// Makes an error from errno with a context string, e.g.
/// `error_from_errno(ECONNREFUSED, "connect 127.0.0.1:1")`.
[[nodiscard]] TACT_EXPORT caf::error error_from_errno(int err,
                                                   std::string context);

/// Returns the `errc` of `err`, or `errc::os_error` for an error of another
/// category, or `errc::none` for no error.
[[nodiscard]] TACT_EXPORT errc code_of(const caf::error& err);

/// Renders any error (tact's or CAF's) as one human-readable line.
[[nodiscard]] TACT_EXPORT std::string describe(const caf::error& err);

/// Registers tact's error category with an actor system configuration, so
/// that CAF's own `to_string` renders tact errors by name.
TACT_EXPORT void add_error_category(caf::actor_system_config& cfg);

} // namespace tact
