#include "tact/runtime/detail/multiplexer.hpp"
#include "tact/runtime/detail/resolver.hpp"

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <future>

#include <csignal>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <caf/actor_system.hpp>
#include <caf/resumable.hpp>
#include <caf/scheduler/abstract_coordinator.hpp>

namespace tact::detail {

namespace {

// Enough for the largest read asyncio does in one go (max_size = 256 KiB).
constexpr size_t scratch_bytes = 256 * 1024;

// Messages an actor may handle per resume before others get their turn.
constexpr size_t max_throughput = 64;

} // namespace

void multiplexer::home_unit::exec_later(caf::resumable* ptr) {
  mux_->schedule(ptr);
}

void multiplexer::worker_unit::exec_later(caf::resumable* ptr) {
  system().scheduler().enqueue(ptr);
}

thread_local const multiplexer* multiplexer::current_ = nullptr;

multiplexer::multiplexer(caf::actor_system& sys)
  : sys_(sys), home_(this, &sys), worker_(&sys), scratch_(scratch_bytes) {
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  event_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (epoll_fd_ < 0 || event_fd_ < 0) {
    std::perror("tact: cannot create the event loop");
    std::abort();
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = nullptr;
  epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, event_fd_, &ev);
}

multiplexer::~multiplexer() {
  stop();
  ::close(event_fd_);
  ::close(epoll_fd_);
}

void multiplexer::start() {
  thread_ = std::thread{[this] { run(); }};
  // Named, so that /proc/PID/task/*/comm tells the loop from CAF's threads.
  ::pthread_setname_np(thread_.native_handle(), "tact-loop");
  // Running before anyone can ask on_loop_thread().
  while (!looping_.load())
    std::this_thread::yield();
}

void multiplexer::stop() {
  if (!thread_.joinable())
    return;
  stop_ = true;
  wake();
  thread_.join();
  looping_ = false;
  {
    // From now on, actors scheduled from other threads (the middleman
    // delivering to a loop actor whose address crossed a node, a down
    // message) are released at once.
    std::lock_guard<std::mutex> guard{remote_mtx_};
    closed_ = true;
  }
  // Release whatever was still scheduled: those actors never run again.
  drain_remote();
  for (auto* ptr : ready_)
    caf::scheduler::abstract_coordinator::cleanup_and_release(ptr);
  ready_.clear();
  // Lookups still waiting are answered with an error now, off the loop;
  // then the operations still under way end, answering theirs.
  resolver_.reset();
  {
    auto kept = std::move(kept_);
    kept.clear();
  }
  fd_owners_.clear();
  graveyard_.clear();
  retired_.clear();
  tracked_.clear();
}

resolver& multiplexer::names() {
  if (!resolver_)
    resolver_ = std::make_unique<resolver>(
      *this, resolver_options_ ? *resolver_options_ : resolver_options{});
  return *resolver_;
}

void multiplexer::set_resolver_options(const resolver_options& settings) {
  resolver_options_ = std::make_unique<resolver_options>(settings);
}

int multiplexer::add(int fd, uint32_t events, io_handler* handler) {
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = handler;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0)
    return errno;
  if (static_cast<size_t>(fd) >= fd_owners_.size())
    fd_owners_.resize(static_cast<size_t>(fd) + 64);
  fd_owners_[static_cast<size_t>(fd)] = handler->io_owner();
  return 0;
}

void multiplexer::modify(int fd, uint32_t events, io_handler* handler) {
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = handler;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, fd, &ev) != 0)
    warn(std::string{"epoll_ctl(MOD) failed: "} + std::strerror(errno));
}

void multiplexer::remove(int fd) {
  epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
  auto i = static_cast<size_t>(fd);
  // The owner may be the handler that is running right now: keep it alive
  // until the current batch of events is done.
  if (i < fd_owners_.size() && fd_owners_[i])
    graveyard_.push_back(std::move(fd_owners_[i]));
}

