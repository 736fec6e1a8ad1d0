#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <type_traits>
#include <utility>

#include <caf/abstract_actor.hpp>
#include <caf/actor.hpp>
#include <caf/actor_cast.hpp>
#include <caf/error.hpp>
#include <caf/fwd.hpp>
#include <caf/message.hpp>

#include "tact/actors/stream.hpp"
#include "tact/actors/task.hpp"
#include "tact/export.hpp"
#include "tact/runtime/bytes.hpp"
#include "tact/runtime/endpoint.hpp"
#include "tact/runtime/fwd.hpp"
#include "tact/runtime/transport.hpp"

namespace tact {

namespace detail {
class protocol_host;
} // namespace detail

/// A timer of a class protocol, from `call_later` or `call_at` (asyncio's
/// `TimerHandle`). A cheap handle; empty when default-constructed.
class TACT_EXPORT timer_handle {
public:
  struct record;

  timer_handle() = default;

  explicit timer_handle(std::shared_ptr<record> rec) : rec_(std::move(rec)) {
  }

  /// Stops the timer if it has not run: true if it was still pending.
  /// Call it on the protocol's loop (from its callbacks), as asyncio's.
  bool cancel();

  /// Whether `cancel` (or the end of the connection) stopped it.
  [[nodiscard]] bool cancelled() const noexcept;

  /// When it runs or ran, on `base_protocol::time()`'s clock.
  [[nodiscard]] std::chrono::steady_clock::time_point when() const noexcept;

private:
  std::shared_ptr<record> rec_;
};

/// Runs `fn` in the context of the class protocol whose actor is
/// `protocol_actor` (its `self()`), between its callbacks, from any thread
/// (asyncio's `loop.call_soon_threadsafe`). Nothing runs if the protocol
/// has ended by then.
TACT_EXPORT void call_soon_threadsafe(const caf::actor& protocol_actor,
                                      std::function<void()> fn);

/// What every class protocol has (asyncio's `BaseProtocol`).
///
/// tact runs each instance inside an adapter actor on the multiplexer that
/// owns its transport, so the callbacks of one protocol never run
/// concurrently and may use `transport` methods freely. Callbacks must not
/// block: they share the loop thread with every other connection on it. A
/// callback that throws is reported through the runtime's warning hook, the
/// transport is aborted, and `connection_lost` follows with
/// `errc::protocol_failed`.
class TACT_EXPORT base_protocol {
public:
  /// The clock of timers (`call_at`, `time()`).
  using clock_type = std::chrono::steady_clock;

  virtual ~base_protocol();

  /// The transport is up; keep `t` (a cheap handle) to write later.
  virtual void connection_made(transport& t);

  /// The transport's write buffer went over its high watermark.
  virtual void pause_writing();

  /// The transport's write buffer is back at or under its low watermark.
  virtual void resume_writing();

  /// The transport is gone; `reason` is empty for a clean close.
  virtual void connection_lost(const caf::error& reason);

  /// A message to `self()` from another actor, which is no transport's
  /// (a transport's messages become the callbacks). For a request, what
  /// this returns is the answer. The default ignores messages and answers
  /// requests with `caf::sec::unexpected_message`.
  virtual caf::message message_received(caf::message& msg);

protected:
  /// The adapter actor running this protocol, as a handle to give to other
  /// actors. Valid from `connection_made` on.
  [[nodiscard]] caf::actor self() const noexcept {
    return caf::actor_cast<caf::actor>(self_);
  }

  // -- the loop's services (asyncio's loop methods) --------------------------
  //
  // Timers, deferred calls and answers run on the protocol's loop, between
  // its callbacks, never beside one. None runs after `connection_lost`
  // (but a coroutine's, until it returns: tact/actors/stream.hpp), or after
  // a callback threw; what is pending then is dropped. A callback of
  // theirs that throws ends the connection as any callback's does.

  /// asyncio's `loop.time()`: the clock of `call_at`.
  [[nodiscard]] static clock_type::time_point time() noexcept {
    return clock_type::now();
  }

  /// asyncio's `loop.call_later`: runs `fn` once `delay` has passed.
  timer_handle call_later(clock_type::duration delay, std::function<void()> fn);

  /// asyncio's `loop.call_at`: runs `fn` at `when` (at once if past).
  timer_handle call_at(clock_type::time_point when, std::function<void()> fn);

  /// asyncio's `loop.call_soon`: runs `fn` after the current callback.
  void call_soon(std::function<void()> fn);

  /// Sends `msg` to `dest` as a request: `then` gets the answer, or `fail`
  /// the error (the answer was an error, or none came within `timeout`:
  /// `errc::timed_out`).
  void request(const caf::actor& dest, clock_type::duration timeout,
               caf::message msg, std::function<void(caf::message&)> then,
               std::function<void(const caf::error&)> fail);

