#pragma once

#include <atomic>

namespace tact::detail {

/// A tiny spin lock for the rarely written protocol handle.
class spin_lock {
public:
  void lock() noexcept {
    while (flag_.test_and_set(std::memory_order_acquire)) {
      // spin
    }
  }
  void unlock() noexcept { flag_.clear(std::memory_order_release); }

private:
  std::atomic_flag flag_ = ATOMIC_FLAG_INIT;
};

} // namespace tact::detail
