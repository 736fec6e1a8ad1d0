#pragma once

#include <chrono>
#include <cstdint>
#include <functional>

#include <caf/actor.hpp>
#include <caf/expected.hpp>

#include "tact/actors/fwd.hpp"
#include "tact/runtime/fwd.hpp"
#include "tact/runtime/transport.hpp"
#include "tact/transports/fwd.hpp"

namespace tact::detail {

struct socket_origin;

/// Stream socket kinds; they differ in options and extra info only.
enum class stream_kind : uint8_t { tcp, unix_socket };

/// What a server sets on each connection it accepts.
struct stream_limits {
  /// No byte either way for this long ends the connection; 0: never.
  std::chrono::milliseconds idle_timeout{0};
  /// SO_KEEPALIVE with these (TCP only) when `keepalive`.
  bool keepalive = false;
  std::chrono::seconds keepalive_idle{0};
  std::chrono::seconds keepalive_interval{0};
  int keepalive_count = 0;
};

/// Spawns the transport actor for a connected, non-blocking stream socket
/// and starts it: it sends `connection_made` to `protocol` and reads once
/// the protocol has answered. Takes ownership of `fd`. Thread-safe.
///
/// `on_made`, if given, runs once on the loop with the transport when the
/// protocol has handled `connection_made` (or the connection ended before
/// it did; an empty handle if the transport was never started). `origin`
/// is what the caller knows of the socket (see `socket_origin`). `on_lost`, if
/// given, runs once on the loop with the transport's address when the
/// connection ends (a server counts its connections so, without a
/// monitor and its message each).
transport spawn_stream_transport(
  multiplexer& mux, int fd, caf::actor protocol, stream_kind kind,
  uint64_t read_credit, std::function<void(transport)> on_made = {},
  const stream_limits& limits = {}, const socket_origin* origin = nullptr,
  std::function<void(const caf::actor_addr&)> on_lost = {});

/// The per-connection limits of `opts`, checked.
caf::expected<stream_limits> stream_limits_of(const connection_options& opts);

/// asyncio's `connect_accepted_socket`: the stream transport of the
/// connected socket `fd` (TCP or Unix; taken over) with a protocol from
/// `factory`. Off the loop it returns once the protocol has handled
/// `connection_made`. Any thread.
caf::expected<transport> wrap_accepted_socket(multiplexer& mux,
                                              uint64_t read_credit,
                                              const protocol_factory& factory,
                                              int fd);

} // namespace tact::detail
