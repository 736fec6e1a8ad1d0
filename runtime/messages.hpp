#pragma once

// The typed message vocabulary between transports and protocols. The names
// are asyncio's: a protocol receives the events below (asyncio's protocol
// callbacks) and sends the `op::` messages (asyncio's transport methods) to
// its transport. Every type has an `inspect` overload so it can cross nodes.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include <caf/allowed_unsafe_message_type.hpp>

#include <caf/actor.hpp>
#include <caf/error.hpp>
#include <caf/expected.hpp>
#include <caf/message.hpp>
#include <caf/meta/type_name.hpp>

#include "tact/export.hpp"
#include "tact/runtime/bytes.hpp"
#include "tact/runtime/endpoint.hpp"
#include "tact/runtime/transport.hpp"

namespace tact {

// -- transport -> protocol ---------------------------------------------------

/// First message of every connection; sent as a request, and the transport
/// reads nothing until the protocol has answered it with an empty message (a
/// behaviour handler returning `void` does). Pausing reading while handling
/// it therefore means not one byte is read. A protocol without a handler
/// for it still gets the data; one that is dead ends the connection.
struct connection_made {
  transport handle;
};

/// Bytes read from the peer. The protocol gives the bytes back to the read
/// credit with `transport::consumed(n)` (the class adapter does it itself).
struct data_received {
  bytes data;
};

/// The peer sent EOF. Sent as a request: answer `true` to keep the connection
/// half-open (writes still go out), `false` to close it.
struct eof_received {};

/// The transport's write buffer went over the high watermark.
struct pause_writing {};

/// The transport's write buffer drained to the low watermark or below.
struct resume_writing {};

/// Last message of every connection, exactly once; `reason` is empty for a
/// clean close.
struct connection_lost {
  caf::error reason;
};

/// What one datagram costs of the read credit beyond its bytes, so that a
/// flood of empty datagrams is bounded too.
constexpr size_t datagram_overhead = 64;

/// One datagram from `addr` (datagram transports). It counts against the
/// read credit until given back: a behaviour calls
/// `consumed(data.size() + datagram_overhead)` (the class adapter does it).
struct datagram_received {
  bytes data;
  endpoint addr;
};

/// A send or receive failed with an OS error (datagram transports); the
/// transport stays open.
struct error_received {
  caf::error reason;
};

/// Output of a child on `fd` (1 or 2). Give the bytes back with
/// `get_pipe_transport(fd).consumed(n)` (the class adapter does it).
struct pipe_data_received {
  int fd = 0;
  bytes data;
};

/// The child's pipe `fd` (0, 1 or 2) closed; `reason` is empty for EOF.
struct pipe_connection_lost {
  int fd = 0;
  caf::error reason;
};

/// The child exited; `get_returncode()` says how.
struct process_exited {};

/// Request from a transport to the protocol it is leaving after
/// `set_protocol(next)`. Answer with a `handover_stash` of the deliveries
/// received after the switch was asked for and not handled (the class
/// adapter does this); they reach `next` first. Any other answer (a
/// behaviour without a handler) hands over nothing.
struct handover {
  caf::actor next;
};

/// The answer to `handover`: deliveries (`data_received`, `eof_received`,
/// ...) in the order received.
struct handover_stash {
  std::vector<caf::message> messages;
};

// -- protocol -> transport ---------------------------------------------------

namespace op {

/// Queue bytes for sending. `counted` is set by `tact::transport` handles,
/// which account for in-flight bytes in the shared buffer size.
struct write {
  bytes data;
  bool counted = false;
};

/// Send one datagram to `addr`, or to the connected peer when `addr` is
/// empty. `counted` as for `write`.
struct sendto {
  bytes data;
  endpoint addr;
  bool counted = false;
};

/// Send FIN once the write buffer has drained.
struct write_eof {};

/// Stop reading, flush, then `connection_lost(none)`.
struct close {};

/// Drop the buffer and lose the connection at once with `reason`.
struct abort {
  caf::error reason;
};

/// Stop reading. `applied` is set by `tact::transport` handles, which have
/// stored the switch in the shared state already: the transport then leaves
/// that flag alone, so a later call of the handle cannot be undone by an
/// earlier message arriving late.
struct pause_reading {
  bool applied = false;
};

/// Start reading again; `applied` as for `pause_reading`.
struct resume_reading {
  bool applied = false;
};

/// New watermarks; the sender has validated `high >= low`. `applied` is set
/// by `tact::transport` handles, which have stored them in the shared state
/// already (so that a later query sees them at once).
struct set_write_buffer_limits {
  size_t high = 0;
  size_t low = 0;
  bool applied = false;
};

/// Reroute deliveries to another protocol actor; `unread` (bytes the old
/// protocol read and leaves to the new one) reaches it first.
struct set_protocol {
  caf::actor protocol;
  bytes unread;
  /// Set by `tact::transport` handles, which have stored the protocol in
  /// the shared state already.
  bool applied = false;
};

/// Gives `n` bytes back to the read credit (for protocols without a shared
/// handle, e.g. on another node).
struct consumed {
  uint64_t n = 0;
};

/// Request: answered with the write buffer size (`uint64_t`).
struct get_write_buffer_size {};

/// A descriptor of an open regular file, closed with its last owner.
class TACT_EXPORT file_ref {
public:
  explicit file_ref(int fd) noexcept : fd_(fd) {
    // nop
  }
  ~file_ref();
  file_ref(const file_ref&) = delete;
  file_ref& operator=(const file_ref&) = delete;

