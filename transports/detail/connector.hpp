#pragma once

// Connecting without blocking: the loop resolves the name, starts a
// non-blocking connect() per address and watches it with epoll.

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include <caf/expected.hpp>

#include "tact/actors/protocol.hpp"
#include "tact/runtime/transport.hpp"
#include "tact/transports/server.hpp"
#include "tact/transports/tls.hpp"
#include "tact/transports/detail/stream.hpp"

namespace tact::detail {

class multiplexer;

/// Where to connect and how.
struct connect_target {
  /// A TCP host (name or numeric) and port...
  std::string host;
  uint16_t port = 0;
  /// ... or, when set, the path of a Unix socket.
  std::string path;
  stream_limits limits;
  std::chrono::milliseconds timeout{0};
  std::optional<std::chrono::milliseconds> happy_eyeballs_delay;
  uint64_t read_credit = 256 * 1024;
};

/// Connects to `target` and starts a stream transport whose protocol
/// `factory` makes; `done` gets it once the protocol has handled
/// `connection_made`, or gets the error (no protocol is made then). Loop
/// thread only; `done` never runs before this returns.
void connect_stream(multiplexer& mux, connect_target target,
                    protocol_factory factory, transport_callback done);

/// asyncio's `create_connection` and `create_unix_connection`, without
/// blocking: checks `opts`, puts a client TLS layer on top when `ctx` is
/// given (`done` then gets the transport after the handshake), and connects
/// on the loop. Any thread; `done` runs on the loop, never before this
/// returns.
void open_stream(multiplexer& mux, uint64_t read_credit, connect_target target,
                 const connection_options& opts, protocol_factory factory,
                 transport_callback done, const tls_context* ctx = nullptr,
                 tls_options tls = {});

} // namespace tact::detail
