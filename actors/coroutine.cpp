// Coroutine protocols: a connection's coroutine runs inside the class
// adapter, as one more class protocol (coro_stream) that buffers what the
// transport delivers and resumes the coroutine when what it waits for is
// there.

#include <algorithm>
#include <cstring>
#include <string_view>
#include <utility>

#include <caf/sec.hpp>

#include "tact/actors/protocol.hpp"
#include "tact/actors/stream.hpp"
#include "tact/actors/detail/adapter.hpp"
#include "tact/runtime/detail/transport_state.hpp"
#include "tact/runtime/errc.hpp"
#include "tact/runtime/messages.hpp"

namespace tact::detail {

// Bytes a coroutine reads (a connection's, a child's stdout or stderr),
// and how they ended. The read credit of the bytes goes back to the
// transport that delivered them as they leave the buffer.
class coro_source : public coro_source_head {
public:
  explicit coro_source(transport* credit_to) : credit_to_(credit_to) {
    // nop
  }

  void append(bytes data) {
    coro_source_head::available += data.size();
    if (buf_.size() == off_) {
      buf_ = std::move(data);
      off_ = 0;
      return;
    }
    if (off_ > 0 && off_ >= buf_.size() / 2) {
      buf_.erase(buf_.begin(), buf_.begin() + static_cast<ptrdiff_t>(off_));
      off_ = 0;
    }
    buf_.insert(buf_.end(), data.begin(), data.end());
  }

  [[nodiscard]] size_t available() const noexcept {
    return coro_source_head::available;
  }

  [[nodiscard]] std::string_view view() const noexcept {
    return {buf_.data() + off_, available()};
  }

  // Takes `n` buffered bytes, giving their credit back.
  bytes take(size_t n) {
    coro_source_head::available -= n;
    bytes result;
    if (off_ == 0 && n == buf_.size()) {
      result = std::move(buf_);
      buf_.clear();
    } else {
      result.assign(buf_.begin() + static_cast<ptrdiff_t>(off_),
                    buf_.begin() + static_cast<ptrdiff_t>(off_ + n));
      off_ += n;
      if (off_ == buf_.size()) {
        buf_.clear();
        off_ = 0;
      }
    }
    give_back(n);
    return result;
  }

  void discard(size_t n) {
    coro_source_head::available -= n;
    off_ += n;
    if (off_ == buf_.size()) {
      buf_.clear();
      off_ = 0;
    }
    give_back(n);
  }

  // Puts bytes a read took back in front (a read_exactly that ended
  // short): they stay readable, outside the read credit they already left.
  void put_back(bytes data) {
    if (data.empty())
      return;
    coro_source_head::available += data.size();
    // Their credit went back when they were taken: not a second time.
    precredited_ += data.size();
    data.insert(data.end(), buf_.begin() + static_cast<ptrdiff_t>(off_),
                buf_.end());
    buf_ = std::move(data);
    off_ = 0;
  }

  // The end: EOF (no reason) or a loss with its reason. The first counts.
  void end(const caf::error& reason) {
    if (ended())
      return;
    if (reason)
      lost_ = true;
    else
      eof_ = true;
    has_ended = true;
    reason_ = reason;
  }

  // After an EOF, a connection may still be lost (a clean end then).
  [[nodiscard]] bool ended() const noexcept { return eof_ || lost_; }

  // What a read that finds nothing after the end reports: the loss's error,
  // or none after an EOF or a clean close.
  [[nodiscard]] const caf::error& end_error() const noexcept {
    return reason_;
  }

  // asyncio's: after an EOF (or a clean end), not after an error.
  [[nodiscard]] bool at_eof() const noexcept {
    return available() == 0 && eof_;
  }

  void set_credit(size_t n) noexcept {
    credit_ = n;
    limit_ = std::min(limit_, credit_);
  }

  [[nodiscard]] size_t credit() const noexcept { return credit_; }
  [[nodiscard]] size_t limit() const noexcept { return limit_; }

