#pragma once

// The base of every transport actor (its definitions: transport_core.cpp).

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include <caf/actor.hpp>
#include <caf/actor_addr.hpp>
#include <caf/mailbox_element.hpp>

#include "tact/runtime/bytes.hpp"
#include "tact/runtime/detail/light_actor.hpp"
#include "tact/runtime/detail/protocol_core.hpp"
#include "tact/runtime/detail/transport_state.hpp"

namespace tact::detail {

/// A transport actor as its handles see it — the shared state, and the one
/// command that handles may run by a direct call when they are on the
/// transport's loop and its mailbox is empty (see `light_actor::run_now`) —
/// and what every transport does with its protocol: deliveries, monitoring,
/// and `set_protocol` without losing a delivery.
///
/// Switching protocols: when `set_protocol(next)` reaches the transport, it
/// asks the protocol it is leaving for a `handover` and holds every delivery
/// (and stops reading) until the answer comes. The old protocol answers with
/// the deliveries it received after the switch was asked for and did not
/// handle (the class adapter does this itself); they go to `next` first,
/// then what the transport held. Later switches wait their turn, so bytes
/// reach each protocol in order, once.
class transport_core : public light_actor {
public:
  transport_core(caf::actor_config& cfg, multiplexer& mux, transport_kind kind,
                 uint64_t read_credit, caf::actor protocol = {});

  /// Queues or sends `data`, as `op::write` would. Runs inside `run_now`.
  virtual void direct_write(bytes& data) = 0;

  /// `op::close` and `op::write_eof` from a handle on this loop, by a direct
  /// call inside `run_now`. By default handled as the message would be,
  /// without the mailbox.
  virtual void direct_close();
  virtual void direct_write_eof();

  [[nodiscard]] transport_state& state() noexcept { return state_; }

  /// asyncio's `get_extra_info(name)`; any thread. A socket's addresses
  /// and descriptor, a pipe's descriptor, a child's pid; a layer adds its
  /// own keys to those of the transport below.
  [[nodiscard]] virtual std::optional<caf::config_value>
  extra_info(std::string_view name) const;

  /// The names `extra_info` may know, for `transport::extra_info()`.
  [[nodiscard]] virtual std::vector<std::string_view> extra_info_names() const;

  /// A handle on this transport for its protocol.
  [[nodiscard]] transport make_handle();

protected:
  // -- the protocol ------------------------------------------------------------

  /// Sends `msg` to the protocol; held while a switch is under way.
  void deliver(caf::message msg);

  /// Hands `data` to the protocol, charged to the read credit: by a direct
  /// call to a class protocol on this loop with nothing queued, else as
  /// `data_received` (held during a switch). Nothing without a protocol.
  void deliver_data(bytes& data);

  /// Asks the protocol about EOF (`eof_received`); held likewise.
  void request_eof();

  /// `request_eof`, or the protocol's answer at once by a direct call (a
  /// protocol core on this loop with nothing queued): true when
  /// `keep_open` holds that answer, false when it comes later
  /// (`is_eof_answer`).
  bool ask_eof(bool& keep_open);

  /// Whether `id` answers the current `eof_received` request.
  [[nodiscard]] bool is_eof_answer(uint64_t id) const noexcept {
    return id != 0 && id == eof_request_;
  }

  /// Handles `op::set_protocol`, the answer to a handover and the protocol's
  /// down message; false for any other message.
  bool handle_protocol_message(caf::mailbox_element& x,
                               caf::type_erased_tuple& msg);

  /// Monitors the protocol unless it is the class adapter made for this
  /// connection (`installed` false), which ends through this transport.
  void watch_protocol(bool installed);

  void unwatch_protocol();

  /// Sends `connection_lost` to the protocol and quits (unless `quit_now`
  /// is false: the caller quits later); while a switch is under way, once
  /// the old protocol has handed over.
  void end_protocol(caf::error reason, bool quit_now = true);

  /// A switch is under way: deliveries are held, reading should stop.
  [[nodiscard]] bool switching() const noexcept { return handover_id_ != 0; }

  /// Charges `n` delivered bytes to the read credit.
  void charge_credit(size_t n) {
    auto before = state_.unconsumed.fetch_add(n);
    if (before + n >= state_.read_credit)
      arm_credit_wakeup();
  }

  /// Makes the protocol with `factory` (a layer's: TLS, framing), installs
  /// it and sends it `connection_made`; returns that request's id, or 0
  /// (with a warning if the factory threw) when no protocol was made.
  uint64_t install_protocol(protocol_factory& factory);

  /// Whether `answer`, to `connection_made`, lets reading start: an empty
  /// message, or a behaviour without a handler for it.
  [[nodiscard]] static bool made_ok(const caf::type_erased_tuple& answer);

  /// A layer's handling of its protocol's read commands (`pause_reading`,
  /// `resume_reading`, `consumed`): updates `paused` (ignored once
  /// `closing`) and the shared state. True if `msg` was one; the caller
  /// then delivers what it can.
  bool read_command(caf::type_erased_tuple& msg, bool& paused, bool closing);

  /// `op::set_write_buffer_limits`: stores the limits unless a local handle
  /// did already; false for any other message.
  bool limits_command(const caf::type_erased_tuple& msg);

  /// Gives `n` bytes back to the read credit (`op::consumed`).
  void give_back_credit(uint64_t n);

  /// The credit protocol with the givers (`transport::consumed`): while
  /// the protocol holds the whole credit, `credit_blocked` is set, and the
  /// giver that clears it sends a wake-up (`op::consumed{0}`). Sets or
  /// clears it from the credit now, without losing a giver in between.
  void arm_credit_wakeup();

  /// The protocol is gone (down): end the connection.
  virtual void on_protocol_down() = 0;

  /// A switch finished; reading may resume.
  virtual void on_switched() {
    // nop
  }

  transport_state state_;
  caf::actor protocol_;
  // protocol_ as a class adapter on this loop, for direct delivery.
  protocol_core* fast_ = nullptr;

private:
  struct next_protocol {
    caf::actor actor;
    bytes unread;
  };

  // Handles `msg` now, as if it had come through the mailbox.
  void handle_now(caf::message msg);

  // deliver_data's message: a protocol elsewhere, busy, or with messages
  // queued ahead.
  void deliver_data_message(bytes& data);

  void begin_switch();
  void finish_switch(handover_stash* stash);
  void redeliver(caf::message msg);

  // Switches asked for and not begun, oldest first.
  std::vector<next_protocol> switches_;
  // Deliveries held during a switch.
  std::vector<caf::message> held_;
  caf::error deferred_loss_;
  uint64_t handover_id_ = 0;
  uint64_t eof_request_ = 0;
  bool monitored_ = false;
  bool loss_deferred_ = false;
  bool quit_deferred_ = true;
  bool ended_ = false;
};

// Inline: it runs once per read.
inline void transport_core::deliver_data(bytes& data) {
  if (!protocol_)
    return;
  charge_credit(data.size());
  // A class protocol on this loop with nothing queued takes the bytes by a
  // direct call: same order as the mailbox, no message. It may write back
  // from inside (direct_write).
  if (fast_ != nullptr && fast_->run_now([&] { fast_->direct_data(data, *this); }))
    return;
  deliver_data_message(data);
}

} // namespace tact::detail
