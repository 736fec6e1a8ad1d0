#pragma once

#include <cstdint>

#include <caf/actor.hpp>

#include "tact/runtime/transport.hpp"

namespace tact::detail {

class multiplexer;

/// Spawns the transport actor for a non-blocking datagram socket (UDP or
/// Unix), bound and/or connected already, and starts it: it sends
/// `connection_made` to `protocol` and reads once the protocol has
/// answered. Takes ownership of `fd`. Thread-safe.
transport spawn_datagram_transport(multiplexer& mux, int fd,
                                   caf::actor protocol, uint64_t read_credit);

} // namespace tact::detail