  /// The actor system the protocol runs in: spawn actors, send messages.
  [[nodiscard]] caf::actor_system& system() const noexcept {
    return self_->home_system();
  }

private:
  friend class detail_access;
  caf::abstract_actor* self_ = nullptr;
  detail::protocol_host* host_ = nullptr;
  bool owns_credit_ = false;
  bool lingers_ = false;
};

/// asyncio's `Protocol` (streams: TCP, Unix) as a C++ class: override the
/// callbacks you need.
///
/// Order (asyncio's grammar): `connection_made data_received*
/// eof_received? connection_lost`, with `pause_writing` / `resume_writing`
/// anywhere before `connection_lost`.
class TACT_EXPORT protocol : public base_protocol {
public:
  /// Bytes from the peer. Moving `data` into a `write` costs no copy.
  virtual void data_received(bytes data);

  /// The peer sent EOF. Return true to keep the connection half-open.
  virtual bool eof_received();
};

/// asyncio's `DatagramProtocol` (UDP, Unix datagram sockets) as a C++
/// class: override the callbacks you need.
///
/// Order: `connection_made (datagram_received | error_received)*
/// connection_lost`, with `pause_writing` / `resume_writing` anywhere
/// before `connection_lost`.
class TACT_EXPORT datagram_protocol : public base_protocol {
public:
  /// One datagram from `addr`. Moving `data` into a `sendto` costs no copy.
  virtual void datagram_received(bytes data, endpoint addr);

  /// A send or receive failed with an OS error; the transport stays open.
  virtual void error_received(const caf::error& reason);
};

/// asyncio's `SubprocessProtocol` as a C++ class: override the callbacks
/// you need.
///
/// Order: `connection_made (pipe_data_received | pipe_connection_lost |
/// process_exited)* connection_lost`; per pipe, its data comes before its
/// `pipe_connection_lost`; `connection_lost` comes once the child has exited
/// and every pipe is closed. `pause_writing` / `resume_writing` are about
/// the child's stdin.
class TACT_EXPORT subprocess_protocol : public base_protocol {
public:
  /// Output of the child on `fd` (1: stdout, 2: stderr).
  virtual void pipe_data_received(int fd, bytes data);

  /// The child's pipe `fd` closed; `reason` is empty for a clean EOF.
  virtual void pipe_connection_lost(int fd, const caf::error& reason);

  /// The child exited; `get_returncode()` says how.
  virtual void process_exited();
};

/// Makes the protocol of each new connection or endpoint: a protocol actor
/// (the behaviour path: the callable returns a `caf::actor` that handles
/// the messages of `tact/runtime/messages.hpp`), a class protocol (the
/// callable returns a `std::unique_ptr` to a `tact::protocol` or a
/// `tact::datagram_protocol`, which tact runs in an adapter actor on the
/// transport's loop), or a coroutine (the callable takes a `tact::stream`
/// and returns a `tact::task<>`, run the same way; see
/// `tact/actors/stream.hpp`).
class TACT_EXPORT protocol_factory {
public:
  using function = std::function<caf::actor(detail::multiplexer&)>;

  template <class F,
            class = std::enable_if_t<
              !std::is_same_v<std::decay_t<F>, protocol_factory>>>
  protocol_factory(F f) { // NOLINT(google-explicit-constructor)
    if constexpr (std::is_invocable_r_v<task<>, F&, stream>) {
      fn_ = [body = std::function<task<>(stream)>{std::move(f)}](
              detail::multiplexer& mux) {
        return spawn_adapter(mux, detail::make_coroutine_protocol(body));
      };
    } else if constexpr (std::is_convertible_v<std::invoke_result_t<F&>,
                                               caf::actor>) {
      fn_ = [f = std::move(f)](detail::multiplexer&) mutable {
        return caf::actor{f()};
      };
    } else {
      static_assert(std::is_convertible_v<std::invoke_result_t<F&>,
                                          std::unique_ptr<base_protocol>>,
                    "a protocol factory returns a caf::actor or a "
                    "std::unique_ptr to a tact::protocol or a "
                    "tact::datagram_protocol, or takes a tact::stream and "
                    "returns a tact::task<>");
      fn_ = [f = std::move(f)](detail::multiplexer& mux) mutable {
        return spawn_adapter(mux, std::unique_ptr<base_protocol>{f()});
      };
    }
  }

  /// A factory from a function of the loop the protocol is for.
  static protocol_factory with_loop(function f) {
    protocol_factory result{[] { return caf::actor{}; }};
    result.fn_ = std::move(f);
    return result;
  }

  /// Makes one protocol actor on `mux`.
  caf::actor operator()(detail::multiplexer& mux) const { return fn_(mux); }

  /// Makes one protocol actor on `mux`; a factory that throws is
  /// `errc::protocol_failed` with what it threw.
  caf::expected<caf::actor> make(detail::multiplexer& mux) const noexcept;

  /// Spawns the adapter actor that runs `p` on `mux`.
  static caf::actor spawn_adapter(detail::multiplexer& mux,
                                  std::unique_ptr<base_protocol> p);

private:
  function fn_;
};

} // namespace tact