  [[nodiscard]] int fd() const noexcept {
    return fd_;
  }

private:
  int fd_;
};

/// Request (`loop.sendfile`): send `count` bytes of `file` from `offset`
/// after what is queued; answered with the bytes sent (`uint64_t`) once
/// all are handed to the kernel (or to the transport below a layer), or
/// with an error. Writes after it wait for it. Made by `make_sendfile`;
/// `counted` as for `write`. Local only: a descriptor cannot cross nodes.
struct sendfile {
  std::shared_ptr<const file_ref> file;
  uint64_t offset = 0;
  uint64_t count = 0;
  bool counted = false;
};

} // namespace op

/// `op::sendfile` for the regular file `fd` (duplicated: the caller keeps
/// `fd`): `count` bytes from `offset`, or up to the file's end when
/// `count` is empty. `errc::invalid_argument` for a descriptor that is not
/// an open regular file or a range past the file's end; a range of zero
/// bytes is allowed (answered with 0).
TACT_EXPORT caf::expected<op::sendfile>
make_sendfile(int fd, uint64_t offset = 0, std::optional<uint64_t> count = {});

// -- inspect -------------------------------------------------------------------

// CAF's `inspect` of each message: its name on the wire (the prefix and the
// type's name) and its fields, in order.
#define TACT_INSPECT(prefix, type, ...)                                        \
  template <class Inspector>                                                   \
  typename Inspector::result_type inspect(Inspector& f,                        \
                                          [[maybe_unused]] type& x) {          \
    return f(caf::meta::type_name(prefix #type) __VA_OPT__(, ) __VA_ARGS__);   \
  }

TACT_INSPECT("tact.", connection_made, x.handle)
TACT_INSPECT("tact.", data_received, x.data)
TACT_INSPECT("tact.", eof_received)
TACT_INSPECT("tact.", pause_writing)
TACT_INSPECT("tact.", resume_writing)
TACT_INSPECT("tact.", connection_lost, x.reason)
TACT_INSPECT("tact.", datagram_received, x.data, x.addr)
TACT_INSPECT("tact.", error_received, x.reason)
TACT_INSPECT("tact.", pipe_data_received, x.fd, x.data)
TACT_INSPECT("tact.", pipe_connection_lost, x.fd, x.reason)
TACT_INSPECT("tact.", process_exited)
TACT_INSPECT("tact.", handover, x.next)
TACT_INSPECT("tact.", handover_stash, x.messages)

namespace op {

TACT_INSPECT("tact.op.", sendto, x.data, x.addr, x.counted)
TACT_INSPECT("tact.op.", write, x.data, x.counted)
TACT_INSPECT("tact.op.", write_eof)
TACT_INSPECT("tact.op.", close)
TACT_INSPECT("tact.op.", abort, x.reason)
TACT_INSPECT("tact.op.", pause_reading, x.applied)
TACT_INSPECT("tact.op.", resume_reading, x.applied)
TACT_INSPECT("tact.op.", set_write_buffer_limits, x.high, x.low, x.applied)
TACT_INSPECT("tact.op.", set_protocol, x.protocol, x.unread, x.applied)
TACT_INSPECT("tact.op.", consumed, x.n)
TACT_INSPECT("tact.op.", get_write_buffer_size)

#undef TACT_INSPECT

} // namespace op

} // namespace tact

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(tact::op::sendfile)