void multiplexer::schedule(caf::resumable* ptr) {
  if (on_loop_thread()) {
    ready_.push_back(ptr);
    return;
  }
  bool must_wake = false;
  {
    std::unique_lock<std::mutex> guard{remote_mtx_};
    if (closed_) {
      guard.unlock();
      caf::scheduler::abstract_coordinator::cleanup_and_release(ptr);
      return;
    }
    remote_ready_.push_back(ptr);
    must_wake = !wake_pending_;
    wake_pending_ = true;
  }
  if (must_wake)
    wake();
}

void multiplexer::post(std::function<void()> fn) {
  bool must_wake = false;
  {
    std::lock_guard<std::mutex> guard{remote_mtx_};
    remote_fns_.push_back(std::move(fn));
    must_wake = !wake_pending_;
    wake_pending_ = true;
  }
  if (must_wake)
    wake();
}

void multiplexer::run_sync(const std::function<void()>& fn) {
  if (on_loop_thread() || !thread_.joinable()) {
    fn();
    return;
  }
  std::promise<void> done;
  auto fut = done.get_future();
  post([&] {
    fn();
    done.set_value();
  });
  fut.wait();
}

void multiplexer::wake() {
  uint64_t one = 1;
  // The counter cannot overflow in practice; a failed write only means a
  // wake-up is already pending.
  [[maybe_unused]] auto res = ::write(event_fd_, &one, sizeof(one));
}

void multiplexer::drain_remote() {
  std::vector<std::function<void()>> fns;
  {
    std::lock_guard<std::mutex> guard{remote_mtx_};
    ready_.insert(ready_.end(), remote_ready_.begin(), remote_ready_.end());
    remote_ready_.clear();
    fns.swap(remote_fns_);
    wake_pending_ = false;
  }
  for (auto& fn : fns)
    fn();
}

void multiplexer::run_ready() {
  // Run until no actor is left ready, so that what a protocol asks of its
  // transport while handling a delivery is done before the next read. The
  // round limit keeps two actors that message each other forever from
  // starving the descriptors.
  for (int round = 0; round < 16 && !ready_.empty(); ++round) {
    running_.swap(ready_);
    for (auto* ptr : running_) {
      switch (ptr->resume(&worker_, max_throughput)) {
        case caf::resumable::resume_later:
          ready_.push_back(ptr);
          break;
        case caf::resumable::done:
        case caf::resumable::awaiting_message:
          caf::intrusive_ptr_release(ptr);
          break;
        case caf::resumable::shutdown_execution_unit:
          break;
      }
    }
    running_.clear();
  }
}

void multiplexer::run() {
  // A write to a pipe whose reader is gone raises SIGPIPE in the writing
  // thread (sockets use MSG_NOSIGNAL instead). Blocked here, it stays
  // pending and the write fails with EPIPE; consume_sigpipe() clears it.
  sigset_t pipe_set;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_set, nullptr);
  current_ = this;
  looping_ = true;
  // As many as the epoll reference server takes per call.
  constexpr int max_events = 256;
  epoll_event events[max_events];
  while (!stop_) {
    int n = wait(events, max_events);
    if (n < 0 && errno != EINTR) {
      warn(std::string{"epoll_wait failed: "} + std::strerror(errno));
      break;
    }
    // Messages first: a command sent before the bytes arrived (pause_reading,
    // set_protocol) takes effect before those bytes are read.
    for (int i = 0; i < n; ++i) {
      if (events[i].data.ptr == nullptr) {
        uint64_t count;
        [[maybe_unused]] auto res = ::read(event_fd_, &count, sizeof(count));
        drain_remote();
        break;
      }
    }
    run_ready();
    // A handler whose descriptor was removed while the actors ran stays
    // alive in the graveyard and ignores its stale event.
    for (int i = 0; i < n; ++i)
      if (auto* handler = static_cast<io_handler*>(events[i].data.ptr))
        handler->handle_io(events[i].events);
    run_ready();
    run_timers();
    graveyard_.clear();
    retired_.clear();
  }
  timers_.clear();
  timer_deadlines_.clear();
  current_ = nullptr;
}

uint64_t multiplexer::add_timer(clock_type::time_point when,
                                std::function<void()> fn) {
  auto id = ++last_timer_;
  timers_.emplace(std::make_pair(when, id), std::move(fn));
  timer_deadlines_.emplace(id, when);
  return id;
}

