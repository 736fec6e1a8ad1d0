#pragma once

// tact's messages across nodes: CAF's own distribution (the io middleman
// and its BASP protocol) carries them; these calls set an actor system up
// for it.

#include <caf/fwd.hpp>
#include <caf/io/middleman_actor.hpp>

#include "tact/export.hpp"

namespace tact {

/// Announces every tact type that may cross a node to `cfg`: the events a
/// transport sends (`connection_made`, `data_received`, ...), the `op::`
/// commands a protocol sends, `handover` and its stash, transport handles
/// and endpoints. A transport handle that crosses keeps its actor and a
/// copy of the extra info; its commands become messages.
TACT_EXPORT void add_message_types(caf::actor_system_config& cfg);

/// Sets `cfg` up for distribution in one call: loads CAF's io middleman,
/// announces tact's message types, registers tact's error category (so
/// errors from another node print by name) and turns on BASP heartbeats
/// (one a second; a connection silent for 10 s is closed, and the actors
/// behind it are down). Set `middleman.heartbeat-interval` and
/// `middleman.connection-timeout` after this call to change them. `runtime_options::distributed`
/// does this for a runtime's own system.
TACT_EXPORT void enable_distribution(caf::actor_system_config& cfg);

/// The actor to ask for links without blocking (`connect_atom`,
/// `publish_atom`, as `caf::io::middleman_actor` describes): CAF's openssl
/// one when the system has `runtime_options::cluster_tls`, else the plain
/// middleman's. Asking the plain one on a TLS cluster would open a plain
/// BASP link, which the other nodes refuse.
[[nodiscard]] TACT_EXPORT caf::io::middleman_actor
link_actor(caf::actor_system& sys);

} // namespace tact
