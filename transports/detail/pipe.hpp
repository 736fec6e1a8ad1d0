#pragma once

#include <cstdint>

#include <caf/actor.hpp>

#include <caf/expected.hpp>

#include "tact/actors/protocol.hpp"
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

/// asyncio's `connect_read_pipe`: checks that `fd` is a pipe, socket or
/// character device epoll can watch, makes it non-blocking and starts its
/// read transport (taking `fd` over). Any thread.
caf::expected<transport> open_read_pipe(multiplexer& mux, uint64_t read_credit,
                                        const protocol_factory& factory,
                                        int fd);

/// asyncio's `connect_write_pipe`, with the same checks.
caf::expected<transport> open_write_pipe(multiplexer& mux,
                                         const protocol_factory& factory,
                                         int fd);

} // namespace tact::detail
