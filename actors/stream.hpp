#pragma once

#include <chrono>
#include <coroutine>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <caf/actor.hpp>
#include <caf/config_value.hpp>
#include <caf/error.hpp>
#include <caf/expected.hpp>
#include <caf/message.hpp>

#include "tact/actors/fwd.hpp"
#include "tact/actors/task.hpp"
#include "tact/export.hpp"
#include "tact/runtime/bytes.hpp"
#include "tact/runtime/fwd.hpp"
#include "tact/runtime/transport.hpp"

namespace tact {

class stream;

namespace detail {

class coro_stream;
class coro_source;
class coro_process;
class coro_wait;

/// What the awaitables of a coroutine's stream use without calling out:
/// the one wait under way, the connection, and how much may be written
/// without a look at the transport. The base of the host.
class coro_host_head {
public:
  // The wait under way, and the coroutine it resumes.
  coro_wait* pending = nullptr;
  std::coroutine_handle<> waiting;
  // The connection's transport.
  transport conn;
  // A write of 1 to `allowance` bytes goes on without a look at the
  // coroutine's state, and lowers it. Each wait renews it to `limit`: the
  // high watermark, or 0 while the connection is paused, closing or lost,
  // or a barrier is out.
  size_t allowance = 0;
  size_t limit = 0;
};

/// One thing a coroutine protocol waits for: an operation of its stream, a
/// timer, an answer. Holds the outcome until the coroutine resumes; lives
/// in the coroutine's frame while it waits.
class TACT_EXPORT coro_wait {
public:
  using clock_type = std::chrono::steady_clock;

  coro_wait() = default;
  explicit coro_wait(coro_host_head* host)
    : host_(host), plain_(host != nullptr) {
  }
  // For a host that is there.
  coro_wait(coro_host_head* host, std::true_type) : host_(host), plain_(true) {
  }
  coro_wait(coro_wait&&) = default;
  coro_wait& operator=(coro_wait&&) = default;
  virtual ~coro_wait() = default;

  /// Waits, unless the outcome is already there.
  bool await_suspend(std::coroutine_handle<> waiting) {
    // The common wait (no deadline, nothing to start) is registered here.
    if (plain_) {
      host_->pending = this;
      host_->waiting = waiting;
      host_->allowance = host_->limit;
      return true;
    }
    return suspend(waiting);
  }

  /// When the wait gives up with `errc::timed_out` (a sleep ends then);
  /// the earlier of two deadlines holds.
  void set_deadline(clock_type::time_point when) noexcept {
    if (when == clock_type::time_point::max() || (timed_ && when >= deadline_))
      return;
    deadline_ = when;
    timed_ = true;
    plain_ = false;
  }

  /// Completes the wait if what it waits for is there: true if it did.
  virtual bool poll() = 0;

  /// Ends the wait without what it waits for: `errc::timed_out` at its
  /// deadline, `errc::not_supported` outside a coroutine protocol.
  virtual void finish(caf::error reason) = 0;

  /// Starts what the wait is for (a request, a loop operation), just
  /// before the wait is registered with its host; what it throws comes out
  /// of the `co_await`.
  virtual void on_suspend() {
    // nop
  }

protected:
  coro_host_head* host_ = nullptr;
  // The deadline, if `timed_`.
  clock_type::time_point deadline_;
  // A read of some bytes: the host may hand new bytes to it directly.
  bool handoff_ = false;
  bool timed_ = false;
  // Whether the host calls on_suspend.
  bool wants_on_suspend_ = false;
  // In a coroutine protocol, with no deadline and no on_suspend: the wait
  // is registered without a call.
  bool plain_ = false;

  void want_on_suspend() noexcept {
    wants_on_suspend_ = true;
    plain_ = false;
  }

  friend class coro_stream;

private:
  bool suspend(std::coroutine_handle<> waiting);
};

/// What a read looks at before it calls out: the bytes buffered, and
/// whether the stream has ended.
struct coro_source_head {
  size_t available = 0;
  bool has_ended = false;
};

/// Makes the class protocol that runs `body` for one connection.
TACT_EXPORT std::unique_ptr<base_protocol>
make_coroutine_protocol(std::function<task<>(stream)> body);

} // namespace detail

/// The reading half of a coroutine's stream, or a child process's output:
/// asyncio's `StreamReader`. Its operations are awaited from the coroutine
/// that owns it, one at a time.
class TACT_EXPORT reader {
public:
  /// The awaitable of a read: `caf::expected<bytes>`.
  class TACT_EXPORT read_op final : public detail::coro_wait {
  public:
    enum class kind : unsigned char { some, exactly, until, line };

