#include "tact/runtime/distribution.hpp"

#include <chrono>

#include <caf/actor_system_config.hpp>
#include <caf/io/middleman.hpp>
#include <caf/openssl/manager.hpp>

#include "tact/runtime/errc.hpp"
#include "tact/runtime/messages.hpp"

namespace tact {

void add_message_types(caf::actor_system_config& cfg) {
  // The names are the ones the inspect overloads give.
  cfg.add_message_type<transport>("tact.transport")
    .add_message_type<endpoint>("tact.endpoint")
    .add_message_type<connection_made>("tact.connection_made")
    .add_message_type<data_received>("tact.data_received")
    .add_message_type<eof_received>("tact.eof_received")
    .add_message_type<pause_writing>("tact.pause_writing")
    .add_message_type<resume_writing>("tact.resume_writing")
    .add_message_type<connection_lost>("tact.connection_lost")
    .add_message_type<datagram_received>("tact.datagram_received")
    .add_message_type<error_received>("tact.error_received")
    .add_message_type<pipe_data_received>("tact.pipe_data_received")
    .add_message_type<pipe_connection_lost>("tact.pipe_connection_lost")
    .add_message_type<process_exited>("tact.process_exited")
    .add_message_type<handover>("tact.handover")
    .add_message_type<handover_stash>("tact.handover_stash")
    .add_message_type<op::write>("tact.op.write")
    .add_message_type<op::sendto>("tact.op.sendto")
    .add_message_type<op::write_eof>("tact.op.write_eof")
    .add_message_type<op::close>("tact.op.close")
    .add_message_type<op::abort>("tact.op.abort")
    .add_message_type<op::pause_reading>("tact.op.pause_reading")
    .add_message_type<op::resume_reading>("tact.op.resume_reading")
    .add_message_type<op::set_write_buffer_limits>(
      "tact.op.set_write_buffer_limits")
    .add_message_type<op::set_protocol>("tact.op.set_protocol")
    .add_message_type<op::consumed>("tact.op.consumed")
    .add_message_type<op::get_write_buffer_size>(
      "tact.op.get_write_buffer_size");
}

void enable_distribution(caf::actor_system_config& cfg) {
  using namespace std::chrono_literals;
  cfg.load<caf::io::middleman>();
  // CAF sends no heartbeats by default, so a peer machine that vanishes
  // without a reset (power, cable, a frozen VM) is never noticed: send one
  // every second and give up on a connection silent for 10 s.
  cfg.set("middleman.heartbeat-interval", caf::timespan{1s});
  cfg.set("middleman.connection-timeout", caf::timespan{10s});
  add_message_types(cfg);
  add_error_category(cfg);
}

caf::io::middleman_actor link_actor(caf::actor_system& sys) {
  if (sys.has_openssl_manager())
    return sys.openssl_manager().actor_handle();
  return sys.middleman().actor_handle();
}

} // namespace tact