  void set_limit(size_t n) noexcept {
    limit_ = std::max<size_t>(1, std::min(n, credit_));
  }

  // The one read under way: what read_exactly took so far (its credit
  // given back), and how far read_until found no delimiter.
  bytes gathered;
  size_t scanned = 0;

private:
  // Gives the credit of `n` bytes leaving the front of the buffer back,
  // but for bytes put back there, whose credit went back already.
  void give_back(size_t n) {
    auto already = std::min(n, precredited_);
    precredited_ -= already;
    if (n > already)
      credit_to_->consumed(n - already);
  }

  transport* credit_to_;
  size_t precredited_ = 0;
  bytes buf_;
  size_t off_ = 0;
  size_t credit_ = 256 * 1024;
  size_t limit_ = reader::default_limit;
  caf::error reason_;
  bool eof_ = false;
  bool lost_ = false;
};

// The class protocol of a coroutine: its stream's source and state, and
// the one wait its coroutine may have at a time. Runs on the connection's
// loop only; the adapter never calls it while it runs.
class coro_stream final : public protocol, public coro_host_head {
public:
  explicit coro_stream(std::function<task<>(stream)> body)
    : body_(std::move(body)),
      in_(&conn) {
    detail_access::own_read_credit(*this);
  }

  // The frame goes before the closure it may refer to, and before the
  // source and handle its operations use.
  ~coro_stream() override {
    pending = nullptr;
    waiting = {};
    root_ = task<>{};
  }

  // The coroutine that runs now on this thread, if any.
  static coro_stream* current() noexcept { return current_; }

  // -- the protocol's callbacks --------------------------------------------

  void connection_made(transport& t) override {
    conn = t;
    refresh_limit();
    allowance = limit;
    if (auto* st = conn.state())
      in_.set_credit(st->read_credit);
    root_ = body_(stream{this, &in_});
    detail_access::set_lingering(*this, true);
    run(root_.handle());
  }

  void data_received(bytes data) override {
    // The common case: the coroutine waits for bytes (then none are kept:
    // a read some that finds bytes takes them, and one that waits is
    // resumed by the next that come).
    if (pending != nullptr && pending->handoff_) {
      auto* op = static_cast<reader::read_op*>(pending);
      if (op->src_ == static_cast<coro_source_head*>(&in_)
          && data.size() <= op->n_) {
        // The coroutine takes them when it resumes, below.
        op->incoming_ = &data;
        conn.consumed(data.size());
        resume_waiting();
        return;
      }
    }
    keep(data);
  }

  // Out of line: the common case above saves fewer registers.
  [[gnu::noinline]] void keep(bytes& data) {
    in_.append(std::move(data));
    poke();
  }

  bool eof_received() override {
    in_.end({});
    poke();
    // The coroutine decides when its side ends (asyncio's streams do).
    return true;
  }

  void pause_writing() override {
    paused_ = true;
    refresh_limit();
  }

  caf::message message_received(caf::message& msg) override {
    if (on_message_)
      return on_message_(msg);
    return protocol::message_received(msg);
  }

  void set_on_message(std::function<caf::message(caf::message&)> fn) {
    if (!finished_)
      on_message_ = std::move(fn);
  }

  void resume_writing() override {
    paused_ = false;
    refresh_limit();
    poke();
  }

  void connection_lost(const caf::error& reason) override {
    lost_ = true;
    reason_ = reason;
    paused_ = false;
    refresh_limit();
    in_.end(reason);
    poke();
    // The coroutine goes on until it returns (the adapter lingers).
  }

  // -- state the operations read -------------------------------------------

  // drain: whether the coroutine may go on writing; once the connection
  // is lost, yes, with the loss's error in `result`.
  bool may_write(caf::error& result) {
    if (lost_) {
      result = reason_ ? reason_ : make_error(errc::closed, "connection lost");
      return true;
    }
    return may_go_on();
  }

