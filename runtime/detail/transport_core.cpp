// What every transport does with its protocol: deliveries, monitoring, and
// set_protocol with a handover, so that no delivery is lost, duplicated or
// reordered while the protocol changes.

#include <exception>
#include <string>

#include <caf/sec.hpp>
#include <caf/system_messages.hpp>

#include "tact/actors/protocol.hpp"
#include "tact/runtime/detail/match.hpp"
#include "tact/runtime/detail/transport_core.hpp"
#include "tact/runtime/errc.hpp"
#include "tact/runtime/messages.hpp"

namespace tact::detail {

transport_core::transport_core(caf::actor_config& cfg, multiplexer& mux,
                               transport_kind kind, uint64_t read_credit,
                               caf::actor protocol)
  : light_actor(cfg, mux), state_(*this, kind, read_credit),
    protocol_(std::move(protocol)) {
  state_.set_protocol(protocol_);
}

transport transport_core::make_handle() {
  return transport{handle(), &state_};
}

void transport_core::deliver(caf::message msg) {
  if (switching())
    held_.push_back(std::move(msg));
  else if (protocol_)
    send_to(protocol_, std::move(msg));
}

std::optional<caf::config_value>
transport_core::extra_info(std::string_view name) const {
  if (state_.kind == transport_kind::subprocess)
    return name == "subprocess"
             ? std::optional{caf::config_value{
               static_cast<int64_t>(state_.sub->pid)}}
             : std::nullopt;
  if (state_.kind == transport_kind::read_pipe
      || state_.kind == transport_kind::write_pipe)
    return name == "pipe"
             ? std::optional{caf::config_value{static_cast<int64_t>(state_.fd)}}
             : std::nullopt;
  // Not connected (an unconnected datagram endpoint): no value, as
  // asyncio's None.
  if (name == "peername")
    return state_.peer.family == 0 ? std::nullopt
                                   : std::optional{to_config_value(state_.peer)};
  if (name == "sockname")
    return to_config_value(state_.local);
  if (name == "socket")
    return caf::config_value{static_cast<int64_t>(state_.fd)};
  if (name == "family")
    return caf::config_value{std::string{state_.family}};
  return std::nullopt;
}

std::vector<std::string_view> transport_core::extra_info_names() const {
  if (state_.kind == transport_kind::subprocess)
    return {"subprocess"};
  if (state_.kind == transport_kind::read_pipe
      || state_.kind == transport_kind::write_pipe)
    return {"pipe"};
  return {"peername", "sockname", "socket", "family"};
}

void transport_core::direct_close() {
  handle_now(caf::make_message(op::close{}));
}

void transport_core::direct_write_eof() {
  handle_now(caf::make_message(op::write_eof{}));
}

void transport_core::handle_now(caf::message msg) {
  auto elem = caf::make_mailbox_element(nullptr, caf::make_message_id(), {},
                                        std::move(msg));
  on_message(*elem);
}

void transport_core::deliver_data_message(bytes& data) {
  deliver(caf::make_message(data_received{std::move(data)}));
}

void transport_core::request_eof() {
  if (switching())
    held_.push_back(caf::make_message(eof_received{}));
  else if (protocol_)
    eof_request_ = request_to(protocol_, caf::make_message(eof_received{}));
}

bool transport_core::ask_eof(bool& keep_open) {
  if (!switching() && fast_ != nullptr) {
    // The protocol may end this connection from inside: hold it.
    auto keep = protocol_;
    auto* core = fast_;
    bool answered = false;
    core->run_now([&] { answered = core->direct_eof(*this, keep_open); });
    if (answered)
      return true;
  }
  request_eof();
  return false;
}

uint64_t transport_core::install_protocol(protocol_factory& factory) {
  auto app = factory.make(mux());
  if (!app || !*app) {
    if (!app)
      mux().warn(describe(app.error()));
    return 0;
  }
  protocol_ = std::move(*app);
  state_.set_protocol(protocol_);
  watch_protocol(false);
  return request_to(protocol_, caf::make_message(connection_made{make_handle()}));
}

bool transport_core::made_ok(const caf::type_erased_tuple& answer) {
  return answer.empty()
         || (detail::is<caf::error>(answer)
             && answer.get_as<caf::error>(0) == caf::sec::unexpected_message);
}

bool transport_core::read_command(caf::type_erased_tuple& msg, bool& paused,
                                  bool closing) {
  auto pause = detail::is<op::pause_reading>(msg);
  if (pause || detail::is<op::resume_reading>(msg)) {
    if (!closing) {
      // A local handle is the only writer of the shared flag, and what it
      // last wrote is what holds: writing it here would let an earlier
      // switch, arriving after a later call, undo that call (pause, resume,
      // pause would end up reading), and so would taking the command's own
      // value when two threads switch at once.
      auto applied = pause ? msg.get_as<op::pause_reading>(0).applied
                           : msg.get_as<op::resume_reading>(0).applied;
      if (applied) {
        paused = state_.reading_paused.load();
      } else {
        paused = pause;
        state_.reading_paused = paused;
      }
    }
    return true;
  }
  if (detail::is<op::consumed>(msg)) {
    give_back_credit(msg.get_as<op::consumed>(0).n);
    return true;
  }
  return false;
}

bool transport_core::limits_command(const caf::type_erased_tuple& msg) {
  if (!detail::is<op::set_write_buffer_limits>(msg))
    return false;
  // A local handle stored the limits already; storing them again here
  // could undo a later call that the handle made meanwhile.
  if (auto& lim = msg.get_as<op::set_write_buffer_limits>(0); !lim.applied) {
    state_.high = lim.high;
    state_.low = lim.low;
  }
  return true;
}

void transport_core::give_back_credit(uint64_t n) {
  if (n > 0)
    state_.unconsumed -= n;
  // A wake-up may come for credit that this transport has spent again
  // since: the giver cleared `credit_blocked` after the transport had set
  // it for its new block. Set it again, or the next giver sends nothing.
  arm_credit_wakeup();
}

void transport_core::arm_credit_wakeup() {
  if (state_.unconsumed.load() < state_.read_credit) {
    state_.credit_blocked = false;
    return;
  }
  state_.credit_blocked = true;
  // A giver that took its bytes off before the flag was set saw it clear
  // and sent nothing: look again.
  if (state_.unconsumed.load() < state_.read_credit)
    state_.credit_blocked = false;
}

bool transport_core::handle_protocol_message(caf::mailbox_element& x,
                                             caf::type_erased_tuple& msg) {
  if (auto id = answer_to(x); id != 0) {
    if (id != handover_id_)
      return false;
    // A stash, or anything else (an error from a protocol that is gone or
    // has no handler): nothing handed over.
    finish_switch(detail::is<handover_stash>(msg)
                    ? &msg.get_mutable_as<handover_stash>(0)
                    : nullptr);
    return true;
  }
  if (detail::is<op::set_protocol>(msg)) {
    if (ended_)
      return true;
    auto& sp = msg.get_mutable_as<op::set_protocol>(0);
    // A local handle stored it in the shared state already.
    if (!sp.applied)
      state_.set_protocol(sp.protocol);
    switches_.push_back({std::move(sp.protocol), std::move(sp.unread)});
    if (!switching())
      begin_switch();
    return true;
  }
  if (detail::is<caf::down_msg>(msg)) {
    auto& down = msg.get_as<caf::down_msg>(0);
    if (!protocol_ || down.source != protocol_.address())
      return false;
    if (switching()) {
      // The protocol being left is gone (a remote node lost, say): it
      // hands over nothing, and its answer will never come.
      finish_switch(nullptr);
      return true;
    }
    protocol_ = nullptr;
    fast_ = nullptr;
    monitored_ = false;
    on_protocol_down();
    return true;
  }
  return false;
}

void transport_core::begin_switch() {
  auto& next = switches_.front();
  if (protocol_ && protocol_ != next.actor) {
    handover_id_ = request_to(protocol_, caf::make_message(handover{next.actor}));
    return;
  }
  finish_switch(nullptr);
}

void transport_core::finish_switch(handover_stash* stash) {
  handover_id_ = 0;
  auto next = std::move(switches_.front());
  switches_.erase(switches_.begin());
  if (protocol_ != next.actor) {
    unwatch_protocol();
    protocol_ = std::move(next.actor);
    if (protocol_)
      watch_protocol(true);
  }
  // What the old protocol left unread, then what it received and did not
  // handle, then what was held here: the order the bytes came in.
  if (!next.unread.empty()) {
    charge_credit(next.unread.size());
    deliver(caf::make_message(data_received{std::move(next.unread)}));
  }
  if (stash != nullptr)
    for (auto& m : stash->messages)
      redeliver(std::move(m));
  auto held = std::move(held_);
  held_.clear();
  for (auto& m : held)
    redeliver(std::move(m));
  if (!switches_.empty()) {
    begin_switch();
    return;
  }
  if (loss_deferred_) {
    loss_deferred_ = false;
    end_protocol(std::move(deferred_loss_), quit_deferred_);
    return;
  }
  on_switched();
}

void transport_core::redeliver(caf::message msg) {
  if (detail::is<eof_received>(msg))
    request_eof();
  else if (!detail::is<connection_lost>(msg) && !detail::is<handover>(msg))
    deliver(std::move(msg));
}

// The class adapter made for this connection needs no monitor: it ends only
// through connection_lost or by aborting this transport (see adapter.cpp).
// Behaviours, and any protocol installed by set_protocol (an adapter there
// has no handle to abort with), are monitored.
void transport_core::watch_protocol(bool installed) {
  fast_ = dynamic_cast<protocol_core*>(as_light(protocol_, mux()));
  monitored_ = installed || fast_ == nullptr;
  if (monitored_)
    monitor(protocol_);
}

void transport_core::unwatch_protocol() {
  if (protocol_ && monitored_)
    demonitor(protocol_);
  monitored_ = false;
  fast_ = nullptr;
}

void transport_core::end_protocol(caf::error reason, bool quit_now) {
  if (ended_)
    return;
  if (switching()) {
    // The old protocol is handing over what it holds; connection_lost
    // comes after that, to the new one.
    loss_deferred_ = true;
    quit_deferred_ = quit_now;
    deferred_loss_ = std::move(reason);
    return;
  }
  ended_ = true;
  switches_.clear();
  held_.clear();
  if (protocol_) {
    auto* core = fast_;
    unwatch_protocol();
    // A protocol core on this loop with nothing queued hears it by a
    // direct call.
    bool told = false;
    if (core != nullptr)
      core->run_now([&] { told = core->direct_lost(reason, *this); });
    if (!told)
      send_to(protocol_, caf::make_message(connection_lost{std::move(reason)}));
    protocol_ = nullptr;
  }
  if (quit_now)
    quit();
}

} // namespace tact::detail
