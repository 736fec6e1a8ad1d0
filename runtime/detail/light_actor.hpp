#pragma once

#include <atomic>
#include <cstdint>

#include <caf/actor.hpp>
#include <caf/actor_config.hpp>
#include <caf/actor_system.hpp>
#include <caf/error.hpp>
#include <caf/mailbox_element.hpp>
#include <caf/make_actor.hpp>
#include <caf/message.hpp>
#include <caf/monitorable_actor.hpp>
#include <caf/resumable.hpp>

#include "tact/runtime/detail/multiplexer.hpp"

namespace tact::detail {

/// A small actor that lives on a multiplexer: the base of transports and
/// protocol adapters, one or two per connection.
///
/// It is a full CAF actor — it has an address, receives messages through
/// `caf::actor` handles from any thread, can be monitored, and sends and
/// answers requests — but it keeps its own lock-free mailbox and dispatches
/// on message type itself, instead of carrying `event_based_actor`'s behaviour
/// stack, stream machinery and multi-queue mailbox (about 1 KiB per actor).
/// The multiplexer resumes it on the loop thread; a peer on the same thread
/// may also hand it a message by a direct call when it is idle (`run_now`),
/// which keeps mailbox order: nothing can be queued ahead of a message that
/// is delivered while the mailbox is empty.
class light_actor : public caf::monitorable_actor, public caf::resumable {
public:
  light_actor(caf::actor_config& cfg, multiplexer& mux);

  ~light_actor() override;

  // -- CAF interfaces ------------------------------------------------------------

  void enqueue(caf::mailbox_element_ptr what, caf::execution_unit*) override;

  subtype_t subtype() const override {
    return resumable::function_object;
  }

  resume_result resume(caf::execution_unit*, size_t max_throughput) override;

  void intrusive_ptr_add_ref_impl() override;

  void intrusive_ptr_release_impl() override;

  void on_destroy() override;

  // -- starting ---------------------------------------------------------------------

  /// Schedules `on_start` on the loop thread. Call once, after spawning.
  void start();

  // -- direct delivery --------------------------------------------------------------

  /// True when a message may be handled by a direct call now: on the loop
  /// thread, started, nothing queued or scheduled, not already running.
  [[nodiscard]] bool can_run_now() const noexcept {
    // The thread first: the plain fields belong to the loop thread.
    return mux_.on_loop_thread() && started_ && !busy_ && !terminated_
           && !quit_pending_ && !scheduled_.load(std::memory_order_relaxed)
           && local_head_ == nullptr
           && inbox_.load(std::memory_order_relaxed) == nullptr;
  }

  /// Runs `f` as if it were the handler of a message delivered now, if
  /// `can_run_now()`; returns false (and does nothing) otherwise.
  template <class F>
  bool run_now(F&& f) {
    if (!can_run_now())
      return false;
    struct busy_guard {
      bool& flag;
      ~busy_guard() { flag = false; }
    } guard{busy_};
    busy_ = true;
    f();
    if (quit_pending_)
      finish();
    return true;
  }

  [[nodiscard]] multiplexer& mux() noexcept { return mux_; }

  /// Who asked a request and under which id, kept to answer it later.
  struct pending_reply {
    caf::strong_actor_ptr sender;
    caf::message_id mid;
  };

  /// This actor as a handle.
  [[nodiscard]] caf::actor handle() noexcept;

protected:
  /// First code to run, on the loop thread.
  virtual void on_start() {
    // nop
  }

  /// Handles one message; runs on the loop thread.
  virtual void on_message(caf::mailbox_element& x) = 0;

  /// Handles an exit message (`send_exit`, a linked actor's end) whose
  /// reason is not `normal`; quits with that reason by default.
  virtual void on_exit(caf::error reason) {
    quit(std::move(reason));
  }

  /// Terminates the actor once the current handler returns; monitors get
  /// `reason`.
  void quit(caf::error reason = caf::error{});

  [[nodiscard]] bool quitting() const noexcept {
    return quit_pending_ || terminated_;
  }

  /// Sends `msg` to `dest` with this actor as the sender.
  void send_to(const caf::actor& dest, caf::message msg);

  /// Sends `msg` to `dest` as a request; returns its id, which the answer
  /// carries (see `answer_to`).
  uint64_t request_to(const caf::actor& dest, caf::message msg);

  /// If `x` is the answer to a request of this actor, returns that
  /// request's id, else 0.
  [[nodiscard]] static uint64_t answer_to(const caf::mailbox_element& x);

  /// The request `x`, to answer later with `reply(pending, msg)`.
  [[nodiscard]] static pending_reply later(const caf::mailbox_element& x) {
    return {x.sender, x.mid};
  }

  /// Answers the request `x` with `msg`.
  void reply(const caf::mailbox_element& x, caf::message msg);

  /// Answers a request kept with `later` (nothing if it was no request).
  void reply(const pending_reply& to, caf::message msg);

  void monitor(const caf::actor& whom);

  void demonitor(const caf::actor& whom);

  /// Set while a handler of this actor runs, directly or from the mailbox.
  bool busy_ = false;

private:
  void finish();
  resume_result retire();
  void dispatch(caf::mailbox_element& x);
  void drain(bool bounce);
  bool take_inbox();

  multiplexer& mux_;
  std::atomic<caf::mailbox_element*> inbox_{nullptr};
  // Set until start(): messages sent before then (an actor can be known
  // before it starts) wait in the inbox instead of scheduling it early.
  std::atomic<bool> scheduled_{true};
  // Taken from the inbox, in arrival order.
  caf::mailbox_element* local_head_ = nullptr;
  caf::mailbox_element* local_tail_ = nullptr;
  uint64_t last_request_ = 0;
  bool started_ = false;
  bool quit_pending_ = false;
  bool terminated_ = false;
  caf::error quit_reason_;
};

/// Spawns a light actor of type `T` on `mux` and starts it.
template <class T, class... Ts>
caf::actor spawn_light(multiplexer& mux, Ts&&... xs) {
  auto& sys = mux.system();
  caf::actor_config cfg{mux.home()};
  auto hdl = caf::make_actor<T, caf::actor>(sys.next_actor_id(), sys.node(),
                                            &sys, cfg, mux,
                                            std::forward<Ts>(xs)...);
  static_cast<light_actor*>(static_cast<T*>(
    caf::actor_cast<caf::abstract_actor*>(hdl)))->start();
  return hdl;
}

/// Returns `hdl` as a light actor living on `mux`, or nullptr.
light_actor* as_light(const caf::actor& hdl, const multiplexer& mux) noexcept;

/// Returns `hdl` as a light actor of any loop, or nullptr: for what may
/// be read from another thread (its identity, its transport's shared
/// state), never for a direct call.
light_actor* find_light(const caf::actor& hdl) noexcept;

} // namespace tact::detail