  // Whether the coroutine goes on writing (the connection not lost), after
  // a write past its allowance (a high watermark's worth since its last
  // wait goes unchecked: a pause_writing the transport sends meanwhile
  // reaches it at its next wait) or in a drain. No while paused.
  // No while closing, until connection_lost, which always comes: a write
  // may have found the peer gone at once, and a coroutine that went on
  // writing into a transport that drops everything would never wait, so
  // connection_lost would never be handled. No when the buffer is over the
  // high watermark and no pause has come (yet): a barrier, a request the
  // transport answers in its mailbox's order, tells when it has.
  bool may_go_on() {
    auto go = false;
    if (open_for_writes()) {
      if (barrier_ == barrier::answered) {
        barrier_ = barrier::none;
        go = true;
      } else if (barrier_ == barrier::none) {
        go = conn.get_write_buffer_size() <= high();
        if (!go)
          send_barrier();
      }
    }
    refresh_limit();
    return go;
  }

  // The allowance a wait gives: a high watermark's worth, none while the
  // connection is not open for writes or a barrier is out. While the
  // coroutine waits, its allowance is that; else it only shrinks to it.
  void refresh_limit() {
    auto clear = open_for_writes() && barrier_ == barrier::none;
    // (Below SIZE_MAX: an empty write, n - 1 wrapping, is always checked.)
    limit = clear ? std::min<size_t>(high(), SIZE_MAX - 1) : 0;
    allowance = pending != nullptr ? limit : std::min(allowance, limit);
  }

  [[nodiscard]] bool lost() const noexcept { return lost_; }
  [[nodiscard]] const caf::error& reason() const noexcept { return reason_; }

  // A drain gave up (timed out): its barrier's answer is nobody's.
  void forget_barrier() noexcept {
    ++barrier_gen_;
    barrier_ = barrier::none;
    refresh_limit();
  }

  transport& handle() noexcept { return conn; }

  // Not lost, not paused, the transport not closing (nor gone).
  [[nodiscard]] bool open_for_writes() const {
    auto* st = conn.state();
    return st != nullptr && !lost_ && !paused_
           && !st->closing.load(std::memory_order_relaxed)
           && !st->lost.load(std::memory_order_relaxed);
  }

  [[nodiscard]] size_t high() const {
    auto* st = conn.state();
    return st != nullptr ? st->high.load(std::memory_order_relaxed) : 0;
  }

  [[nodiscard]] caf::actor actor() const { return self(); }

  void ask(const caf::actor& dest, clock_type::duration timeout,
           caf::message msg, std::function<void(caf::message&)> then,
           std::function<void(const caf::error&)> fail) {
    request(dest, timeout, std::move(msg), std::move(then), std::move(fail));
  }

  // -- waiting --------------------------------------------------------------

  void suspend(coro_wait* w, std::coroutine_handle<> h) {
    // First what may throw (starting an operation): a wait that did not
    // start is not registered, and the exception comes out of co_await.
    if (w->wants_on_suspend_)
      w->on_suspend();
    pending = w;
    waiting = h;
    allowance = limit;
    if (w->timed_) {
      deadline_ = call_at(w->deadline_, [this] { on_deadline(); });
      armed_ = true;
    }
  }

  // Something changed: resumes the coroutine if its wait is over.
  void poke() {
    if (pending != nullptr && pending->poll())
      resume_waiting();
  }

private:
  enum class barrier : unsigned char { none, pending, answered };

  // Once the answer is here, a pause_writing sent before it is here too.
  void send_barrier() {
    barrier_ = barrier::pending;
    auto done = [this, gen = ++barrier_gen_] {
      if (gen != barrier_gen_)
        return; // for a drain that gave up
      barrier_ = barrier::answered;
      poke();
    };
    ask(conn.actor(), clock_type::duration::max(),
        caf::make_message(op::get_write_buffer_size{}),
        [done](caf::message&) { done(); },
        [done](const caf::error&) { done(); });
  }

