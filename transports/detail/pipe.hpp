#pragma once

#include <cstdint>

#include <caf/actor.hpp>

#include "tact/runtime/transport.hpp"

namespace tact::detail {

class multiplexer;

/// Spawns the transport for the read end of a pipe (or a FIFO, socket or
/// character device read one way). Takes ownership of `fd`, which must be
/// non-blocking. Thread-safe.
transport spawn_read_pipe_transport(multiplexer& mux, int fd,
                                    caf::actor protocol, uint64_t read_credit);

/// Spawns the transport for the write end of a pipe. Takes ownership of
/// `fd`, which must be non-blocking. Thread-safe.
transport spawn_write_pipe_transport(multiplexer& mux, int fd,
                                     caf::actor protocol);

} // namespace tact::detail
