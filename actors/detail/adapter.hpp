#pragma once

#include <memory>

#include <caf/actor.hpp>

#include "tact/actors/fwd.hpp"
#include "tact/runtime/fwd.hpp"

namespace caf {
class abstract_actor;
} // namespace caf

namespace tact::detail {
class protocol_host;
} // namespace tact::detail

namespace tact {

/// Sets what a class protocol's adapter needs to know of it (friend of
/// `base_protocol`).
class detail_access {
public:
  static void set_self(base_protocol& p, caf::abstract_actor* self,
                       detail::protocol_host* host);

  /// The protocol gives the read credit of the bytes it gets back itself,
  /// as it consumes them, instead of the adapter after each delivery.
  static void own_read_credit(base_protocol& p);

  [[nodiscard]] static bool owns_read_credit(const base_protocol& p);

  /// The protocol goes on after `connection_lost` (a coroutine that has
  /// not returned): its adapter keeps serving its timers and requests until
  /// this is false again.
  static void set_lingering(base_protocol& p, bool value);

  [[nodiscard]] static bool lingers(const base_protocol& p);
};

} // namespace tact

namespace tact::detail {

/// Spawns the adapter actor that runs the class protocol `p` on `mux`; it
/// starts with `current` as its transport (a protocol switched in with
/// `transport::set_protocol`, which gets no `connection_made`).
caf::actor spawn_adapter(multiplexer& mux, std::unique_ptr<base_protocol> p,
                         const transport& current);

} // namespace tact::detail