    read_op(detail::coro_host_head* host, detail::coro_source_head* src, kind k,
            size_t n, std::string_view delim = {}) noexcept
      : coro_wait(host, std::true_type{}), kind_(k), src_(src), n_(n),
        delim_(delim) {
      handoff_ = k == kind::some && n > 0;
    }

    [[nodiscard]] bool await_ready() {
      // Nothing there yet: wait, without a call.
      if (handoff_ && src_->available == 0 && !src_->has_ended)
        return false;
      return poll();
    }

    caf::expected<bytes> await_resume() {
      if (error_)
        return std::move(*error_);
      if (incoming_ != nullptr) // gone after this resumption
        return std::move(*std::exchange(incoming_, nullptr));
      return std::move(value_);
    }

    bool poll() override;
    void finish(caf::error reason) override;

  private:
    friend class detail::coro_stream;

    // First: it fits beside the base's flags.
    kind kind_;
    detail::coro_source_head* src_;
    size_t n_;
    // read_until: the caller's delimiter, alive for the co_await.
    std::string_view delim_;
    // Bytes handed over as they came, alive while the coroutine resumes.
    bytes* incoming_ = nullptr;
    bytes value_;
    std::optional<caf::error> error_;
  };

  /// The largest line or delimited frame `read_line` and `read_until`
  /// accept, without its delimiter (asyncio's `limit`, 64 KiB).
  static constexpr size_t default_limit = 64 * 1024;

  reader(detail::coro_host_head* host, detail::coro_source_head* src) noexcept
    : host_(host), src_(src) {
  }

  /// Up to `n` bytes: what is buffered, or the next bytes to arrive; empty
  /// at EOF (and for `n == 0`). After a reset, the bytes that came before
  /// it, then the error.
  read_op read(size_t n = default_limit) {
    return {host_, src_, read_op::kind::some, n};
  }

  /// Exactly `n` bytes. `errc::incomplete_frame` if the stream ends first;
  /// what did come stays readable.
  read_op read_exactly(size_t n) {
    return {host_, src_, read_op::kind::exactly, n};
  }

  /// Up to and including the next `\n`; at EOF what is left (possibly
  /// without `\n`), then empty. A line longer than the limit is
  /// `errc::frame_too_large`, and is dropped as asyncio drops it (up to
  /// its `\n` if that is buffered, else what is buffered).
  read_op read_line();

  /// Up to and including the next `delimiter` (asyncio's `readuntil`).
  /// `errc::incomplete_frame` if the stream ends first,
  /// `errc::frame_too_large` if more than the limit comes without one;
  /// either way the bytes stay buffered; an empty delimiter is
  /// `errc::invalid_argument`. The delimiter is not copied: it
  /// must live until the read ends (a literal, or a string that does; a
  /// temporary lives to the end of the `co_await` expression).
  read_op read_until(std::string_view delimiter);

  /// Whether the EOF (or a clean end) came and every byte before it was
  /// read; false after a loss with an error, as asyncio's.
  [[nodiscard]] bool at_eof() const;

  /// The limit of `read_line` and `read_until`; at most the read credit
  /// (a larger value is lowered to it).
  void set_limit(size_t limit);
  [[nodiscard]] size_t limit() const;

protected:
  detail::coro_host_head* host_;
  detail::coro_source_head* src_;
};

/// The awaitable of a write, `drain`, `wait_closed`, a sleep, or a child's
/// exit: `caf::error` (empty for success).
class TACT_EXPORT wait_op final : public detail::coro_wait {
public:
  enum class kind : unsigned char { drain, closed, sleep, exited, stdin_drained };

  wait_op(detail::coro_host_head* host, kind k, bool done = false) noexcept
    : coro_wait(host, std::true_type{}), kind_(k), done_(done) {
  }

  wait_op(detail::coro_host_head* host, kind k, caf::error early,
          clock_type::time_point until = {},
          detail::coro_process* proc = nullptr);

  [[nodiscard]] bool await_ready() { return done_ || ready(); }

  caf::error await_resume() {
    if (error_)
      return std::move(*error_);
    return {};
  }

  bool poll() override;
  void finish(caf::error reason) override;

private:
  bool ready();

  kind kind_;
  bool done_;
  std::optional<caf::error> error_;
  // A sleep's end (a deadline from wait_for may come earlier).
  union {
    clock_type::rep until_; // kind::sleep
    detail::coro_process* proc_ = nullptr; // kind::exited, stdin_drained
  };
};

/// The awaitable of `tact::request`: `caf::expected<caf::message>`.
class TACT_EXPORT request_op final : public detail::coro_wait {
public:
  request_op(caf::actor dest, caf::message msg);

  [[nodiscard]] bool await_ready() const noexcept { return false; }

  caf::expected<caf::message> await_resume() { return std::move(result_); }

