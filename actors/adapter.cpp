// The adapter actor: runs a class protocol (tact::protocol or
// tact::datagram_protocol) as an actor on its transport's loop, translating
// messages into callbacks.

#include <exception>
#include <string>
#include <unordered_map>

#include <caf/sec.hpp>
#include <caf/send.hpp>
#include <caf/system_messages.hpp>

#include "tact/actors/protocol.hpp"
#include "tact/actors/detail/adapter.hpp"
#include "tact/runtime/detail/match.hpp"
#include "tact/runtime/detail/transport_core.hpp"
#include "tact/runtime/errc.hpp"
#include "tact/runtime/messages.hpp"

namespace tact {

base_protocol::~base_protocol() = default;

void base_protocol::connection_made(transport&) {
  // nop
}

void protocol::data_received(bytes) {
  // nop
}

bool protocol::eof_received() {
  return false;
}

void datagram_protocol::datagram_received(bytes, endpoint) {
  // nop
}

void datagram_protocol::error_received(const caf::error&) {
  // nop
}

void subprocess_protocol::pipe_data_received(int, bytes) {
  // nop
}

void subprocess_protocol::pipe_connection_lost(int, const caf::error&) {
  // nop
}

void subprocess_protocol::process_exited() {
  // nop
}

void base_protocol::pause_writing() {
  // nop
}

void base_protocol::resume_writing() {
  // nop
}

void base_protocol::connection_lost(const caf::error&) {
  // nop
}

caf::message base_protocol::message_received(caf::message&) {
  return caf::make_message(caf::make_error(caf::sec::unexpected_message));
}

// -- the loop's services -------------------------------------------------------

namespace detail {

// What a class protocol asks of the actor that runs it.
class protocol_host {
public:
  virtual ~protocol_host() = default;
  virtual timer_handle schedule(base_protocol::clock_type::time_point when,
                                std::function<void()> fn) = 0;
  virtual bool cancel(timer_handle::record& rec) = 0;
  virtual void ask(const caf::actor& dest,
                   base_protocol::clock_type::duration timeout,
                   caf::message msg, std::function<void(caf::message&)> then,
                   std::function<void(const caf::error&)> fail) = 0;
};

} // namespace detail

struct timer_handle::record {
  base_protocol::clock_type::time_point when;
  // The loop's id of the timer; 0 once it ran or was cancelled.
  uint64_t id = 0;
  bool cancelled = false;
  // Null once the protocol's connection has ended.
  detail::protocol_host* host = nullptr;
  std::function<void()> fn;
};

bool timer_handle::cancel() {
  if (!rec_ || rec_->id == 0 || rec_->host == nullptr)
    return false;
  return rec_->host->cancel(*rec_);
}

bool timer_handle::cancelled() const noexcept {
  return rec_ && rec_->cancelled;
}

base_protocol::clock_type::time_point timer_handle::when() const noexcept {
  return rec_ ? rec_->when : base_protocol::clock_type::time_point{};
}

namespace {

// To the adapter: the loop's timer `id` is due.
using timer_atom = caf::atom_constant<caf::atom("tact_tmr")>;

// To the adapter: run this in the protocol's context.
struct deferred_call {
  std::function<void()> fn;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, deferred_call&) {
  return f(caf::meta::type_name("tact.deferred_call"));
}

} // namespace

void call_soon_threadsafe(const caf::actor& protocol_actor,
                          std::function<void()> fn) {
  if (protocol_actor && fn)
    caf::anon_send(protocol_actor, deferred_call{std::move(fn)});
}

namespace {

// `now() + delay`, without overflowing for a delay of `duration::max()`.
base_protocol::clock_type::time_point
after(base_protocol::clock_type::duration delay) {
  using clock = base_protocol::clock_type;
  auto now = clock::now();
  if (delay > clock::time_point::max() - now)
    return clock::time_point::max();
  return now + delay;
}

} // namespace

timer_handle base_protocol::call_later(clock_type::duration delay,
                                       std::function<void()> fn) {
  return call_at(after(delay), std::move(fn));
}

timer_handle base_protocol::call_at(clock_type::time_point when,
                                    std::function<void()> fn) {
  if (host_ == nullptr || !fn)
    return {};
  return host_->schedule(when, std::move(fn));
}

void base_protocol::call_soon(std::function<void()> fn) {
  call_soon_threadsafe(self(), std::move(fn));
}

void base_protocol::request(const caf::actor& dest,
                            clock_type::duration timeout, caf::message msg,
                            std::function<void(caf::message&)> then,
                            std::function<void(const caf::error&)> fail) {
  if (host_ != nullptr)
    host_->ask(dest, timeout, std::move(msg), std::move(then), std::move(fail));
}

void detail_access::set_self(base_protocol& p, caf::abstract_actor* self,
                             detail::protocol_host* host) {
  p.self_ = self;
  p.host_ = host;
}

void detail_access::own_read_credit(base_protocol& p) {
  p.owns_credit_ = true;
}

bool detail_access::owns_read_credit(const base_protocol& p) {
  return p.owns_credit_;
}

void detail_access::set_lingering(base_protocol& p, bool value) {
  p.lingers_ = value;
}

bool detail_access::lingers(const base_protocol& p) {
  return p.lingers_;
}

namespace {

// Runs a class protocol. A light actor on the connection's loop: its
// transport hands it bytes by a direct call when nothing is queued for it.
class adapter final : public detail::protocol_core,
                      public detail::protocol_host {
public:
  adapter(caf::actor_config& cfg, detail::multiplexer& mux,
          std::unique_ptr<base_protocol> proto, transport handle = {})
    : detail::protocol_core(cfg, mux), proto_(std::move(proto)),
      stream_(dynamic_cast<protocol*>(proto_.get())),
      datagram_(dynamic_cast<datagram_protocol*>(proto_.get())),
      child_(dynamic_cast<subprocess_protocol*>(proto_.get())),
      handle_(std::move(handle)),
      owns_credit_(detail_access::owns_read_credit(*proto_)) {
    detail_access::set_self(*proto_, this, this);
  }

  // Ended without lose() or on_exit() (the loop stopped): what is pending
  // lets go of this adapter before the protocol goes, whose destructor may
  // still cancel its timers. Off the loop thread, so the loop's timers are
  // not touched (they hold this adapter weakly).
  ~adapter() override {
    forget_pending();
    proto_.reset();
  }

  // -- protocol_host ---------------------------------------------------------

  timer_handle schedule(base_protocol::clock_type::time_point when,
                        std::function<void()> fn) override {
    if (!serving())
      return {};
    auto rec = std::make_shared<timer_handle::record>();
    rec->when = when;
    rec->host = this;
    rec->fn = std::move(fn);
    // The loop holds the adapter weakly: an ended one is freed at once.
    caf::weak_actor_ptr me{ctrl()};
    rec->id = mux().add_timer(when, [me, rec] {
      if (auto strong = me.lock())
        caf::anon_send(caf::actor_cast<caf::actor>(strong), timer_atom::value,
                       rec->id);
    });
    timers_.emplace(rec->id, rec);
    return timer_handle{rec};
  }

  bool cancel(timer_handle::record& rec) override {
    auto i = timers_.find(rec.id);
    if (i == timers_.end())
      return false;
    mux().cancel_timer(rec.id);
    timers_.erase(i);
    rec.id = 0;
    rec.cancelled = true;
    rec.fn = nullptr;
    return true;
  }

  void ask(const caf::actor& dest, base_protocol::clock_type::duration timeout,
           caf::message msg, std::function<void(caf::message&)> then,
           std::function<void(const caf::error&)> fail) override {
    if (!serving())
      return;
    if (!dest) {
      // As an answer would come: after the current callback.
      call_soon_threadsafe(handle(), [fail = std::move(fail)] {
        if (fail)
          fail(make_error(errc::invalid_argument, "request to no actor"));
      });
      return;
    }
    auto id = request_to(dest, std::move(msg));
    auto timer = schedule(after(timeout),
                          [this, id] {
                            auto i = asks_.find(id);
                            if (i == asks_.end())
                              return;
                            auto on_fail = std::move(i->second.fail);
                            asks_.erase(i);
                            if (on_fail)
                              on_fail(make_error(errc::timed_out,
                                                 "no answer to a request"));
                          });
    asks_.emplace(id, pending_ask{std::move(then), std::move(fail), timer});
  }

  void direct_data(bytes& data, detail::transport_core& from) override {
    direct_from_ = &from;
    if (holding())
      stash_.push_back(caf::make_message(data_received{std::move(data)}));
    else
      on_data(data);
    direct_from_ = nullptr;
  }

  bool direct_eof(detail::transport_core& from, bool& keep_open) override {
    direct_from_ = &from;
    auto held = holding();
    if (!held)
      keep_open = on_eof();
    direct_from_ = nullptr;
    return !held;
  }

  bool direct_lost(caf::error& reason, detail::transport_core&) override {
    // What was kept for a replacement is replayed first, by message.
    if (!stash_.empty())
      return false;
    lose(std::move(reason));
    return true;
  }

protected:
  void on_start() override {
    // Installed by set_protocol with a handle: watch the transport as if
    // connection_made had come.
    if (handle_)
      monitor(handle_.actor());
  }

  void on_message(caf::mailbox_element& x) override {
    auto& msg = x.content();
    if (lingering_ && (detail::is<op::abort>(msg) || detail::is<op::close>(msg))) {
      // The runtime shuts down: a close lets the coroutine go on for the
      // grace period, the abort after it ends it.
      if (detail::is<op::abort>(msg))
        end_lingering();
      return;
    }
    current_ = &x;
    if (auto id = answer_to(x); id != 0 && asks_.count(id) > 0)
      on_answer(id, x);
    else if (detail::is<handover>(msg))
      on_handover(x, msg.get_as<handover>(0));
    else if (is_delivery(msg) && holding())
      stash_.push_back(x.move_content_to_message());
    else if (detail::is<connection_lost>(msg) && !stash_.empty())
      replay_then_lose(x);
    else
      handle_message(x, msg);
    current_ = nullptr;
    if (lingering_ && (failed_ || !proto_ || !detail_access::lingers(*proto_)))
      end_lingering();
  }

  // Killed by an exit message: the connection ends with it.
  // (A protocol installed by set_protocol has no handle; its transport
  // monitors it instead.) A replaced protocol leaves the connection alone.
  void on_exit(caf::error reason) override {
    if (!lost_ && handle_ && !replaced())
      handle_.abort(make_error(errc::protocol_down));
    lost_ = true;
    if (lingering_)
      mux().untrack(id());
    lingering_ = false;
    handle_ = transport{};
    reset_protocol();
    quit(std::move(reason));
  }

private:
  void handle_message(caf::mailbox_element& x, caf::type_erased_tuple& msg) {
    if (detail::is<data_received>(msg)) {
      on_data(msg.get_mutable_as<data_received>(0).data);
    } else if (detail::is<connection_made>(msg)) {
      handle_ = std::move(msg.get_mutable_as<connection_made>(0).handle);
      if (handle_)
        monitor(handle_.actor());
      check_kind();
      if (!mismatched_)
        guarded("connection_made", [&] { proto_->connection_made(handle_); });
      reply(x, caf::make_message());
    } else if (detail::is<datagram_received>(msg)) {
      auto& d = msg.get_mutable_as<datagram_received>(0);
      auto n = d.data.size() + datagram_overhead;
      if (datagram_ && !failed_ && !lost_)
        guarded("datagram_received", [&] {
          datagram_->datagram_received(std::move(d.data), std::move(d.addr));
        });
      give_back(n);
    } else if (detail::is<pipe_data_received>(msg)) {
      auto& d = msg.get_mutable_as<pipe_data_received>(0);
      auto n = d.data.size();
      if (child_ && !failed_ && !lost_)
        guarded("pipe_data_received", [&] {
          child_->pipe_data_received(d.fd, std::move(d.data));
        });
      // The credit belongs to the pipe's own transport.
      if (handle_ && !owns_credit_)
        handle_.get_pipe_transport(d.fd).consumed(n);
    } else if (detail::is<pipe_connection_lost>(msg)) {
      auto& d = msg.get_as<pipe_connection_lost>(0);
      if (child_ && !failed_ && !lost_)
        guarded("pipe_connection_lost",
                [&] { child_->pipe_connection_lost(d.fd, d.reason); });
    } else if (detail::is<process_exited>(msg)) {
      if (child_ && !failed_ && !lost_)
        guarded("process_exited", [&] { child_->process_exited(); });
    } else if (detail::is<error_received>(msg)) {
      if (datagram_ && !failed_ && !lost_)
        guarded("error_received", [&] {
          datagram_->error_received(msg.get_as<error_received>(0).reason);
        });
    } else if (detail::is<eof_received>(msg)) {
      reply(x, caf::make_message(on_eof()));
    } else if (detail::is<pause_writing>(msg)) {
      if (!failed_ && !lost_)
        guarded("pause_writing", [&] { proto_->pause_writing(); });
    } else if (detail::is<resume_writing>(msg)) {
      if (!failed_ && !lost_)
        guarded("resume_writing", [&] { proto_->resume_writing(); });
    } else if (detail::is<connection_lost>(msg)) {
      lose(std::move(msg.get_mutable_as<connection_lost>(0).reason));
    } else if (detail::is<caf::down_msg>(msg)) {
      on_down(msg.get_as<caf::down_msg>(0));
    } else if (msg.match_elements<timer_atom, uint64_t>()) {
      on_timer(msg.get_as<uint64_t>(1));
    } else if (detail::is<deferred_call>(msg)) {
      auto& fn = msg.get_mutable_as<deferred_call>(0).fn;
      if (serving())
        guarded("call_soon", [&] { fn(); });
    } else if (serving() && !answer_to(x)) {
      auto m = x.move_content_to_message();
      caf::message answer;
      guarded("message_received",
              [&] { answer = proto_->message_received(m); });
      if (x.mid.is_request())
        reply(x, failed_ ? caf::make_message(make_error(errc::protocol_failed))
                         : std::move(answer));
    } else if (x.mid.is_request()) {
      reply(x, caf::make_message(caf::make_error(caf::sec::unexpected_message)));
    }
  }

  // -- timers and answers ------------------------------------------------------

  void on_timer(uint64_t id) {
    auto i = timers_.find(id);
    if (i == timers_.end())
      return;
    auto rec = std::move(i->second);
    timers_.erase(i);
    rec->id = 0;
    auto fn = std::move(rec->fn);
    if (serving())
      guarded("timer", [&] { fn(); });
  }

  void on_answer(uint64_t id, caf::mailbox_element& x) {
    auto i = asks_.find(id);
    auto ask = std::move(i->second);
    asks_.erase(i);
    ask.timer.cancel();
    if (!serving())
      return;
    auto& msg = x.content();
    if (detail::is<caf::error>(msg)) {
      auto err = msg.get_as<caf::error>(0);
      if (ask.fail)
        guarded("request", [&] { ask.fail(err); });
      return;
    }
    auto m = x.move_content_to_message();
    if (ask.then)
      guarded("request", [&] { ask.then(m); });
  }

  // Pending timers and requests end with the protocol.
  void drop_pending() {
    for (auto& [id, rec] : timers_)
      mux().cancel_timer(id);
    forget_pending();
  }

  void forget_pending() {
    for (auto& [id, rec] : timers_) {
      rec->id = 0;
      rec->cancelled = true;
      rec->host = nullptr;
      rec->fn = nullptr;
    }
    timers_.clear();
    asks_.clear();
  }

  // -- set_protocol ------------------------------------------------------------
  //
  // Once the transport's protocol has been set to another actor, every
  // delivery that reaches this one is kept, unhandled, until the transport
  // asks for it (handover); it then goes to the new protocol first.

  static bool is_delivery(const caf::type_erased_tuple& msg) {
    return detail::is<data_received>(msg)
           || detail::is<eof_received>(msg)
           || detail::is<pause_writing>(msg)
           || detail::is<resume_writing>(msg)
           || detail::is<datagram_received>(msg)
           || detail::is<error_received>(msg);
  }

  // The shared state of the transport delivering now: the sender's, which
  // is not always the handle's (a layer started over the handle's
  // transport delivers before the handover has moved the handle to it).
  detail::transport_state* delivering_state() const {
    if (direct_from_ != nullptr)
      return &direct_from_->state();
    if (current_ == nullptr || !current_->sender)
      return handle_.state();
    auto* sender = caf::actor_cast<caf::abstract_actor*>(current_->sender);
    if (handle_ && sender == caf::actor_cast<caf::abstract_actor*>(handle_.actor()))
      return handle_.state();
    if (auto* core = dynamic_cast<detail::transport_core*>(sender))
      return &core->state();
    return handle_.state();
  }

  // Whether a delivery must be kept for the protocol that replaces this
  // one. Cheap unless set_protocol was called since the last look.
  bool holding() {
    if (!stash_.empty())
      return true;
    auto* st = delivering_state();
    if (st == nullptr)
      return false;
    auto epoch = st->protocol_epoch.load(std::memory_order_acquire);
    if (epoch != seen_epoch_ || st != seen_state_) {
      seen_epoch_ = epoch;
      seen_state_ = st;
      replaced_ = st->current_protocol_addr() != address();
    }
    return replaced_;
  }

  void on_handover(const caf::mailbox_element& x, const handover& req) {
    reply(x, caf::make_message(handover_stash{std::move(stash_)}));
    stash_.clear();
    seen_epoch_ = 0;
    // start_tls: the new protocol of our transport is a layer whose own
    // protocol is this one; it is our transport from now on.
    // The layer lives on the transport's loop, which may not be ours: only
    // its shared state is read here.
    auto* core = dynamic_cast<detail::transport_core*>(
      detail::find_light(req.next));
    if (core != nullptr && handle_
        && core->state().current_protocol_addr() == address()) {
      demonitor(handle_.actor());
      handle_ = core->make_handle();
      monitor(handle_.actor());
    }
  }

  // The transport ended before it took the switch up: what was kept is
  // this protocol's after all.
  void replay_then_lose(caf::mailbox_element& x) {
    auto kept = std::move(stash_);
    stash_.clear();
    for (auto& m : kept) {
      auto elem = caf::make_mailbox_element(nullptr, caf::make_message_id(),
                                            {}, std::move(m));
      handle_message(*elem, elem->content());
    }
    handle_message(x, x.content());
  }

  // A stream protocol on a datagram transport (or the reverse) would see
  // nothing: fail the connection at once instead.
  void check_kind() {
    auto* st = handle_.state();
    if (st == nullptr)
      return;
    using detail::transport_kind;
    auto kind = st->kind;
    const char* wants = stream_     ? "a stream protocol"
                        : datagram_ ? "a datagram protocol"
                                    : "a subprocess protocol";
    auto fits = stream_ ? kind != transport_kind::datagram
                            && kind != transport_kind::subprocess
                : datagram_ ? kind == transport_kind::datagram
                            : kind == transport_kind::subprocess;
    mismatched_ = !fits;
    if (mismatched_)
      fail("connection_made",
           std::string{wants} + " on a "
             + (kind == transport_kind::datagram     ? "datagram"
                : kind == transport_kind::subprocess ? "subprocess"
                                                     : "stream")
             + " transport");
  }

  // The protocol's answer to eof_received: whether to keep the write side
  // open.
  bool on_eof() {
    bool keep_open = false;
    if (stream_ && !failed_ && !lost_)
      guarded("eof_received", [&] { keep_open = stream_->eof_received(); });
    return keep_open;
  }

  void on_data(bytes& data) {
    auto n = data.size();
    if (stream_ && !failed_ && !lost_)
      guarded("data_received", [&] { stream_->data_received(std::move(data)); });
    if (!owns_credit_)
      give_back(n);
  }

  // The transport that is delivering right now, for a protocol installed by
  // set_protocol, which never saw connection_made and has no handle.
  [[nodiscard]] caf::actor deliverer() const {
    if (direct_from_ != nullptr)
      return direct_from_->handle();
    if (current_ != nullptr)
      return caf::actor_cast<caf::actor>(current_->sender);
    return {};
  }

  void on_down(const caf::down_msg& msg) {
    if (!handle_ || msg.source != handle_.actor().address())
      return;
    if (replaced()) {
      // set_protocol moved the connection to another protocol, which got
      // connection_lost; this one just ends.
      lost_ = true;
      reset_protocol();
      quit();
      return;
    }
    lose(make_error(errc::transport_down));
  }

  // Runs one callback; a throw is fatal for the connection (asyncio's
  // _fatal_error), reported once, and connection_lost follows.
  template <class F>
  void guarded(const char* name, F&& fn) {
    try {
      fn();
    } catch (const std::exception& ex) {
      fail(name, ex.what());
    } catch (...) {
      fail(name, "unknown exception");
    }
  }

  void fail(const char* name, const std::string& what) {
    if (failed_ || (lost_ && !lingering_))
      return;
    failed_ = true;
    auto text = std::string{"protocol callback "} + name + " failed: " + what;
    mux().warn(text);
    auto reason = make_error(errc::protocol_failed, text);
    if (handle_)
      handle_.abort(std::move(reason));
    else if (!lost_)
      // (While a coroutine lingers, the sender is whoever answered.)
      if (auto src = deliverer())
        caf::anon_send(src, op::abort{std::move(reason)});
  }

  // Returns read credit: through the shared handle when there is one (no
  // message in the common case), else by message to whoever delivered the
  // bytes (a protocol installed by set_protocol never saw connection_made).
  void give_back(size_t n) {
    if (handle_) {
      handle_.consumed(n);
      return;
    }
    give_back_without_handle(n);
  }

  void give_back_without_handle(size_t n) {
    if (direct_from_ != nullptr)
      transport{direct_from_->handle(), &direct_from_->state()}.consumed(n);
    else if (auto src = deliverer())
      caf::anon_send(src, op::consumed{n});
  }

  void lose(caf::error reason) {
    if (lost_)
      return;
    lost_ = true;
    // A coroutine outlives its connection until it returns: its timers and
    // requests go on, from connection_lost on; it ends on the first message
    // after it has returned.
    lingering_ = !mismatched_ && !failed_ && detail_access::lingers(*proto_);
    try {
      // A protocol of the wrong kind never saw connection_made: it gets
      // no connection_lost either.
      if (!mismatched_)
        proto_->connection_lost(reason);
    } catch (const std::exception& ex) {
      mux().warn(std::string{"protocol callback connection_lost failed: "}
                 + ex.what());
    } catch (...) {
      mux().warn("protocol callback connection_lost failed");
    }
    handle_ = transport{};
    if (lingering_ && proto_ && detail_access::lingers(*proto_)) {
      // Shutting the runtime down ends it as it ends connections.
      mux().track(id(), caf::actor_cast<caf::actor>(ctrl()), false);
      return;
    }
    lingering_ = false;
    reset_protocol();
    quit();
  }

  // Whether timers, deferred calls and answers still reach the protocol:
  // until its connection is lost, or while a coroutine lingers after it.
  [[nodiscard]] bool serving() const noexcept {
    return proto_ && !failed_ && (!lost_ || lingering_);
  }

  void end_lingering() {
    lingering_ = false;
    mux().untrack(id());
    reset_protocol();
    quit();
  }

  void reset_protocol() {
    drop_pending();
    proto_.reset();
    stream_ = nullptr;
    datagram_ = nullptr;
    child_ = nullptr;
  }

  bool replaced() {
    auto* st = handle_.state();
    if (st == nullptr)
      return false;
    auto current = st->current_protocol_addr();
    return current && current != address();
  }

  std::unique_ptr<base_protocol> proto_;
  // proto_ as the one of the two kinds it is (the other is null).
  protocol* stream_;
  datagram_protocol* datagram_;
  subprocess_protocol* child_;
  transport handle_;
  caf::mailbox_element* current_ = nullptr;
  detail::transport_core* direct_from_ = nullptr;
  // Deliveries kept for the protocol replacing this one.
  std::vector<caf::message> stash_;
  uint32_t seen_epoch_ = 0;
  const detail::transport_state* seen_state_ = nullptr;
  bool replaced_ = false;
  // The protocol's timers by the loop's id, and its requests by theirs.
  std::unordered_map<uint64_t, std::shared_ptr<timer_handle::record>> timers_;
  struct pending_ask {
    std::function<void(caf::message&)> then;
    std::function<void(const caf::error&)> fail;
    timer_handle timer;
  };
  std::unordered_map<uint64_t, pending_ask> asks_;
  // The protocol gives read credit back itself (a coroutine's stream).
  bool owns_credit_;
  bool mismatched_ = false;
  bool failed_ = false;
  bool lost_ = false;
  // Lost, with a protocol that goes on (a coroutine that has not returned).
  bool lingering_ = false;
};

} // namespace

caf::expected<caf::actor>
protocol_factory::make(detail::multiplexer& mux) const noexcept {
  try {
    return fn_(mux);
  } catch (const std::exception& ex) {
    return make_error(errc::protocol_failed,
                      std::string{"protocol factory failed: "} + ex.what());
  } catch (...) {
    return make_error(errc::protocol_failed, "protocol factory failed");
  }
}

caf::actor protocol_factory::spawn_adapter(detail::multiplexer& mux,
                                           std::unique_ptr<base_protocol> p) {
  return detail::spawn_light<adapter>(mux, std::move(p));
}

caf::actor detail::spawn_adapter(multiplexer& mux,
                                 std::unique_ptr<base_protocol> p,
                                 const transport& current) {
  return spawn_light<adapter>(mux, std::move(p), current);
}

} // namespace tact
