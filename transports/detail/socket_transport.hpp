#pragma once

// What every socket transport does the same way (stream and datagram): the
// protocol's lifecycle (connection_made as a request, monitors,
// set_protocol, connection_lost exactly once), epoll interest, write flow
// control with asyncio's watermarks, close and abort. A subclass adds how
// it reads and writes.

#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>

#include <sys/epoll.h>

#include <caf/actor.hpp>
#include <caf/mailbox_element.hpp>

#include "tact/runtime/detail/multiplexer.hpp"
#include "tact/runtime/detail/transport_core.hpp"
#include "tact/runtime/transport.hpp"

namespace tact::detail {

struct socket_origin;

class socket_transport : public transport_core, public io_handler {
public:
  /// `origin`: what the caller knows of the socket already.
  socket_transport(caf::actor_config& cfg, multiplexer& mux, int fd,
                   caf::actor protocol, uint64_t read_credit,
                   transport_kind kind, const socket_origin* origin = nullptr);

  ~socket_transport() override;

  caf::strong_actor_ptr io_owner() override;

  // Killed by an exit message: the protocol still hears of it.
  void on_exit(caf::error reason) override;

  void direct_close() override {
    on_close();
  }

protected:
  void on_start() override;

  void on_message(caf::mailbox_element& x) override;

  // -- hooks for subclasses --------------------------------------------------------

  /// Handles a message the base does not know (a write); false if unknown.
  virtual bool on_transport_message(caf::mailbox_element& x,
                                    caf::type_erased_tuple& msg) = 0;

  /// Handles the answer to a request the subclass made.
  virtual void on_answer(uint64_t id, caf::type_erased_tuple& msg);

  /// Whether the subclass has nothing left to send.
  [[nodiscard]] virtual bool drained() const noexcept = 0;

  /// Drops what is buffered (on loss).
  virtual void drop_buffer() = 0;

  // -- for subclasses ----------------------------------------------------------------

  /// Whether to read now: `reading_allowed()`, nothing ended reading, and
  /// read credit left (a datagram transport reads past the credit and
  /// drops what it read instead: see datagram.cpp). Asked on every event
  /// and every change of interest, so it is plain fields, not a virtual.
  [[nodiscard]] bool wants_read() const noexcept {
    return reading_allowed() && !read_ended_
           && (state_.kind == transport_kind::datagram || credit_left());
  }

  /// Started (connection_made answered), not closing, not paused, not lost,
  /// not switching protocols.
  [[nodiscard]] bool reading_allowed() const noexcept {
    return read_started_ && !closing_ && !user_paused_ && !lost_
           && !switching();
  }

  /// Whether the protocol holds less than the read credit.
  [[nodiscard]] bool credit_left() const noexcept {
    return state_.unconsumed.load() < state_.read_credit;
  }

  /// A readiness report from the loop, handled the same way by every socket
  /// transport around what its kind does with it (`self.on_ready(events,
  /// reading)`, with `wants_read()` as it was: read, flush, report a socket
  /// error; it may lose the connection):
  /// nothing once lost; an EPOLLIN no longer wanted is noted (see
  /// `change_interest`); then a hang-up is remembered (epoll reports it
  /// whatever the mask, so a transport with nothing to do is taken off the
  /// loop) and the interest brought up to date. The final class `Self`
  /// calls it from its `handle_io`, so that its `on_ready` and `drained`
  /// are direct calls.
  template <class Self>
  static void handle_ready(Self& self, uint32_t events) {
    if (self.lost_)
      return;
    auto reading = self.wants_read();
    self.note_events(events, reading);
    self.on_ready(events, reading);
    if (self.lost_)
      return;
    if ((events & EPOLLHUP) != 0)
      self.hup_ = true;
    self.update_interest();
  }

  /// Sets epoll interest from `wants_read()` and `drained()`. Inline, so
  /// that a subclass that knows `drained()` makes no virtual call for it.
  void update_interest() {
    set_interest(!drained());
  }

  /// With `wants_read()`, before the kind handles `events`: an EPOLLIN
  /// that is not wanted any more makes the next interest change take
  /// effect (see `change_interest`).
  void note_events(uint32_t events, bool reading) noexcept {
    if ((events & EPOLLIN) != 0 && !reading)
      in_unwanted_ = true;
  }