  bool poll() override { return done_; }
  void finish(caf::error reason) override;
  void on_suspend() override;

private:
  caf::actor dest_;
  caf::message msg_;
  caf::expected<caf::message> result_{caf::message{}};
  bool done_ = false;
};

/// A connection as a coroutine sees it: asyncio's `StreamReader` and
/// `StreamWriter` in one handle.
///
/// A protocol factory may be a callable that takes a `stream` and returns
/// a `task<>`; tact then runs that coroutine for each connection, in the
/// connection's protocol actor, on the loop that owns its transport:
///
///     rt.listen([](tact::stream s) -> tact::task<> {
///       while (auto line = co_await s.read_line()) {
///         if (line->empty())
///           break;                       // EOF
///         co_await s.write(std::move(*line));
///       }
///     }, "127.0.0.1", 7000);
///
/// While the coroutine waits, the actor goes on handling messages: bytes
/// from the peer are kept in the stream's buffer, within the connection's
/// read credit (past it the transport stops reading until the coroutine
/// reads). When the coroutine returns, the connection is closed (its buffer
/// flushed first); if it throws, the connection is aborted with
/// `errc::protocol_failed`.
///
/// The coroutine outlives its connection until it returns, as an asyncio
/// task outlives its streams: once the connection is lost, the stream's
/// operations end at once (reads give what was buffered, then the end;
/// writes and `drain` the loss's error), while sleeps, requests and child
/// processes still work. Stopping the runtime destroys every coroutine that
/// is still waiting, running the destructors of its locals.
///
/// Errors come back as values: read operations give `caf::expected<bytes>`,
/// the others `caf::error`. Bytes that arrived before a connection was lost
/// are read before its error. Any operation may be bounded in time with
/// `tact::wait_for`. A stream is used from its own coroutine only.
/// (`start_tls` and `set_protocol` on a coroutine's transport are not
/// supported yet: the stream would keep the transport it started with.)
class TACT_EXPORT stream : public reader {
public:
  using read_op = reader::read_op;
  using wait_op = tact::wait_op;
  using request_op = tact::request_op;

  stream(detail::coro_host_head* host, detail::coro_source_head* src) noexcept
    : reader(host, src) {
  }

  // -- writing (asyncio's StreamWriter) ---------------------------------------

  /// Queues `data` at once (asyncio's `write`; an lvalue is copied);
  /// awaiting the result waits while the transport is paused (asyncio's
  /// `drain`). Errors as `transport::write`, or the connection's loss.
  wait_op write(bytes&& data) {
    // Up to a high watermark's worth between two waits goes on without a
    // look at the coroutine's state (a pause_writing the transport sends
    // meanwhile reaches it at its next wait); past it, while paused, when
    // the transport refuses it or is closing, and for empty bytes (a frame
    // still takes room), the write is checked.
    auto n = data.size();
    if (n - 1 >= host_->allowance || !host_->conn.try_write(data))
      return write_checked(std::move(data));
    host_->allowance -= n;
    return {host_, wait_op::kind::drain, true};
  }

  wait_op write(const bytes& data) { return write(bytes{data}); }
  wait_op write(std::string_view text);

  /// Waits while the transport's write buffer is over its high watermark;
  /// the loss's error (`errc::closed` for a clean one) once it is lost.
  wait_op drain();

  /// Sends EOF once the buffer has drained (TCP, Unix, write pipes).
  caf::error write_eof();
  [[nodiscard]] bool can_write_eof() const;

  /// Closes the connection after flushing its buffer.
  void close();

  /// Closes the connection at once, dropping the buffer.
  void abort();

  /// Whether the connection is closing or lost.
  [[nodiscard]] bool is_closing() const;

  /// Waits until the connection is lost; its error, empty for a clean end.
  wait_op wait_closed();

  /// As `transport::get_extra_info`.
  [[nodiscard]] std::optional<caf::config_value>
  get_extra_info(std::string_view name) const;

  /// The transport underneath (asyncio's `writer.transport`).
  [[nodiscard]] transport& get_transport() const;

  /// The protocol actor running this coroutine: a handle for other actors.
  [[nodiscard]] caf::actor self() const;

