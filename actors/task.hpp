#pragma once

#include <coroutine>
#include <exception>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <utility>

namespace tact {

template <class T = void>
class task;

namespace detail {

// What every task's promise has: who waits for it, and how it ended.
//
// Awaiting a task starts it with a plain call; a task that ends before that
// call returns (it never had to wait) lets its awaiter go on without a
// resume, so a loop of child tasks that complete at once runs in constant
// stack at any optimisation level. A task that ended after waiting resumes
// its awaiter from its final suspension point; the stack then grows with
// the nesting of tasks, never with the number of awaits.
class task_promise_base {
public:
  std::suspend_always initial_suspend() noexcept { return {}; }

  struct final_awaiter {
    [[nodiscard]] bool await_ready() const noexcept { return false; }

    template <class Promise>
    void await_suspend(std::coroutine_handle<Promise> self) noexcept {
      auto& p = self.promise();
      if (p.starting_) {
        p.ended_while_starting_ = true;
        return;
      }
      // The awaiter may destroy this frame: nothing of it is touched after.
      if (auto next = p.continuation_)
        next.resume();
    }

    void await_resume() const noexcept {
      // nop
    }
  };

  final_awaiter final_suspend() noexcept { return {}; }

  void unhandled_exception() noexcept { error_ = std::current_exception(); }

  // Runs the task until it ends or first waits; true if it ended.
  template <class Promise>
  static bool start(std::coroutine_handle<Promise> h,
                    std::coroutine_handle<> awaiter) {
    auto& p = h.promise();
    p.continuation_ = awaiter;
    p.starting_ = true;
    h.resume();
    p.starting_ = false;
    return p.ended_while_starting_;
  }

  void rethrow_if_failed() const {
    if (error_)
      std::rethrow_exception(error_);
  }

  [[nodiscard]] const std::exception_ptr& error() const noexcept {
    return error_;
  }

private:
  std::coroutine_handle<> continuation_;
  std::exception_ptr error_;
  bool starting_ = false;
  bool ended_while_starting_ = false;
};

template <class T>
class task_promise : public task_promise_base {
public:
  task<T> get_return_object() noexcept;

  template <class U>
  void return_value(U&& value) {
    value_.emplace(std::forward<U>(value));
  }

  T take() {
    rethrow_if_failed();
    return std::move(*value_);
  }

private:
  std::optional<T> value_;
};

template <>
class task_promise<void> : public task_promise_base {
public:
  task<void> get_return_object() noexcept;

  void return_void() noexcept {
    // nop
  }

  void take() { rethrow_if_failed(); }
};

} // namespace detail

/// A coroutine that produces a `T` (asyncio's coroutine object): written
/// as a function that returns `task<T>` and uses `co_await` / `co_return`.
///
/// A task is lazy: it starts when awaited, runs on the thread that awaits
/// it, and resumes its awaiter when it ends. What it throws is thrown again
/// by the `co_await` that awaits it. A task is owned by whoever holds it:
/// destroying a task that has not ended destroys its frame, running the
/// destructors of its locals, and so ends every task it awaits. Move-only;
/// await each task once (awaiting an empty one, moved from or default,
/// throws `std::logic_error`).
///
/// The root task of a connection is the one a protocol factory returns
/// (see `tact/actors/stream.hpp`): tact runs it on the connection's loop.
template <class T>
class [[nodiscard]] task {
public:
  using promise_type = detail::task_promise<T>;
  using handle_type = std::coroutine_handle<promise_type>;

  task() noexcept = default;

  explicit task(handle_type h) noexcept : h_(h) {
  }

  task(task&& other) noexcept : h_(std::exchange(other.h_, {})) {
  }

  task& operator=(task&& other) noexcept {
    if (this != &other) {
      reset();
      h_ = std::exchange(other.h_, {});
    }
    return *this;
  }

  task(const task&) = delete;
  task& operator=(const task&) = delete;

  ~task() { reset(); }

  /// Whether this task holds a coroutine.
  [[nodiscard]] bool valid() const noexcept { return static_cast<bool>(h_); }

  /// Whether the coroutine has ended (returned or thrown).
  [[nodiscard]] bool done() const noexcept { return h_ && h_.done(); }

  struct awaiter {
    handle_type h;

    [[nodiscard]] bool await_ready() const noexcept { return !h || h.done(); }

    bool await_suspend(std::coroutine_handle<> awaiting) {
      return !detail::task_promise_base::start(h, awaiting);
    }

    T await_resume() {
      if (!h)
        throw std::logic_error("tact::task: awaited an empty task");
      return h.promise().take();
    }
  };

  awaiter operator co_await() && noexcept { return awaiter{h_}; }

  /// The coroutine's handle, still owned by this task (for the runtime).
  [[nodiscard]] handle_type handle() const noexcept { return h_; }

private:
  void reset() noexcept {
    if (h_)
      std::exchange(h_, {}).destroy();
  }

  handle_type h_;
};

namespace detail {

template <class T>
task<T> task_promise<T>::get_return_object() noexcept {
  return task<T>{std::coroutine_handle<task_promise<T>>::from_promise(*this)};
}

inline task<void> task_promise<void>::get_return_object() noexcept {
  return task<void>{
    std::coroutine_handle<task_promise<void>>::from_promise(*this)};
}

} // namespace detail

} // namespace tact