  void on_deadline() {
    armed_ = false;
    deadline_ = {};
    if (pending == nullptr)
      return;
    pending->finish(make_error(errc::timed_out, "wait_for"));
    resume_waiting();
  }

  void resume_waiting() {
    if (armed_) {
      armed_ = false;
      deadline_.cancel();
      deadline_ = {};
    }
    pending = nullptr;
    run(std::exchange(waiting, {}));
  }

  void run(std::coroutine_handle<> h) {
    auto* before = std::exchange(current_, this);
    h.resume();
    current_ = before;
    // Waiting for something of ours, it has not ended.
    if (pending != nullptr || finished_ || !root_.done())
      return;
    finished_ = true;
    detail_access::set_lingering(*this, false);
    // It may refer to the coroutine's locals, which are gone.
    on_message_ = nullptr;
    if (auto err = root_.handle().promise().error())
      std::rethrow_exception(err); // the adapter fails the connection
    if (!lost_)
      conn.close();
  }

  static thread_local coro_stream* current_;

  std::function<task<>(stream)> body_;
  std::function<caf::message(caf::message&)> on_message_;
  task<> root_;
  coro_source in_;
  caf::error reason_;
  timer_handle deadline_;
  uint64_t barrier_gen_ = 0;
  barrier barrier_ = barrier::none;
  bool armed_ = false;
  bool lost_ = false;
  bool paused_ = false;
  bool finished_ = false;
};

// The host of a coroutine's awaitables.
inline coro_stream* host_of(coro_host_head* head) noexcept {
  return static_cast<coro_stream*>(head);
}

// A child started from a coroutine: what its protocol (a forwarder in the
// child's own adapter) passes on to the coroutine's actor. Touched only
// there, by deferred calls.
class coro_process {
public:
  explicit coro_process(coro_stream* owner)
    : host(owner), out(&pipes[1]), err(&pipes[2]) {
    // nop
  }

  coro_source& source(int fd) { return fd == 2 ? err : out; }

  // Nobody holds the child any more (its coroutine let go of it, or is
  // gone): its pipes close, and a child that still runs is killed, as
  // asyncio's transport does when it is closed.
  ~coro_process() {
    if (handle && !lost)
      handle.close();
  }

  coro_process(const coro_process&) = delete;
  coro_process& operator=(const coro_process&) = delete;

  void made(transport t) {
    if (handle)
      return;
    handle = std::move(t);
    for (int fd = 0; fd < 3; ++fd)
      pipes[fd] = handle.get_pipe_transport(fd);
    for (int fd = 1; fd < 3; ++fd) {
      if (auto* st = pipes[fd].state())
        source(fd).set_credit(st->read_credit);
      else if (!pipes[fd])
        source(fd).end({}); // no pipe: nothing to read
    }
  }

  coro_stream* host;
  coro_source out;
  coro_source err;
  transport handle;
  transport pipes[3];
  // The child's stdin: over its high watermark (between pause_writing and
  // resume_writing), and its end.
  bool stdin_paused = false;
  bool stdin_ended = false;
  caf::error stdin_reason;
  bool exited = false;
  bool lost = false;

  // process::drain: whether the coroutine may go on writing the child's
  // stdin; its error in `result` once the pipe or the child is gone. The
  // buffer is looked at too: a pause the pipe sends reaches here through
  // two actors, after the coroutine next waits; but while the buffer is
  // over the high watermark a pause is on its way or here, and the resume
  // that follows it wakes the wait.
  bool stdin_drained(caf::error& result) {
    if (stdin_ended || lost) {
      if (stdin_reason)
        result = stdin_reason;
      return true;
    }
    auto* st = pipes[0].state();
    if (st == nullptr)
      return true;
    return !stdin_paused
           && pipes[0].get_write_buffer_size()
                <= st->high.load(std::memory_order_relaxed);
  }
};

// The protocol of a child started from a coroutine: passes every event on
// to the coroutine's actor, where the process state lives. The read credit
// goes back from there, as the coroutine reads.
class process_forwarder final : public subprocess_protocol {
public:
  process_forwarder(const std::shared_ptr<coro_process>& state,
                    caf::actor owner)
    : state_(state), owner_(std::move(owner)) {
    detail_access::own_read_credit(*this);
  }