  /// Handles the messages other actors send to `self()`: `handler` runs
  /// for each, on the coroutine's loop, between its steps (never while it
  /// runs); for a request, what it returns is the answer. It may write to
  /// the stream (without awaiting). Without a handler, or once the
  /// coroutine has returned, messages are ignored and requests answered
  /// with `caf::sec::unexpected_message`.
  void on_message(std::function<caf::message(caf::message&)> handler);

private:
  wait_op write_checked(bytes data);
};

/// A child process started from a coroutine (asyncio's `Process` from
/// `create_subprocess_exec` with pipes): its output to read, its stdin to
/// write, its exit to wait for. Its events reach the coroutine that started
/// it, on that coroutine's loop; the child's pipes are read within the read
/// credit, so a child whose output is not read blocks on its next write.
/// Copies share the same child; use them from that coroutine only. When
/// the last copy goes, the child's pipes close and a child that still runs
/// is killed (asyncio's transport does so when it is closed).
class TACT_EXPORT process {
public:
  process() = default;
  explicit process(std::shared_ptr<detail::coro_process> state) noexcept;

  /// The child's stdout and stderr (when they are pipes; else they read
  /// as ended).
  [[nodiscard]] reader out() const;
  [[nodiscard]] reader err() const;

  /// Queues `data` for the child's stdin (`errc::not_connected` when it
  /// is not a pipe). It does not wait: a coroutine that writes much awaits
  /// `drain()` between writes, as with asyncio's `proc.stdin`.
  caf::error write(bytes data);
  caf::error write(std::string_view text);

  /// Waits while the child's stdin holds more than its high watermark (a
  /// child that does not read blocks the coroutine, not memory); the
  /// pipe's error once it is lost, empty once it closed cleanly.
  wait_op drain();

  /// Closes the child's stdin once what was written has gone (its EOF).
  caf::error close_stdin();

  /// Waits until the child has exited; `returncode()` then says how.
  wait_op wait();

  /// Empty while the child runs; its exit status after, or minus the
  /// signal number that ended it (asyncio's `returncode`).
  [[nodiscard]] std::optional<int> returncode() const;

  /// The child's process id.
  [[nodiscard]] int pid() const;

  /// The subprocess transport: signals (`send_signal`, `terminate`,
  /// `kill`), its pipes.
  [[nodiscard]] transport& get_transport() const;

private:
  std::shared_ptr<detail::coro_process> state_;
};

/// The awaitable of a loop operation started from a coroutine
/// (`runtime::connect`, `connect_unix` and `spawn_process` without a
/// callback): `caf::expected<transport>`. A transport that comes when
/// nobody waits for it any more (the wait timed out, the coroutine is
/// gone) is aborted.
class TACT_EXPORT transport_op : public detail::coro_wait {
public:
  /// Starts the operation; `done` gets its transport or its error, on the
  /// loop.
  using starter
    = std::function<void(std::function<void(caf::expected<transport>)>)>;

  explicit transport_op(starter start);
  transport_op(transport_op&&) noexcept;
  transport_op& operator=(transport_op&&) noexcept;
  ~transport_op() override;

  [[nodiscard]] bool await_ready() const noexcept { return false; }

  caf::expected<transport> await_resume();

  bool poll() override;
  void finish(caf::error reason) override;
  void on_suspend() override;

private:
  struct slot;
  starter start_;
  std::shared_ptr<slot> slot_;
};

/// The awaitable that starts a child process from a coroutine:
/// `caf::expected<process>` (see `runtime::create_subprocess_exec`).
class TACT_EXPORT process_op final : public transport_op {
public:
  /// Starts the child with the given protocol factory; `done` gets its
  /// transport or the reason it did not start, on the loop.
  using process_starter = std::function<void(
    protocol_factory, std::function<void(caf::expected<transport>)>)>;

  explicit process_op(process_starter start);

  caf::expected<process> await_resume();

private:
  process_op(process_starter start,
             std::shared_ptr<detail::coro_process> state);

  std::shared_ptr<detail::coro_process> state_;
};

/// asyncio's `sleep`: resumes the coroutine after `delay`. Await it from a
/// connection's coroutine; elsewhere it ends at once with
/// `errc::not_supported`.
TACT_EXPORT wait_op sleep_for(detail::coro_wait::clock_type::duration delay);

/// Sends `msg` to `dest` as a request and waits for its answer (an error
/// answer becomes the error). Bound it with `tact::wait_for`.
TACT_EXPORT request_op request(caf::actor dest, caf::message msg);

/// asyncio's `wait_for`: the operation `op` (a stream operation, a sleep,
/// a request, a child's start or exit), ending with `errc::timed_out` if it has not completed
/// within `timeout`. A read that times out takes nothing.
template <class Op,
          class = std::enable_if_t<
            std::is_base_of_v<detail::coro_wait, std::decay_t<Op>>>>
std::decay_t<Op> wait_for(Op&& op,
                          detail::coro_wait::clock_type::duration timeout) {
  using clock = detail::coro_wait::clock_type;
  auto now = clock::now();
  op.set_deadline(timeout > clock::time_point::max() - now
                    ? clock::time_point::max()
                    : now + timeout);
  return std::forward<Op>(op);
}

} // namespace tact
