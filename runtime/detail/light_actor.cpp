#include "tact/runtime/detail/light_actor.hpp"
#include "tact/runtime/detail/match.hpp"

#include <caf/actor_cast.hpp>
#include <caf/actor_system.hpp>
#include <caf/default_attachable.hpp>
#include <caf/detail/sync_request_bouncer.hpp>
#include <caf/exit_reason.hpp>
#include <caf/make_actor.hpp>
#include <caf/system_messages.hpp>

namespace tact::detail {

light_actor::light_actor(caf::actor_config& cfg, multiplexer& mux)
  : caf::monitorable_actor(cfg), mux_(mux) {
  mux_.actor_started();
}

light_actor::~light_actor() {
  drain(false);
}

void light_actor::on_destroy() {
  // Destroyed without having quit (the loop stopped first): tell monitors.
  if (!terminated_) {
    terminated_ = true;
    cleanup(caf::make_error(caf::exit_reason::unreachable), nullptr);
    mux_.actor_finished();
  }
  caf::monitorable_actor::on_destroy();
}

void light_actor::enqueue(caf::mailbox_element_ptr what, caf::execution_unit*) {
  if (getf(is_terminated_flag)) {
    if (what->mid.is_request()) {
      caf::detail::sync_request_bouncer bounce{caf::exit_reason::normal};
      bounce(what->sender, what->mid);
    }
    return;
  }
  auto* elem = what.release();
  auto* head = inbox_.load(std::memory_order_relaxed);
  do {
    elem->next = head;
  } while (!inbox_.compare_exchange_weak(head, elem, std::memory_order_seq_cst,
                                         std::memory_order_relaxed));
  // Whoever flips `scheduled_` schedules; the running actor checks the inbox
  // again after clearing it, so no message is left behind.
  if (!scheduled_.exchange(true)) {
    intrusive_ptr_add_ref(ctrl());
    mux_.home()->exec_later(this);
  }
}

void light_actor::start() {
  scheduled_ = true;
  intrusive_ptr_add_ref(ctrl());
  mux_.home()->exec_later(this);
}

bool light_actor::take_inbox() {
  auto* list = inbox_.exchange(nullptr, std::memory_order_acquire);
  if (list == nullptr)
    return false;
  // The inbox is a stack: reverse it into arrival order.
  caf::mailbox_element* reversed = nullptr;
  caf::mailbox_element* last = list;
  while (list != nullptr) {
    auto* next = static_cast<caf::mailbox_element*>(list->next);
    list->next = reversed;
    reversed = list;
    list = next;
  }
  if (local_tail_ != nullptr)
    local_tail_->next = reversed;
  else
    local_head_ = reversed;
  local_tail_ = last;
  return true;
}

caf::resumable::resume_result light_actor::resume(caf::execution_unit*,
                                                  size_t max_throughput) {
  if (terminated_)
    return retire();
  if (quit_pending_) {
    // quit() called outside a handler (from handle_io).
    finish();
    return retire();
  }
  if (!started_) {
    started_ = true;
    busy_ = true;
    on_start();
    busy_ = false;
    if (quit_pending_) {
      finish();
      return retire();
    }
  }
  size_t handled = 0;
  for (;;) {
    if (local_head_ == nullptr && !take_inbox()) {
      scheduled_ = false;
      // A sender may have pushed after take_inbox() and seen scheduled_ set.
      if (inbox_.load() == nullptr || scheduled_.exchange(true))
        return resumable::awaiting_message;
      continue;
    }
    if (handled == max_throughput)
      return resumable::resume_later;
    caf::mailbox_element_ptr elem{local_head_};
    local_head_ = static_cast<caf::mailbox_element*>(elem->next);
    if (local_head_ == nullptr)
      local_tail_ = nullptr;
    elem->next = nullptr;
    busy_ = true;
    dispatch(*elem);
    busy_ = false;
    ++handled;
    if (quit_pending_) {
      finish();
      return retire();
    }
  }
}

caf::resumable::resume_result light_actor::retire() {
  // A sender that passed the terminated check before finish() and pushed
  // after the drain found scheduled_ set and scheduled nothing: look again
  // after letting go, so its request is bounced rather than left behind.
  for (;;) {
    drain(true);
    scheduled_ = false;
    if (inbox_.load() == nullptr || scheduled_.exchange(true))
      return resumable::done;
  }
}

void light_actor::intrusive_ptr_add_ref_impl() {
  intrusive_ptr_add_ref(ctrl());
}

void light_actor::intrusive_ptr_release_impl() {
  intrusive_ptr_release(ctrl());
}

caf::actor light_actor::handle() noexcept {
  return caf::actor_cast<caf::actor>(this);
}

void light_actor::quit(caf::error reason) {
  if (quit_pending_ || terminated_)
    return;
  quit_pending_ = true;
  quit_reason_ = std::move(reason);
  // Outside a handler nobody would notice: let the next resume finish.
  if (!busy_ && !scheduled_.exchange(true)) {
    intrusive_ptr_add_ref(ctrl());
    mux_.home()->exec_later(this);
  }
}

void light_actor::dispatch(caf::mailbox_element& x) {
  auto& msg = x.content();
  if (detail::is<caf::exit_msg>(msg)) {
    auto& reason = msg.get_mutable_as<caf::exit_msg>(0).reason;
    if (reason && reason != caf::exit_reason::normal)
      on_exit(std::move(reason));
    return;
  }
  on_message(x);
}

void light_actor::finish() {
  if (terminated_)
    return;
  terminated_ = true;
  quit_pending_ = false;
  cleanup(std::move(quit_reason_), nullptr);
  drain(true);
  mux_.actor_finished();
}

void light_actor::drain(bool bounce) {
  take_inbox();
  while (local_head_ != nullptr) {
    caf::mailbox_element_ptr elem{local_head_};
    local_head_ = static_cast<caf::mailbox_element*>(elem->next);
    elem->next = nullptr;
    if (bounce && elem->mid.is_request()) {
      caf::detail::sync_request_bouncer f{caf::exit_reason::normal};
      f(elem->sender, elem->mid);
    }
  }
  local_tail_ = nullptr;
}

void light_actor::send_to(const caf::actor& dest, caf::message msg) {
  if (!dest)
    return;
  dest->enqueue(caf::make_mailbox_element(ctrl(), caf::make_message_id(), {},
                                          std::move(msg)),
                nullptr);
}

uint64_t light_actor::request_to(const caf::actor& dest, caf::message msg) {
  auto id = ++last_request_;
  auto mid = caf::make_message_id(id);
  if (dest)
    dest->enqueue(caf::make_mailbox_element(ctrl(), mid, {}, std::move(msg)),
                  nullptr);
  return id;
}

uint64_t light_actor::answer_to(const caf::mailbox_element& x) {
  if (!x.mid.is_response())
    return 0;
  return x.mid.integer_value() & caf::message_id::request_id_mask;
}

void light_actor::reply(const caf::mailbox_element& x, caf::message msg) {
  reply(later(x), std::move(msg));
}

void light_actor::reply(const pending_reply& to, caf::message msg) {
  if (!to.mid.is_request() || !to.sender)
    return;
  to.sender->enqueue(caf::make_mailbox_element(ctrl(), to.mid.response_id(),
                                               {}, std::move(msg)),
                     nullptr);
}

void light_actor::monitor(const caf::actor& whom) {
  if (whom)
    whom->attach(caf::default_attachable::make_monitor(whom.address(),
                                                       address()));
}

void light_actor::demonitor(const caf::actor& whom) {
  if (!whom)
    return;
  caf::default_attachable::observe_token tk{address(),
                                            caf::default_attachable::monitor};
  whom->detach(tk);
}

light_actor* find_light(const caf::actor& hdl) noexcept {
  if (!hdl)
    return nullptr;
  return dynamic_cast<light_actor*>(caf::actor_cast<caf::abstract_actor*>(hdl));
}

light_actor* as_light(const caf::actor& hdl, const multiplexer& mux) noexcept {
  auto* ptr = find_light(hdl);
  if (ptr == nullptr || &ptr->mux() != &mux)
    return nullptr;
  return ptr;
}

} // namespace tact::detail
