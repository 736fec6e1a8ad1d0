#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <caf/expected.hpp>

#include "tact/actors/protocol.hpp"
#include "tact/runtime/transport.hpp"
#include "tact/transports/subprocess.hpp"

namespace tact::detail {

class multiplexer;

/// asyncio's `subprocess_exec`: starts `argv[0]` (looked up in PATH unless
/// it has a '/') and its subprocess transport, with a protocol from
/// `factory` once the child runs; a start failure is the OS's reason and
/// makes no protocol. Blocks for the fork and exec: any thread but the
/// loop's. `on_made`, if given, runs once when the protocol has handled
/// `connection_made` (or the transport ended before it did), on the loop
/// or wherever the transport is destroyed: what a caller waits for before
/// it hands the transport on (asyncio's subprocess_exec returns then).
caf::expected<transport> start_process(multiplexer& mux, uint64_t read_credit,
                                       const protocol_factory& factory,
                                       const std::vector<std::string>& argv,
                                       const subprocess_options& opts,
                                       std::function<void()> on_made = {});

} // namespace tact::detail
