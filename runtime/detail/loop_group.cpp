#include "tact/runtime/detail/loop_group.hpp"

#include <chrono>
#include <cstdlib>
#include <limits>

#include "tact/runtime/detail/cpus.hpp"

namespace tact::detail {

thread_local multiplexer* loop_group::placed_ = nullptr;

loop_group::loop_group(caf::actor_system& sys, size_t n) {
  if (n == 0)
    n = 1;
  loops_.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    loops_.push_back(std::make_unique<multiplexer>(sys));
    loops_.back()->set_group(this);
  }
  // One sink: a user's hook never runs on two loop threads at once.
  for (size_t i = 1; i < n; ++i)
    loops_[i]->share_warnings_with(*loops_[0]);
}

loop_group::~loop_group() {
  stop();
}

multiplexer* loop_group::current() const noexcept {
  auto* cur = multiplexer::current();
  if (cur == nullptr)
    return nullptr;
  for (auto& loop : loops_)
    if (loop.get() == cur)
      return loop.get();
  return nullptr;
}

multiplexer& loop_group::least_loaded() noexcept {
  auto n = loops_.size();
  if (n == 1)
    return *loops_.front();
  auto first = turn_.fetch_add(1, std::memory_order_relaxed) % n;
  auto best = first;
  auto best_load = std::numeric_limits<size_t>::max();
  for (size_t k = 0; k < n; ++k) {
    auto i = (first + k) % n;
    auto load = loops_[i]->live_actors();
    if (load < best_load) {
      best = i;
      best_load = load;
    }
  }
  return *loops_[best];
}

void loop_group::start() {
  for (auto& loop : loops_)
    loop->start();
}

void loop_group::stop() {
  for (auto& loop : loops_)
    loop->stop();
}

bool loop_group::wait_for_actors(int timeout_ms) {
  using clock = std::chrono::steady_clock;
  auto deadline = clock::now() + std::chrono::milliseconds{timeout_ms};
  // Round after round: an actor of a loop already waited for may spawn one
  // on another before it ends.
  for (;;) {
    auto all_done = true;
    for (auto& loop : loops_) {
      if (loop->live_actors() == 0)
        continue;
      all_done = false;
      auto left = std::chrono::ceil<std::chrono::milliseconds>(
        deadline - clock::now());
      if (left.count() <= 0)
        return false;
      loop->wait_for_actors(static_cast<int>(left.count()));
    }
    if (all_done)
      return true;
  }
}

size_t loop_group::live_actors() const noexcept {
  size_t n = 0;
  for (auto& loop : loops_)
    n += loop->live_actors();
  return n;
}

void loop_group::run_sync_each(const std::function<void(multiplexer&)>& fn) {
  for (auto& loop : loops_) {
    auto* mux = loop.get();
    mux->run_sync([&] { fn(*mux); });
  }
}

void loop_group::set_warning_hook(
  std::function<void(const std::string&)> hook) {
  loops_.front()->set_warning_hook(std::move(hook));
}

void loop_group::set_resolver_options(const resolver_options& settings) {
  for (auto& loop : loops_)
    loop->set_resolver_options(settings);
}

size_t loop_count_for(size_t requested) {
  return requested == 0 ? available_cpus() : requested;
}

size_t default_loop_count() {
  auto* text = std::getenv("TACT_LOOPS");
  if (text == nullptr || *text == '\0')
    return 1;
  char* end = nullptr;
  auto n = std::strtoul(text, &end, 10);
  if (*end != '\0' || n > 1024)
    return 1;
  return loop_count_for(n);
}

} // namespace tact::detail
