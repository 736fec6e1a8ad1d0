#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <caf/actor.hpp>
#include <caf/execution_unit.hpp>
#include <caf/fwd.hpp>

#include "tact/runtime/resolver_options.hpp"

struct epoll_event;

namespace tact::detail {

class loop_group;
class resolver;

/// An operation under way on the loop (a connect), kept by it until it
/// ends (`multiplexer::keep`).
class loop_operation {
public:
  virtual ~loop_operation() = default;

  /// Ends the operation now, answering its waiter with an error (the
  /// runtime shuts down). Loop thread.
  virtual void cancel() = 0;
};

/// Clears a SIGPIPE pending on the calling (loop) thread after a write to a
/// pipe failed with EPIPE.
void consume_sigpipe() noexcept;

/// Something with a file descriptor registered on the multiplexer's epoll.
class io_handler {
public:
  virtual ~io_handler() = default;

  /// Called on the multiplexer thread with the epoll event mask.
  virtual void handle_io(uint32_t events) = 0;

  /// A strong reference to the actor that owns this handler. The
  /// multiplexer holds it while the handler has a registered descriptor.
  [[nodiscard]] virtual caf::strong_actor_ptr io_owner() = 0;
};

/// The event loop: one epoll instance, an eventfd for wake-ups, one thread.
///
/// It dispatches readiness to handlers and resumes the actors that live on it
/// (see `mux_actor`), so a transport and its protocol run on the thread that
/// owns their descriptor without any thread hand-off.
class multiplexer {
public:
  explicit multiplexer(caf::actor_system& sys);
  ~multiplexer();

  multiplexer(const multiplexer&) = delete;
  multiplexer& operator=(const multiplexer&) = delete;

  /// Starts the loop thread.
  void start();

  /// Asks the loop to stop and joins its thread. Actors still scheduled,
  /// and actors scheduled later, are released without running.
  void stop();

  /// Whether `stop()` has begun: a waiter for something only this loop
  /// would do gives up.
  [[nodiscard]] bool stopping() const noexcept { return stop_.load(); }

  /// Whether the caller runs on this loop's thread (while it runs). Asked
  /// on every direct delivery, so a thread-local pointer rather than a
  /// thread id (which costs a library call).
  [[nodiscard]] bool on_loop_thread() const noexcept {
    return current_ == this;
  }

  /// The runtime's loops, this one among them (null for a loop of its
  /// own).
  [[nodiscard]] loop_group* group() const noexcept { return group_; }

  /// Makes this loop one of `loops`. Before `start()`.
  void set_group(loop_group* loops) noexcept { group_ = loops; }

  /// The loop the calling thread runs, if any.
  [[nodiscard]] static multiplexer* current() noexcept {
    return const_cast<multiplexer*>(current_);
  }

  // -- descriptors (loop thread only) ---------------------------------------

  /// Registers `fd`; returns 0 or the errno of epoll_ctl (EPERM for a
  /// descriptor epoll cannot watch, such as a regular file).
  int add(int fd, uint32_t events, io_handler* handler);
  void modify(int fd, uint32_t events, io_handler* handler);
  void remove(int fd);

  // -- scheduling -------------------------------------------------------------

  /// The execution unit that actors living on this loop pass to CAF when they
  /// are enqueued or launched. Thread-safe.
  [[nodiscard]] caf::execution_unit* home() noexcept { return &home_; }

  /// Runs `fn` on the loop thread soon. Thread-safe.
  void post(std::function<void()> fn);

  /// Runs `fn` on the loop thread and waits for it; runs it at once when
  /// called on the loop thread.
  void run_sync(const std::function<void()>& fn);

  // -- book-keeping for shutdown ------------------------------------------------

  void actor_started() noexcept;
  void actor_finished() noexcept;

  /// Blocks until every actor living on the loop has terminated or
  /// `timeout_ms` elapsed; returns whether all terminated.
  bool wait_for_actors(int timeout_ms);

  [[nodiscard]] size_t live_actors() const noexcept { return live_actors_; }

  /// Live transports and servers, by actor id (loop thread only).
  void track(caf::actor_id id, caf::actor handle, bool is_server);
  void untrack(caf::actor_id id);

  /// Sends `make_msg(is_server)` to every tracked actor (loop thread only).
  void for_each_tracked(const std::function<void(const caf::actor&, bool)>& f);

  // -- timers (loop thread only) ---------------------------------------------------

  using clock_type = std::chrono::steady_clock;

  /// Runs `fn` on the loop thread at `when` (the loop waits with nanosecond
  /// resolution); returns an id for `cancel_timer`, never 0. A callback
  /// should hold only weak references. Callbacks still pending at `stop()`
  /// are dropped.
  uint64_t add_timer(clock_type::time_point when, std::function<void()> fn);

  /// Runs `fn` on the loop thread once `after` has passed.
  uint64_t add_timer(std::chrono::milliseconds after,
                     std::function<void()> fn) {
    return add_timer(clock_type::now() + after, std::move(fn));
  }

  /// Drops a timer that has not run; false if it ran or is unknown.
  bool cancel_timer(uint64_t id);

  // -- shared resources (loop thread only) -------------------------------------

  /// The loop's name resolver (made on first use).
  [[nodiscard]] resolver& names();

