#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <caf/actor.hpp>
#include <caf/config_value.hpp>
#include <caf/error.hpp>
#include <caf/expected.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/settings.hpp>

#include "tact/actors/fwd.hpp"
#include "tact/export.hpp"
#include "tact/runtime/bytes.hpp"
#include "tact/runtime/endpoint.hpp"
#include "tact/runtime/fwd.hpp"

namespace tact {

/// Whom `transport::send_signal` signals: the child process, or its
/// whole process group.
enum class signal_target { process, group };

/// A protocol's handle on its transport, with asyncio's transport methods.
///
/// Commands (`write`, `close`, `pause_reading`, ...) are messages to the
/// transport actor, delivered in the order they were called. Queries
/// (`is_closing`, `get_write_buffer_size`, `get_extra_info`, ...) answer at
/// once from state the transport shares with its handles and from the
/// snapshot of extra info taken when the connection was made.
///
/// Thread safety: every method may be called from any thread. Copies share
/// the same transport.
class TACT_EXPORT transport {
public:
  transport() = default;

  /// A handle on the transport actor `actor` whose shared state is `state`
  /// (empty for a transport on another node).
  transport(caf::actor actor, detail::transport_state* state);

  // -- writing -----------------------------------------------------------------

  /// Queues `data`. Empty data does nothing. After `write_eof()` this is an
  /// error (`errc::write_after_eof`); after `close()`, `abort()` or the
  /// connection's loss the data is dropped and counted, with one warning at
  /// the fifth such write. `errc::not_supported` on a datagram transport;
  /// `errc::not_connected` on an empty handle (as for every call below that
  /// returns an error).
  caf::error write(bytes data);

  /// `write` where it would take `data`: takes it and returns true; else
  /// (the write would be refused, or dropped as the transport is closing)
  /// returns false and leaves `data` alone, for `write`. Spares a hot path
  /// building and destroying an empty `caf::error`.
  [[nodiscard]] bool try_write(bytes& data);

  /// Sends `data` as one datagram (datagram transports only) to `addr`, or
  /// to the connected peer when `addr` is empty. Empty datagrams are sent.
  /// Errors: `errc::not_supported` on a stream transport;
  /// `errc::invalid_argument` without an address on an unconnected
  /// endpoint, with an address other than the connected peer's, or with a
  /// host that is not a numeric address. After `close()` or `abort()` the
  /// datagram is dropped and counted like a late write. An OS error on the
  /// send itself (EMSGSIZE, ECONNREFUSED, ...) reaches the protocol as
  /// `error_received`, and the transport stays open.
  caf::error sendto(bytes data, std::optional<endpoint> addr = std::nullopt);

  /// Copies `text` and queues it.
  caf::error write(std::string_view text);

  /// Queues every chunk in order.
  caf::error writelines(std::vector<bytes> chunks);

  /// Queues `count` bytes of the regular file `fd` from `offset` (to the
  /// file's end when `count` is empty), as asyncio's `loop.sendfile` does,
  /// without waiting for the result: what was written before goes first,
  /// what is written after waits for the file, and the range counts in
  /// the write buffer (so the watermarks pause the protocol while it is
  /// sent, and `close()` flushes it). TCP, Unix and write-pipe transports
  /// hand it to the kernel with `sendfile(2)`; TLS reads and writes it in
  /// chunks. `fd` is duplicated: the caller may close it at once. Errors:
  /// `errc::invalid_argument` (not a regular file, a range past its end),
  /// `errc::not_supported` (datagrams, frames, read pipes, a transport on
  /// another node), `errc::write_after_eof`. A file that fails to read
  /// later (EIO, or shrunk under the range) stops the range there; the
  /// connection goes on. For the bytes sent, use `runtime::sendfile` or a
  /// request with `make_sendfile`.
  caf::error sendfile(int fd, uint64_t offset = 0,
                      std::optional<uint64_t> count = std::nullopt);

  /// Sends EOF (FIN) once the buffer has drained. A second call does nothing.
  /// `errc::not_supported` where `can_write_eof()` is false.
  caf::error write_eof();

  [[nodiscard]] bool can_write_eof() const noexcept;

  // -- closing -----------------------------------------------------------------

  /// Stops reading, flushes the buffer, then `connection_lost(none)`.
  /// Idempotent.
  caf::error close();

  /// Drops the buffer and reports `connection_lost(none)` at once.
  caf::error abort();

  /// Like `abort()`, reporting `reason` in `connection_lost`.
  caf::error abort(caf::error reason);

  /// True from `close()` or `abort()` on, and once the connection is lost.
  [[nodiscard]] bool is_closing() const noexcept;

  // -- reading -----------------------------------------------------------------

  /// Idempotent; no-ops once closing.
  caf::error pause_reading();

  /// Idempotent; no-ops once closing.
  caf::error resume_reading();

  /// `!is_closing() && !paused`.
  [[nodiscard]] bool is_reading() const noexcept;

  /// Gives `n` delivered bytes back to the read credit. The class adapter
  /// does this after each `data_received`; behaviour-based protocols call it
  /// once they have handled the bytes.
  void consumed(size_t n);

  // -- flow control ------------------------------------------------------------

  /// asyncio's rules: only `high` given means `low = high / 4`; only `low`
  /// given means `high = 4 * low`; neither means 64 KiB / 16 KiB. Anything
  /// but `high >= low >= 0` is `errc::invalid_argument`, naming the
  /// argument (the parameters are signed so that a negative value is seen,
  /// not wrapped into a huge one). Lowering `high` under the current buffer
  /// size pauses the protocol at once.
  caf::error set_write_buffer_limits(std::optional<int64_t> high = std::nullopt,
                                     std::optional<int64_t> low = std::nullopt);