  void connection_made(transport& t) override {
    post([t](coro_process& st) { st.made(t); });
  }

  void pipe_data_received(int fd, bytes data) override {
    post([fd, data = std::move(data)](coro_process& st) mutable {
      st.source(fd).append(std::move(data));
    });
  }

  void pipe_connection_lost(int fd, const caf::error& reason) override {
    if (fd == 0) {
      post([reason](coro_process& st) {
        st.stdin_ended = true;
        st.stdin_reason = reason;
      });
      return;
    }
    post([fd, reason](coro_process& st) { st.source(fd).end(reason); });
  }

  // About the child's stdin.
  void pause_writing() override {
    post([](coro_process& st) { st.stdin_paused = true; });
  }

  void resume_writing() override {
    post([](coro_process& st) { st.stdin_paused = false; });
  }

  void process_exited() override {
    post([](coro_process& st) { st.exited = true; });
  }

  void connection_lost(const caf::error& reason) override {
    post([reason](coro_process& st) {
      st.lost = true;
      st.exited = true;
      st.out.end(reason);
      st.err.end(reason);
    });
  }

private:
  template <class F>
  void post(F fn) {
    call_soon_threadsafe(owner_, [weak = state_, fn = std::move(fn)]() mutable {
      if (auto st = weak.lock()) {
        fn(*st);
        st->host->poke();
      }
    });
  }

  // Held by the coroutine's process handles, not by the child.
  std::weak_ptr<coro_process> state_;
  caf::actor owner_;
};

thread_local coro_stream* coro_stream::current_ = nullptr;

bool coro_wait::suspend(std::coroutine_handle<> waiting) {
  if (host_ == nullptr) {
    finish(make_error(errc::not_supported,
                      "awaited outside a coroutine protocol"));
    return false;
  }
  host_of(host_)->suspend(this, waiting);
  return true;
}

std::unique_ptr<base_protocol>
make_coroutine_protocol(std::function<task<>(stream)> body) {
  return std::make_unique<coro_stream>(std::move(body));
}

} // namespace tact::detail