bool multiplexer::cancel_timer(uint64_t id) {
  auto i = timer_deadlines_.find(id);
  if (i == timer_deadlines_.end())
    return false;
  timers_.erase(std::make_pair(i->second, id));
  timer_deadlines_.erase(i);
  return true;
}

// Waits for events until the next timer is due (at once with actors ready).
// epoll_wait counts in milliseconds, which would make a timer up to 2 ms
// late; epoll_pwait2 takes the rest of the wait in nanoseconds.
int multiplexer::wait(epoll_event* events, int max_events) {
  if (!ready_.empty())
    return epoll_wait(epoll_fd_, events, max_events, 0);
  if (timers_.empty())
    return epoll_wait(epoll_fd_, events, max_events, -1);
  auto left = timers_.begin()->first.first - clock_type::now();
  if (left <= clock_type::duration::zero())
    return epoll_wait(epoll_fd_, events, max_events, 0);
  if (fine_wait_) {
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left);
    timespec ts{static_cast<time_t>(ns.count() / 1000000000),
                static_cast<long>(ns.count() % 1000000000)};
    int n = epoll_pwait2(epoll_fd_, events, max_events, &ts, nullptr);
    if (n >= 0 || errno == EINTR)
      return n;
    // Not there (ENOSYS before Linux 5.11) or not allowed (EPERM from a
    // seccomp filter that predates it): milliseconds it is.
    fine_wait_ = false;
  }
  // Rounded up, so that the wake-up is never before the deadline.
  auto ms = std::chrono::ceil<std::chrono::milliseconds>(left);
  return epoll_wait(epoll_fd_, events, max_events,
                    static_cast<int>(std::min<int64_t>(ms.count(), 1 << 30)));
}

void multiplexer::run_timers() {
  if (timers_.empty())
    return;
  // Timers that callbacks add now wait for the next pass, even if due.
  auto now = clock_type::now();
  auto last = last_timer_;
  for (auto i = timers_.begin(); i != timers_.end() && i->first.first <= now;) {
    if (i->first.second > last) {
      ++i;
      continue;
    }
    auto fn = std::move(i->second);
    timer_deadlines_.erase(i->first.second);
    timers_.erase(i);
    fn();
    i = timers_.begin();
  }
  run_ready();
}

void consume_sigpipe() noexcept {
  sigset_t pipe_set;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  timespec zero{};
  while (sigtimedwait(&pipe_set, nullptr, &zero) == SIGPIPE) {
    // drop it
  }
}

void multiplexer::actor_started() noexcept {
  ++live_actors_;
}

void multiplexer::actor_finished() noexcept {
  std::lock_guard<std::mutex> guard{actors_mtx_};
  if (--live_actors_ == 0)
    actors_cv_.notify_all();
}

bool multiplexer::wait_for_actors(int timeout_ms) {
  std::unique_lock<std::mutex> guard{actors_mtx_};
  return actors_cv_.wait_for(guard, std::chrono::milliseconds{timeout_ms},
                             [this] { return live_actors_ == 0; });
}

void multiplexer::track(caf::actor_id id, caf::actor handle, bool is_server) {
  tracked_.emplace(id, std::make_pair(std::move(handle), is_server));
}

void multiplexer::untrack(caf::actor_id id) {
  tracked_.erase(id);
}

void multiplexer::for_each_tracked(
  const std::function<void(const caf::actor&, bool)>& f) {
  // Copy first: a send may run nothing now, but the callback may untrack.
  std::vector<std::pair<caf::actor, bool>> all;
  all.reserve(tracked_.size());
  for (auto& kvp : tracked_)
    all.push_back(kvp.second);
  for (auto& [hdl, is_server] : all)
    f(hdl, is_server);
}

void multiplexer::warn(const std::string& text) {
  std::lock_guard<std::mutex> guard{warnings_->mtx};
  if (warnings_->hook)
    warnings_->hook(text);
  else
    std::fprintf(stderr, "tact: warning: %s\n", text.c_str());
}

void multiplexer::set_warning_hook(std::function<void(const std::string&)> hook) {
  std::lock_guard<std::mutex> guard{warnings_->mtx};
  warnings_->hook = std::move(hook);
}

} // namespace tact::detail