  /// How `names()` resolves; call before the first lookup. Thread-safe
  /// only before `start()`.
  void set_resolver_options(const resolver_options& settings);

  /// Keeps `obj` (an operation under way, such as a connect) alive until
  /// `unkeep(id)`, or until `stop()`, which destroys it: its destructor
  /// answers whoever waits for it.
  uint64_t keep(std::shared_ptr<loop_operation> obj) {
    auto id = ++last_kept_;
    kept_.emplace(id, std::move(obj));
    return id;
  }

  /// Cancels every kept operation (loop thread).
  void cancel_kept() {
    std::vector<std::shared_ptr<loop_operation>> all;
    all.reserve(kept_.size());
    for (auto& kv : kept_)
      all.push_back(kv.second);
    for (auto& op : all)
      op->cancel();
  }

  /// Gives up what `keep` returned `id` for (empty if unknown).
  std::shared_ptr<loop_operation> unkeep(uint64_t id) {
    auto i = kept_.find(id);
    if (i == kept_.end())
      return nullptr;
    auto obj = std::move(i->second);
    kept_.erase(i);
    return obj;
  }

  /// Keeps `obj` alive until the loop has dispatched the events of its
  /// current pass: for handlers that end while an event for them may still
  /// be queued in that pass.
  void release_later(std::shared_ptr<void> obj) {
    retired_.push_back(std::move(obj));
  }

  /// A scratch buffer for reads; its content is only valid until the next
  /// read on this loop.
  [[nodiscard]] char* scratch() noexcept { return scratch_.data(); }
  [[nodiscard]] size_t scratch_size() const noexcept { return scratch_.size(); }

  // -- diagnostics --------------------------------------------------------------

  /// Reports a warning through the runtime's warning hook. Thread-safe.
  void warn(const std::string& text);

  void set_warning_hook(std::function<void(const std::string&)> hook);

  /// From now on, warnings go where `other`'s go, one at a time (the
  /// loops of one runtime share the user's hook). Before `start()`.
  void share_warnings_with(multiplexer& other) { warnings_ = other.warnings_; }

  [[nodiscard]] caf::actor_system& system() noexcept { return sys_; }

private:
  class home_unit : public caf::execution_unit {
  public:
    explicit home_unit(multiplexer* mux, caf::actor_system* sys)
      : caf::execution_unit(sys), mux_(mux) {
      // nop
    }
    void exec_later(caf::resumable* ptr) override;

  private:
    multiplexer* mux_;
  };

  // Context for actors resumed on the loop: whatever they wake that does not
  // live here goes to CAF's scheduler instead of being pulled onto this
  // thread.
  class worker_unit : public caf::execution_unit {
  public:
    explicit worker_unit(caf::actor_system* sys) : caf::execution_unit(sys) {
      // nop
    }
    void exec_later(caf::resumable* ptr) override;
  };

  void schedule(caf::resumable* ptr);
  void run();
  void wake();
  void drain_remote();
  void run_ready();
  void run_timers();
  int wait(epoll_event* events, int max_events);

  caf::actor_system& sys_;
  loop_group* group_ = nullptr;
  home_unit home_;
  worker_unit worker_;
  int epoll_fd_ = -1;
  int event_fd_ = -1;
  std::thread thread_;
  // The loop this thread runs, if any (set and cleared by run()).
  [[gnu::tls_model("initial-exec")]] static thread_local const multiplexer*
    current_;
  // Set by run() once current_ is, for start() to wait on.
  std::atomic<bool> looping_{false};
  std::atomic<bool> stop_{false};

  // Loop-thread state.
  std::vector<caf::resumable*> ready_;
  std::vector<caf::resumable*> running_;
  std::vector<caf::strong_actor_ptr> fd_owners_;
  std::vector<caf::strong_actor_ptr> graveyard_;
  std::vector<char> scratch_;
  std::vector<std::shared_ptr<void>> retired_;
  std::unordered_map<uint64_t, std::shared_ptr<loop_operation>> kept_;
  uint64_t last_kept_ = 0;
  std::unique_ptr<resolver_options> resolver_options_;
  std::unique_ptr<resolver> resolver_;
  std::unordered_map<caf::actor_id, std::pair<caf::actor, bool>> tracked_;
  // By deadline, then by id (the order they were added in).
  std::map<std::pair<clock_type::time_point, uint64_t>, std::function<void()>>
    timers_;
  std::unordered_map<uint64_t, clock_type::time_point> timer_deadlines_;
  uint64_t last_timer_ = 0;
  // Whether the kernel has epoll_pwait2 (Linux 5.11).
  bool fine_wait_ = true;

  // Shared with other threads.
  std::mutex remote_mtx_;
  std::vector<caf::resumable*> remote_ready_;
  std::vector<std::function<void()>> remote_fns_;
  bool wake_pending_ = false;
  bool closed_ = false;

  std::mutex actors_mtx_;
  std::condition_variable actors_cv_;
  std::atomic<size_t> live_actors_{0};

  // Where warnings go: a hook, called under the mutex.
  struct warning_sink {
    std::mutex mtx;
    std::function<void(const std::string&)> hook;
  };
  std::shared_ptr<warning_sink> warnings_ = std::make_shared<warning_sink>();
};

} // namespace tact::detail
