#pragma once

// Framing layers: a layer between a stream transport and a protocol that
// turns the byte stream into frames (lines, or length-prefixed messages)
// and frames what the protocol writes.

#include <caf/actor.hpp>
#include <caf/expected.hpp>

#include "tact/export.hpp"
#include "tact/actors/protocol.hpp"
#include "tact/transports/frames.hpp"
#include "tact/runtime/bytes.hpp"
#include "tact/runtime/transport.hpp"

namespace tact {

/// A protocol factory for servers and connections whose protocols speak
/// frames. Each connection gets a framing layer, which is its stream
/// transport's protocol and in turn a transport for the protocol `inner`
/// makes. That protocol, a class or an actor, sees asyncio's stream
/// protocol with one change: each `data_received` is one whole frame (the
/// line without its delimiter; the payload without its header), and each
/// `write` sends one frame. Empty frames are delivered and written.
///
/// The layer keeps the contract of the transport below: flow control
/// passes through both ways (`pause_writing` from below, `pause_reading`
/// and the read credit from above), `write_eof` works where the transport
/// below can, the extra info is the transport's. At EOF, a last line
/// without its delimiter is delivered as a frame; a stream that ends
/// inside a length-prefixed frame ends with `errc::incomplete_frame`.
/// A frame over the limit, read or written, aborts the connection with
/// `errc::frame_too_large`; a line written with the delimiter inside, with
/// `errc::invalid_argument`. An abort drops what the transport below still
/// buffers, as asyncio's `abort()` does. When the transport below ends
/// cleanly (a TLS close_notify), the frames read before still come, then
/// `eof_received` and `connection_lost`. The protocol has the read credit
/// of the transport below (`runtime_options::read_credit`). Handles from
/// another node do not write empty frames.
///
/// `create_connection` with such a factory returns the stream's transport,
/// whose protocol is the layer; frames are written through the handle the
/// protocol gets in `connection_made`, the layer's.
///
/// Errors: the checks of `check_framing`.
TACT_EXPORT caf::expected<protocol_factory> framed(framing f,
                                                   protocol_factory inner);

/// Puts a framing layer between the live stream transport `t` (TCP, Unix,
/// TLS) and `protocol`, which has had `connection_made` for `t` already,
/// as `start_tls` does: `protocol` gets frames from now on, and no second
/// `connection_made`. `unread` is stream the protocol read and did not
/// handle (the bytes behind an upgrade command); it is parsed first.
/// Returns the layer's transport at once; write frames to it. As asyncio's
/// `start_tls`, the layer resumes reading on `t`. A later `set_protocol` on
/// `t` itself (`start_tls` below the layer, say) hands the layer's unparsed
/// bytes to the new protocol and ends `protocol` with `errc::closed`.
/// Callable from any thread, including `protocol`'s own callback (pass
/// `self()`).
///
/// Errors: `t` is not a live local stream transport; the checks of
/// `check_framing`.
TACT_EXPORT caf::expected<transport>
start_framing(const transport& t, caf::actor protocol, framing f,
              bytes unread = {});

} // namespace tact