  /// `update_interest` with `sending` for `!drained()`. Inline up to the
  /// common case, an interest that has not changed.
  void set_interest(bool sending) {
    if (lost_)
      return;
    uint32_t mask = (wants_read() ? EPOLLIN : 0u) | (sending ? EPOLLOUT : 0u);
    if (registered_ && mask == mask_ && (mask != 0 || !hup_))
      return;
    change_interest(mask);
  }

  /// `close()`: stop reading, flush, then lose the connection cleanly.
  void on_close();

  /// Called when the buffer has just drained; closes if closing.
  virtual void on_drained();

  /// Ends the connection exactly once: closes the descriptor, tells the
  /// protocol, drops it, and stops the actor.
  void lose(caf::error reason);

  void lose_errno(int err, const char* call);

  /// What `lose_errno` would report.
  [[nodiscard]] static caf::error error_of_errno(int err, const char* call);

  /// Drops what is buffered, and its count.
  void discard_buffer();

  /// Adds to / takes from the buffered byte count, pausing or resuming the
  /// protocol at the watermarks. `uncounted` bytes of the `n` leave the
  /// shared `in_flight` right after the buffered count is published.
  void buffered_add(size_t n, uint64_t uncounted = 0);
  void buffered_sub(size_t n);

  void on_protocol_down() override;

  void on_switched() override;

  int fd_;
  size_t buffered_ = 0;
  // asyncio's write pipe resumes the protocol only once its buffer is empty.
  bool resume_when_empty_ = false;
  bool read_started_ = false;
  // Nothing more to read: EOF was seen (a stream), or this end cannot read
  // (a write pipe).
  bool read_ended_ = false;
  bool hup_ = false;
  bool closing_ = false;
  bool lost_ = false;
  // Runs once the protocol has handled connection_made, or at the loss
  // (a caller waiting in create_connection), with this transport's handle
  // (empty when it runs from the destructor).
  std::function<void(transport)> on_made_;
  // Runs once at the loss, with this transport's address.
  std::function<void(const caf::actor_addr&)> on_lost_;
  // Failed, with bytes still to read: the loss waits for them (`failure_`).
  bool failed_ = false;
  caf::error failure_;

private:
  // Registers, changes or removes the descriptor for `mask`.
  void change_interest(uint32_t mask);

  void made_done(bool alive = true);
  void maybe_pause_protocol();
  void maybe_resume_protocol();

  uint64_t made_request_ = 0;
  uint32_t mask_ = 0;
  bool registered_ = false;
  // Read before the first wait in epoll (see socket_origin::accepted).
  bool read_first_ = false;
  // An EPOLLIN came that the transport did not want (see note_events).
  bool in_unwanted_ = false;
  bool user_paused_ = false;
  bool protocol_paused_ = false;
};

/// Spawns a socket transport of type `T` on `mux` (with `xs` after the
/// read credit) and returns its handle.
template <class T, class... Ts>
transport spawn_socket_transport(multiplexer& mux, int fd, caf::actor protocol,
                                 uint64_t read_credit, Ts&&... xs) {
  auto hdl = spawn_light<T>(mux, fd, std::move(protocol), read_credit,
                            std::forward<Ts>(xs)...);
  auto* self = static_cast<T*>(caf::actor_cast<caf::abstract_actor*>(hdl));
  return transport{std::move(hdl), &self->state()};
}

/// Waits for `made` (a transport's protocol has handled connection_made),
/// or until `mux` stops: a loop that stops never runs the transport, nor
/// what would have set `made`.
inline void wait_made(multiplexer& mux, std::future<void>& made) {
  while (made.wait_for(std::chrono::milliseconds{20})
         != std::future_status::ready)
    if (mux.stopping())
      return;
}

/// Starts a transport with `spawn(on_made)` and, off `mux`'s loop, returns
/// once its protocol has handled `connection_made` (asyncio's
/// create_connection and connect_read_pipe await that too): what the
/// protocol set there is set for the caller, whose thread may be another
/// loop's. On the loop, at once.
template <class Spawn>
transport start_and_wait_made(multiplexer& mux, Spawn spawn) {
  if (mux.on_loop_thread())
    return spawn(std::function<void(transport)>{});
  auto made = std::make_shared<std::promise<void>>();
  auto done = made->get_future();
  auto t = spawn(std::function<void(transport)>{
    [made](transport) { made->set_value(); }});
  wait_made(mux, done);
  return t;
}

} // namespace tact::detail