namespace tact {

// -- read_op -------------------------------------------------------------------

bool reader::read_op::poll() {
  auto& h = static_cast<detail::coro_source&>(*src_);
  auto avail = h.available();
  switch (kind_) {
    case kind::some:
      if (avail > 0 && n_ > 0) {
        value_ = h.take(std::min(n_, avail));
      } else if (n_ > 0 && !h.ended()) {
        return false;
      } else if (n_ > 0 && h.end_error()) {
        error_ = h.end_error();
      }
      return true;
    case kind::exactly: {
      auto& taken = h.gathered;
      auto need = n_ - taken.size();
      if (avail >= need) {
        if (taken.empty()) {
          value_ = h.take(need);
        } else {
          auto rest = h.take(need);
          taken.insert(taken.end(), rest.begin(), rest.end());
          value_ = std::move(taken);
          taken.clear();
        }
        return true;
      }
      if (h.ended()) {
        h.put_back(std::move(taken));
        taken.clear();
        if (auto& err = h.end_error())
          error_ = err;
        else
          error_ = make_error(errc::incomplete_frame,
                              "read_exactly: the stream ended first");
        return true;
      }
      // Whatever is longer than the credit can hold is gathered here.
      if (avail > 0 && avail >= h.credit() / 2) {
        auto part = h.take(avail);
        taken.insert(taken.end(), part.begin(), part.end());
      }
      return false;
    }
    case kind::until:
    case kind::line: {
      if (delim_.empty()) {
        error_ = make_error(errc::invalid_argument, "read_until: no delimiter");
        return true;
      }
      auto text = h.view();
      auto& scanned = h.scanned;
      auto from = scanned >= delim_.size() ? scanned - delim_.size() + 1 : 0;
      auto at = text.find(delim_, from);
      auto line = kind_ == kind::line;
      auto too_large = [&] {
        scanned = 0;
        error_ = make_error(errc::frame_too_large,
                            line ? "read_line: line over the limit"
                                 : "read_until: frame over the limit");
        return true;
      };
      if (at != std::string_view::npos) {
        if (at > h.limit()) {
          if (line)
            h.discard(at + delim_.size());
          return too_large();
        }
        scanned = 0;
        value_ = h.take(at + delim_.size());
        return true;
      }
      scanned = avail;
      if (avail + 1 > h.limit() + delim_.size() || avail >= h.credit()) {
        if (line)
          h.discard(avail);
        return too_large();
      }
      if (!h.ended())
        return false;
      scanned = 0;
      if (auto& err = h.end_error(); err && (avail == 0 || !line))
        error_ = err;
      else if (line)
        value_ = h.take(avail);
      else
        error_ = make_error(errc::incomplete_frame,
                            "read_until: the stream ended first");
      return true;
    }
  }
  return false;
}

void reader::read_op::finish(caf::error reason) {
  // A read that gives up takes nothing.
  auto& src = static_cast<detail::coro_source&>(*src_);
  src.put_back(std::move(src.gathered));
  src.gathered.clear();
  src.scanned = 0;
  error_ = std::move(reason);
}

// -- wait_op -------------------------------------------------------------------

wait_op::wait_op(detail::coro_host_head* host, kind k, caf::error early,
                 clock_type::time_point until, detail::coro_process* proc)
  : coro_wait(host), kind_(k), done_(static_cast<bool>(early)) {
  if (k == kind::sleep) {
    until_ = until.time_since_epoch().count();
    set_deadline(until);
  } else {
    proc_ = proc;
  }
  if (early)
    error_ = std::move(early);
}

bool wait_op::ready() {
  if (host_ == nullptr || kind_ == kind::sleep)
    return false;
  return poll();
}

bool wait_op::poll() {
  switch (kind_) {
    case kind::drain: {
      caf::error err;
      if (!detail::host_of(host_)->may_write(err))
        return false;
      if (err)
        error_ = std::move(err);
      return true;
    }
    case kind::closed:
      if (!detail::host_of(host_)->lost())
        return false;
      if (auto& reason = detail::host_of(host_)->reason())
        error_ = reason;
      return true;
    case kind::sleep:
      return false;
    case kind::exited:
      return proc_->exited;
    case kind::stdin_drained: {
      caf::error err;
      if (!proc_->stdin_drained(err))
        return false;
      if (err)
        error_ = std::move(err);
      return true;
    }
  }
  return false;
}

void wait_op::finish(caf::error reason) {
  done_ = true;
  if (kind_ == kind::drain && host_ != nullptr)
    detail::host_of(host_)->forget_barrier();
  if (kind_ == kind::sleep && host_ != nullptr
      && clock_type::now()
           >= clock_type::time_point{clock_type::duration{until_}})
    return; // slept
  error_ = std::move(reason);
}

// -- request_op ----------------------------------------------------------------

request_op::request_op(caf::actor dest, caf::message msg)
  : coro_wait(detail::coro_stream::current()), dest_(std::move(dest)),
    msg_(std::move(msg)) {
  want_on_suspend();
}

void request_op::on_suspend() {
  // The adapter times the request out itself, so that no answer can come
  // to a wait that has gone.
  auto timeout = clock_type::duration::max();
  if (timed_)
    timeout = std::max(deadline_ - clock_type::now(), clock_type::duration{});
  timed_ = false;
  auto* host = detail::host_of(host_);
  host->ask(
    dest_, timeout, std::move(msg_),
    [this, host](caf::message& answer) {
      result_ = std::move(answer);
      done_ = true;
      host->poke();
    },
    [this, host](const caf::error& err) {
      result_ = err;
      done_ = true;
      host->poke();
    });
}

void request_op::finish(caf::error reason) {
  result_ = std::move(reason);
  done_ = true;
}

// -- reader and stream ---------------------------------------------------------

reader::read_op reader::read_line() {
  return {host_, src_, read_op::kind::line, 0, "\n"};
}

reader::read_op reader::read_until(std::string_view delimiter) {
  return {host_, src_, read_op::kind::until, 0, delimiter};
}

bool reader::at_eof() const {
  return static_cast<const detail::coro_source&>(*src_).at_eof();
}

void reader::set_limit(size_t limit) {
  static_cast<detail::coro_source&>(*src_).set_limit(limit);
}

size_t reader::limit() const {
  return static_cast<const detail::coro_source&>(*src_).limit();
}

wait_op stream::write_checked(bytes data) {
  // After the loss the write is not made (a transport would count it as
  // dropped); the drain reports the loss.
  auto* host = detail::host_of(host_);
  if (host->lost())
    return {host_, wait_op::kind::drain};
  if (auto err = host->conn.write(std::move(data)))
    return {host_, wait_op::kind::drain, std::move(err)};
  return {host_, wait_op::kind::drain, host->may_go_on()};
}

wait_op stream::write(std::string_view text) {
  return write(to_bytes(text));
}

wait_op stream::drain() {
  return {host_, wait_op::kind::drain};
}

caf::error stream::write_eof() {
  return host_->conn.write_eof();
}

bool stream::can_write_eof() const {
  return host_->conn.can_write_eof();
}

void stream::close() {
  // Later writes are checked: try_write refuses a closing transport.
  host_->conn.close();
}

void stream::abort() {
  host_->conn.abort();
}

bool stream::is_closing() const {
  return host_->conn.is_closing();
}

wait_op stream::wait_closed() {
  return {host_, wait_op::kind::closed};
}

std::optional<caf::config_value>
stream::get_extra_info(std::string_view name) const {
  return host_->conn.get_extra_info(name);
}

transport& stream::get_transport() const {
  return host_->conn;
}

caf::actor stream::self() const {
  return detail::host_of(host_)->actor();
}

void stream::on_message(std::function<caf::message(caf::message&)> handler) {
  detail::host_of(host_)->set_on_message(std::move(handler));
}

// -- process -------------------------------------------------------------------

process::process(std::shared_ptr<detail::coro_process> state) noexcept
  : state_(std::move(state)) {
  // nop
}

reader process::out() const {
  return {state_->host, &state_->out};
}

reader process::err() const {
  return {state_->host, &state_->err};
}

caf::error process::write(bytes data) {
  auto& in = state_->pipes[0];
  if (!in)
    return make_error(errc::not_connected, "the child's stdin is no pipe");
  return in.write(std::move(data));
}

caf::error process::write(std::string_view text) {
  return write(to_bytes(text));
}

caf::error process::close_stdin() {
  auto& in = state_->pipes[0];
  if (!in)
    return make_error(errc::not_connected, "the child's stdin is no pipe");
  in.close();
  return {};
}

wait_op process::wait() {
  return {state_->host, wait_op::kind::exited, {}, {}, state_.get()};
}

wait_op process::drain() {
  caf::error early;
  if (!state_->pipes[0])
    early = make_error(errc::not_connected, "the child's stdin is no pipe");
  return {state_->host, wait_op::kind::stdin_drained, std::move(early), {},
          state_.get()};
}

std::optional<int> process::returncode() const {
  return state_->handle.get_returncode();
}

int process::pid() const {
  return state_->handle.get_pid();
}

transport& process::get_transport() const {
  return state_->handle;
}

// What a loop operation under way and its awaiter share: the awaiter
// while it waits, and what the operation gave.
struct transport_op::slot {
  transport_op* op = nullptr;
  std::optional<caf::expected<transport>> result;
};

transport_op::transport_op(starter start)
  : coro_wait(detail::coro_stream::current()), start_(std::move(start)),
    slot_(std::make_shared<slot>()) {
  slot_->op = this;
  want_on_suspend();
}

transport_op::transport_op(transport_op&& other) noexcept
  : coro_wait(std::move(other)), start_(std::move(other.start_)),
    slot_(std::move(other.slot_)) {
  if (slot_)
    slot_->op = this;
}

transport_op& transport_op::operator=(transport_op&& other) noexcept {
  if (this != &other) {
    if (slot_)
      slot_->op = nullptr;
    coro_wait::operator=(std::move(other));
    start_ = std::move(other.start_);
    slot_ = std::move(other.slot_);
    if (slot_)
      slot_->op = this;
  }
  return *this;
}

transport_op::~transport_op() {
  if (slot_)
    slot_->op = nullptr;
}

namespace {

// A transport on its way to a coroutine: aborted unless handed over (the
// wait gave up, or the message carrying it was dropped with its actor).
struct unclaimed {
  caf::expected<transport> result;
  bool taken = false;

