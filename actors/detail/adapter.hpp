#pragma once

#include <memory>

#include <caf/actor.hpp>

#include "tact/actors/fwd.hpp"
#include "tact/runtime/fwd.hpp"

namespace tact::detail {

/// Spawns the adapter actor that runs the class protocol `p` on `mux`; it
/// starts with `current` as its transport (a protocol switched in with
/// `transport::set_protocol`, which gets no `connection_made`).
caf::actor spawn_adapter(multiplexer& mux, std::unique_ptr<base_protocol> p,
                         const transport& current);

} // namespace tact::detail
