#pragma once

#include <memory>
#include <string>
#include <vector>

#include "tact/actors/protocol.hpp"
#include "tact/transports/detail/stream.hpp"
#include "tact/transports/server.hpp"

namespace tact::detail {

class multiplexer;

/// Spawns a server actor accepting on the listening descriptors `fds` (it
/// takes ownership). `unlink_path`, when not empty, is removed on close.
server spawn_server(multiplexer& mux, std::vector<int> fds, stream_kind kind,
                    protocol_factory factory, uint64_t read_credit,
                    int backlog, std::string unlink_path,
                    std::vector<std::string> urls, uint16_t port,
                    stream_limits limits = {});

} // namespace tact::detail