  explicit unclaimed(caf::expected<transport> x) : result(std::move(x)) {
  }

  unclaimed(const unclaimed&) = delete;
  unclaimed& operator=(const unclaimed&) = delete;

  ~unclaimed() {
    if (!taken && result)
      result->abort();
  }
};

} // namespace

void transport_op::on_suspend() {
  auto owner = detail::host_of(host_)->actor();
  // The answer comes on the loop, maybe to another actor: it goes on to
  // the coroutine's.
  auto on_done = [s = slot_, owner](caf::expected<transport> result) {
    auto held = std::make_shared<unclaimed>(std::move(result));
    call_soon_threadsafe(owner, [s, held] {
      auto* op = s->op;
      if (op == nullptr)
        return; // nobody takes it: aborted with `held`
      held->taken = true;
      s->result = std::move(held->result);
      detail::host_of(op->host_)->poke();
    });
  };
  start_(std::move(on_done));
}

bool transport_op::poll() {
  return slot_->result.has_value();
}

void transport_op::finish(caf::error reason) {
  slot_->result = caf::expected<transport>{std::move(reason)};
  // What the operation gives from now on is nobody's.
  auto fresh = std::make_shared<slot>();
  fresh->result = std::move(slot_->result);
  slot_->op = nullptr;
  slot_ = std::move(fresh);
  slot_->op = this;
}

caf::expected<transport> transport_op::await_resume() {
  return std::move(*slot_->result);
}

namespace {

std::shared_ptr<detail::coro_process> new_process_state() {
  auto* host = detail::coro_stream::current();
  return host != nullptr ? std::make_shared<detail::coro_process>(host)
                         : nullptr;
}

} // namespace

process_op::process_op(process_starter start)
  : process_op(std::move(start), new_process_state()) {
  // nop
}

process_op::process_op(process_starter start,
                       std::shared_ptr<detail::coro_process> state)
  : transport_op([start = std::move(start), state](auto done) {
      auto owner = state->host->actor();
      // The child's side holds the state weakly: it is the coroutine's.
      protocol_factory factory{[weak = std::weak_ptr{state}, owner] {
        return std::make_unique<detail::process_forwarder>(weak.lock(),
                                                           owner);
      }};
      start(std::move(factory), std::move(done));
    }),
    state_(std::move(state)) {
  // nop
}

caf::expected<process> process_op::await_resume() {
  auto t = transport_op::await_resume();
  if (!t)
    return std::move(t.error());
  state_->made(*t);
  return process{state_};
}

wait_op sleep_for(detail::coro_wait::clock_type::duration delay) {
  using clock = detail::coro_wait::clock_type;
  auto now = clock::now();
  auto until = delay > clock::time_point::max() - now
                 ? clock::time_point::max()
                 : now + delay;
  return {detail::coro_stream::current(), wait_op::kind::sleep, {}, until};
}

request_op request(caf::actor dest, caf::message msg) {
  return {std::move(dest), std::move(msg)};
}

} // namespace tact