  /// Returns `(low, high)`, in asyncio's order.
  [[nodiscard]] std::pair<size_t, size_t> get_write_buffer_limits() const;

  /// Bytes written and not yet handed to the kernel; 0 once the
  /// connection is lost (what was buffered is dropped).
  [[nodiscard]] size_t get_write_buffer_size() const;

  // -- information -------------------------------------------------------------

  /// asyncio's extra info: `peername` and `sockname` (a `[host, port]` list
  /// for TCP, a path string for Unix sockets, empty for an unnamed end),
  /// `socket` (the descriptor number), `family` (`"inet"`, `"inet6"`,
  /// `"unix"`).
  [[nodiscard]] std::optional<caf::config_value>
  get_extra_info(std::string_view name) const;

  /// The whole snapshot of extra info.
  [[nodiscard]] caf::settings extra_info() const;

  // -- protocol switching --------------------------------------------------------

  /// Routes every later delivery to `protocol`: asyncio's `set_protocol`,
  /// with nothing lost on the way. Deliveries that already reached the old
  /// protocol and that it had not handled when the switch was asked for
  /// (it was asked from inside its own callback, say) go to `protocol`
  /// first; the class adapter hands them over by itself, a behaviour by
  /// answering `handover`. `unread` are bytes the old protocol read but
  /// leaves to the new one (what follows a `STARTTLS` line in the same
  /// read); they come before everything else. `protocol` gets no
  /// `connection_made`.
  void set_protocol(caf::actor protocol, bytes unread = {});

  /// Runs the class protocol `protocol` next to this transport and routes
  /// every later delivery to it, as above. Returns its actor (empty for a
  /// handle from another node).
  caf::actor set_protocol(std::unique_ptr<base_protocol> protocol,
                          bytes unread = {});

  /// The current protocol actor; empty once the connection is lost.
  [[nodiscard]] caf::actor get_protocol() const;

  // -- misc ------------------------------------------------------------------------

  /// Writes dropped because they came after closing.
  [[nodiscard]] uint64_t dropped_writes() const noexcept;

  // -- subprocess transports ----------------------------------------------------

  /// The child's process id (-1 for other transports).
  [[nodiscard]] int get_pid() const noexcept;

  /// Empty while the child runs; its exit status after, or minus the signal
  /// number that ended it (asyncio's returncode).
  [[nodiscard]] std::optional<int> get_returncode() const noexcept;

  /// The pipe transport of the child's stdin (0), stdout (1) or stderr (2);
  /// empty where that stream is not a pipe.
  [[nodiscard]] transport get_pipe_transport(int fd) const;

  /// Sends signal `sig` to the child through its pidfd: never to a recycled
  /// pid. `errc::no_such_process` once the child is reaped.
  ///
  /// With `signal_target::group`, to the child's whole process group
  /// (`kill(-pgid)`), grandchildren included, even after the child itself
  /// has exited; only for a child started with `start_new_session` or
  /// `process_group` (else `errc::invalid_argument`: its group is the
  /// caller's), and `errc::no_such_process` once the group is empty, for
  /// good (a group number can be reused once its group is empty; a group
  /// that empties between two calls is the caller's risk, as with
  /// `os.killpg`).
  caf::error send_signal(int sig, signal_target target = signal_target::process);

  /// `send_signal(SIGTERM, target)`.
  caf::error terminate(signal_target target = signal_target::process);

  /// `send_signal(SIGKILL, target)`.
  caf::error kill(signal_target target = signal_target::process);

  /// Datagrams read and dropped because the protocol held its whole read
  /// credit (datagram transports; 0 for streams).
  [[nodiscard]] uint64_t dropped_datagrams() const noexcept;

  /// The transport actor.
  [[nodiscard]] const caf::actor& actor() const noexcept { return actor_; }

  [[nodiscard]] explicit operator bool() const noexcept {
    return static_cast<bool>(actor_);
  }

  /// The shared state (tact-internal; null for a handle from another node).
  [[nodiscard]] detail::transport_state* state() const noexcept {
    return state_;
  }

  // Crossing nodes, a handle keeps the actor and a copy of the extra info;
  // its queries then answer from that copy and defaults.
  template <class Inspector>
  friend typename Inspector::result_type inspect(Inspector& f, transport& x) {
    if constexpr (Inspector::reads_state) {
      auto extra = x.extra_info();
      return f(caf::meta::type_name("tact.transport"), x.actor_, extra);
    } else {
      caf::settings extra;
      auto result = f(caf::meta::type_name("tact.transport"), x.actor_, extra);
      x.state_ = nullptr;
      x.remote_extra_ = std::make_shared<const caf::settings>(std::move(extra));
      return result;
    }
  }

private:
  // pause_reading (true) or resume_reading (false).
  caf::error switch_reading(bool pause);

  friend class runtime;

  bool drop_write();
  enum class write_outcome : unsigned char { taken, closing, refused };
  write_outcome write_if_taken(bytes& data);
  [[nodiscard]] caf::error write_refusal() const;

  // `sendfile`'s checks, and its message.
  caf::expected<op::sendfile> file_request(int fd, uint64_t offset,
                                           std::optional<uint64_t> count);

  caf::actor actor_;
  detail::transport_state* state_ = nullptr;
  std::shared_ptr<const caf::settings> remote_extra_;
};

/// The answer of an asynchronous loop operation: the new transport or the
/// error. It runs on the loop thread, so it must not block; a class
/// protocol asks with `request(rt.loop(), ...)` instead, whose answer comes
/// back in its own context.
using transport_callback = std::function<void(caf::expected<transport>)>;

} // namespace tact
