#pragma once

#include <cstdint>

#include <caf/actor.hpp>

#include <string>

#include "tact/actors/protocol.hpp"
#include "tact/runtime/transport.hpp"
#include "tact/transports/datagram.hpp"

namespace tact::detail {

class multiplexer;

/// Spawns the transport actor for a non-blocking datagram socket (UDP or
/// Unix), bound and/or connected already, and starts it: it sends
/// `connection_made` to `protocol` and reads once the protocol has
/// answered. Takes ownership of `fd`. Thread-safe.
transport spawn_datagram_transport(multiplexer& mux, int fd,
                                   caf::actor protocol, uint64_t read_credit);

/// asyncio's `create_datagram_endpoint` without blocking: resolves the
/// names of `opts` on the loop, opens the socket and gives `done` its
/// transport or the error. Any thread; `done` runs on the loop.
void open_datagram(multiplexer& mux, uint64_t read_credit,
                   protocol_factory factory, datagram_options opts,
                   transport_callback done);

/// The same for a Unix datagram socket bound to `local_path` (empty:
/// unnamed) and connected to `remote_path` (empty: unconnected).
void open_unix_datagram(multiplexer& mux, uint64_t read_credit,
                        protocol_factory factory, std::string local_path,
                        std::string remote_path, transport_callback done);

} // namespace tact::detail
