#pragma once

#include <atomic>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <caf/fwd.hpp>

#include "tact/runtime/detail/multiplexer.hpp"

namespace tact::detail {

/// The runtime's loops: one multiplexer (thread, epoll, timers, ready
/// list) each. A connection lives on one loop for its whole life; which
/// one is decided when it is made (`pick`, `least_loaded`).
class loop_group {
public:
  /// `n` loops (at least one), not yet running.
  loop_group(caf::actor_system& sys, size_t n);
  ~loop_group();

  loop_group(const loop_group&) = delete;
  loop_group& operator=(const loop_group&) = delete;

  [[nodiscard]] size_t size() const noexcept { return loops_.size(); }

  [[nodiscard]] multiplexer& at(size_t i) noexcept { return *loops_[i]; }

  /// The loop the calling thread runs, when it is one of these; else null.
  [[nodiscard]] multiplexer* current() const noexcept;

  /// Whether the calling thread runs one of these loops.
  [[nodiscard]] bool on_loop_thread() const noexcept {
    return current() != nullptr;
  }

  /// Where an operation started by the caller goes: the loop a
  /// `placement` names, else the caller's own loop when it runs one (what
  /// an actor starts stays beside it, with no thread hand-off), else the
  /// least loaded.
  [[nodiscard]] multiplexer& pick() noexcept {
    if (placed_ != nullptr && placed_->group() == this)
      return *placed_;
    auto* cur = current();
    return cur != nullptr ? *cur : least_loaded();
  }

  /// While it lives, `pick()` on this thread gives `loop`: a server makes
  /// a connection's protocol on the acceptor's thread for another loop,
  /// and what the user's factory starts there belongs with that loop.
  class placement {
  public:
    explicit placement(multiplexer& loop) noexcept : prev_(placed_) {
      placed_ = &loop;
    }
    ~placement() { placed_ = prev_; }
    placement(const placement&) = delete;
    placement& operator=(const placement&) = delete;

  private:
    multiplexer* prev_;
  };

  /// The loop with the fewest live actors; ties go round, so that a burst
  /// made from one thread before any of it runs is spread too.
  [[nodiscard]] multiplexer& least_loaded() noexcept;

  /// Starts every loop's thread.
  void start();

  /// Stops every loop and joins its thread.
  void stop();

  /// Blocks until no loop has a live actor or `timeout_ms` elapsed;
  /// returns whether none is left.
  bool wait_for_actors(int timeout_ms);

  /// Live actors over all loops.
  [[nodiscard]] size_t live_actors() const noexcept;

  /// Runs `fn(loop)` on each loop's thread in turn and waits for it.
  void run_sync_each(const std::function<void(multiplexer&)>& fn);

  /// One warning hook for all loops, called for one warning at a time.
  void set_warning_hook(std::function<void(const std::string&)> hook);

  void set_resolver_options(const resolver_options& settings);

  /// Reports a warning through the shared hook. Thread-safe.
  void warn(const std::string& text) { loops_.front()->warn(text); }

private:
  static thread_local multiplexer* placed_;
  std::vector<std::unique_ptr<multiplexer>> loops_;
  std::atomic<size_t> turn_{0};
};

/// How many loops a runtime runs when `runtime_options::loops` is not
/// set: the environment's `TACT_LOOPS` (a number; 0: one per available
/// CPU), else one.
size_t default_loop_count();

/// `requested` loops, where 0 means one per CPU the process may use.
size_t loop_count_for(size_t requested);

} // namespace tact::detail
