#pragma once

#include <caf/event_based_actor.hpp>

#include "tact/runtime/detail/multiplexer.hpp"

namespace tact::detail {

/// Base of every actor that lives on a multiplexer: transports, servers and
/// the protocol adapters. CAF resumes it on the multiplexer's thread, never
/// on a scheduler worker, so it may touch its descriptors directly and its
/// messages to other loop actors cost no thread wake-up.
class mux_actor : public caf::event_based_actor {
public:
  mux_actor(caf::actor_config& cfg, multiplexer& mux)
    : caf::event_based_actor(cfg), mux_(mux), home_(mux.home()) {
    mux_.actor_started();
  }

  using caf::event_based_actor::enqueue;

  void enqueue(caf::mailbox_element_ptr ptr, caf::execution_unit*) override {
    caf::event_based_actor::enqueue(std::move(ptr), home_);
  }

  void launch(caf::execution_unit*, bool lazy, bool hide) override {
    caf::event_based_actor::launch(home_, lazy, hide);
  }

  void on_exit() override {
    caf::event_based_actor::on_exit();
    mux_.actor_finished();
  }

  [[nodiscard]] multiplexer& mux() noexcept { return mux_; }

private:
  multiplexer& mux_;
  caf::execution_unit* home_;
};

} // namespace tact::detail
