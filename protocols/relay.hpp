#pragma once

// The relay: two transports joined in both directions, with flow control
// both ways, half-close passed through and either side's end closing the
// other.

#include <functional>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "tact/export.hpp"
#include "tact/actors/protocol.hpp"
#include "tact/runtime/transport.hpp"

namespace tact {

/// Joins the live transports `a` and `b`: every byte read from one is
/// written to the other, with no copy. Each may be a stream transport (TCP,
/// Unix, TLS) or a subprocess transport (the relay writes to the child's
/// stdin and reads its stdout; stderr is not relayed).
///
/// - Flow control both ways: when one side's write buffer goes over its
///   high watermark, the other side stops reading until it drains.
/// - Half-close: EOF from one side is `write_eof` on the other (closing the
///   child's stdin). TLS has no half-close: EOF toward a TLS side closes it
///   after its buffer (close_notify), and what its peer sends after that is
///   not relayed.
/// - Either side's `connection_lost` closes the other after it has flushed
///   what it holds (a child still running is then killed, as asyncio's
///   subprocess transport does on close).
///
/// The relay's protocols replace the current ones with `set_protocol`, so
/// nothing read and not handled is lost; then reading is resumed on both
/// sides. The protocols that come before should therefore pause reading in
/// `connection_made` (a child's: its stdout) and hand nothing on, and the
/// relay should start once both have done so (from the second one's
/// `connection_made`, say: `relay_to` does this), or a pause that comes
/// later stops that side for good. Callable from any thread.
///
/// Errors: a transport of another node, a datagram transport, two
/// subprocesses; `errc::closed` when either side is closing already (the
/// other is closed then).
TACT_EXPORT caf::error relay(transport a, transport b);

/// Opens the other end of a relay without blocking: hands `done` (a
/// loop operation's answer) to one of the runtime's asynchronous
/// operations with the given factory, e.g.
/// `[&](protocol_factory f, transport_callback done) {
///    rt.connect(std::move(f), host, port, {}, std::move(done)); }`.
/// It runs on the loop thread and must not block.
using relay_opener = std::function<void(protocol_factory, transport_callback)>;

/// A protocol factory for servers that relays every accepted connection
/// to a transport that `open` makes for it. The accepted connection reads
/// nothing until the other end is open. No thread and no helper actor is
/// taken: each side waits in a small actor of the loop until the relay's
/// protocols replace it. If opening fails, or `open` throws, `on_error`
/// (if given) is called with the error on the loop thread, and the
/// connection is aborted with it.
TACT_EXPORT protocol_factory
relay_to(relay_opener open,
         std::function<void(const caf::error&)> on_error = {});

} // namespace tact
