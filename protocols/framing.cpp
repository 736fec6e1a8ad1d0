// The framing layer: one light actor per connection, on the loop of the
// stream transport below it. Below, it is that transport's protocol; above,
// it is a transport that delivers one frame per data_received and frames
// each write. It holds no write buffer: frames go straight to the
// transport below, whose buffer and watermarks are the layer's.

#include "tact/protocols/framing.hpp"

#include <exception>
#include <optional>
#include <string>

#include <caf/sec.hpp>
#include <caf/system_messages.hpp>

#include "tact/runtime/detail/multiplexer.hpp"
#include "tact/runtime/detail/transport_state.hpp"
#include "tact/runtime/errc.hpp"
#include "tact/runtime/messages.hpp"

namespace tact {

namespace {

// Undelivered bytes past which the transport below stops reading while the
// protocol above does not take frames (paused, or out of read credit).
constexpr size_t backlog_high = 256 * 1024;

struct layer_setup {
  framing format;
  // start_framing: the protocol above, which has its lifecycle already.
  caf::actor app;
  // framed(): the protocol above is made once the transport below is up.
  std::optional<protocol_factory> factory;
  // start_framing: the transport below.
  transport lower;
  uint64_t read_credit = 256 * 1024;
};

class frame_layer final : public detail::transport_core {
public:
  frame_layer(caf::actor_config& cfg, detail::multiplexer& mux,
              layer_setup setup)
    : transport_core(cfg, mux, detail::transport_kind::frames,
                     setup.read_credit, std::move(setup.app)),
      format_(setup.format), decoder_(std::move(setup.format)),
      factory_(std::move(setup.factory)), lower_(std::move(setup.lower)) {
    state_.family = "frames";
    if (lower_)
      state_.below = lower_.state();
  }

  void direct_write(bytes& data) override {
    on_write(data);
  }

protected:
  void on_start() override {
    // Tracked like a transport, so that shutdown closes the topmost layer.
    mux().track(id(), handle(), false);
    if (protocol_) {
      watch_protocol(true);
      // The protocol had connection_made from the transport below.
      read_started_ = true;
    }
    if (lower_)
      begin();
  }

  void on_message(caf::mailbox_element& x) override {
    auto& msg = x.content();
    if (handle_protocol_message(x, msg))
      return;
    if (auto id = answer_to(x)) {
      if (id == made_request_)
        on_made_answer(msg);
      else if (is_eof_answer(id) && !(msg.match_elements<bool>()
                                      && msg.get_as<bool>(0)))
        on_close();
      return;
    }
    if (from_below(x, msg))
      return;
    if (msg.match_elements<op::write>()) {
      auto& w = msg.get_mutable_as<op::write>(0);
      if (w.counted)
        state_.in_flight -= w.data.size();
      on_write(w.data);
    } else if (msg.match_elements<op::write_eof>()) {
      if (!closing_ && !lost_)
        lower_.write_eof();
    } else if (msg.match_elements<op::close>()) {
      on_close();
    } else if (msg.match_elements<op::abort>()) {
      lose(std::move(msg.get_mutable_as<op::abort>(0).reason), false);
    } else if (read_command(msg, user_paused_, closing_)) {
      pump();
    } else if (msg.match_elements<op::set_write_buffer_limits>()) {
      auto& lim = msg.get_as<op::set_write_buffer_limits>(0);
      if (!lim.applied) {
        state_.high = lim.high;
        state_.low = lim.low;
      }
      if (lower_)
        lower_.set_write_buffer_limits(state_.high.load(), state_.low.load());
    } else if (msg.match_elements<op::get_write_buffer_size>()) {
      auto n = lower_ ? lower_.get_write_buffer_size() : 0;
      reply(x, caf::make_message(static_cast<uint64_t>(n)));
    } else if (x.mid.is_request()) {
      reply(x, caf::make_message(caf::make_error(caf::sec::unexpected_message)));
    }
  }

  void on_exit(caf::error reason) override {
    lose(reason ? std::move(reason) : make_error(errc::transport_down), false);
  }

  void on_protocol_down() override {
    lose(make_error(errc::protocol_down), false);
  }

  void on_switched() override {
    pump();
  }

private:
  // -- the transport below ---------------------------------------------------------

  bool from_below(caf::mailbox_element& x, caf::type_erased_tuple& msg) {
    if (msg.match_elements<connection_made>()) {
      reply(x, caf::make_message());
      if (!lower_) {
        lower_ = msg.get_as<connection_made>(0).handle;
        state_.below = lower_.state();
        begin();
        if (!lost_)
          make_protocol();
      }
    } else if (msg.match_elements<data_received>()) {
      auto& data = msg.get_mutable_as<data_received>(0).data;
      if (lower_)
        lower_.consumed(data.size());
      if (lost_)
        return true;
      decoder_.feed(std::move(data));
      pump();
    } else if (msg.match_elements<eof_received>()) {
      // The layer answers for the protocol above, once it has had every
      // frame: until then the transport below stays half-open.
      reply(x, caf::make_message(true));
      lower_eof_ = true;
      pump();
    } else if (msg.match_elements<pause_writing>()) {
      deliver(caf::make_message(pause_writing{}));
    } else if (msg.match_elements<resume_writing>()) {
      deliver(caf::make_message(resume_writing{}));
    } else if (msg.match_elements<connection_lost>()) {
      auto& reason = msg.get_mutable_as<connection_lost>(0).reason;
      // After close() nothing more is delivered: that end is the answer.
      if (lost_ || closing_) {
        lose(std::move(reason), true);
        return true;
      }
      // What was read is still delivered; then, after a clean end below
      // (TLS after close_notify), eof_received and connection_lost; after
      // a failure (a reset), connection_lost with it.
      lower_gone_ = true;
      lower_eof_ = true;
      lower_failure_ = std::move(reason);
      pump();
    } else if (msg.match_elements<handover>()) {
      // The transport below goes to another protocol: it gets the stream
      // this layer had not cut into frames yet (and the EOF it had
      // answered), and the protocol above loses its transport. `lower_`
      // stays: the shared state it keeps alive is still `below`.
      handover_stash stash;
      if (auto rest = decoder_.take_rest(); !rest.empty())
        stash.messages.push_back(
          caf::make_message(data_received{std::move(rest)}));
      if (lower_eof_)
        stash.messages.push_back(caf::make_message(eof_received{}));
      reply(x, caf::make_message(std::move(stash)));
      lower_gone_ = true;
      lose(make_error(errc::closed, "the framing layer was replaced"), true);
    } else if (msg.match_elements<caf::down_msg>()) {
      auto& down = msg.get_as<caf::down_msg>(0);
      if (lower_ && !lower_gone_ && down.source == lower_.actor().address())
        lose(make_error(errc::transport_down), true);
    } else {
      return false;
    }
    return true;
  }

  void begin() {
    monitor(lower_.actor());
    auto* below = lower_.state();
    auto kind = below != nullptr ? below->kind : detail::transport_kind::stream;
    if (kind != detail::transport_kind::stream
        && kind != detail::transport_kind::tls
        && kind != detail::transport_kind::frames) {
      lose(make_error(errc::not_supported,
                      "a framing layer needs a stream transport below"),
           false);
      return;
    }
    auto [low, high] = lower_.get_write_buffer_limits();
    state_.high = high;
    state_.low = low;
    // start_framing: as asyncio's start_tls, the layer reads from the
    // start, whatever the protocol had paused.
    if (read_started_)
      lower_.resume_reading();
  }

  void make_protocol() {
    made_request_ = install_protocol(*factory_);
    factory_.reset();
    if (made_request_ == 0)
      lose(make_error(errc::protocol_failed,
                      "the protocol factory made no protocol"),
           false);
  }

  void on_made_answer(caf::type_erased_tuple& msg) {
    if (made_ok(msg)) {
      read_started_ = true;
      pump();
    } else {
      lose(make_error(errc::protocol_down), false);
    }
  }

  // -- reading -----------------------------------------------------------------------

  // The shared flags too: a protocol that pauses or closes inside
  // data_received gets no further frame from this loop.
  [[nodiscard]] bool app_reading() const noexcept {
    return read_started_ && !user_paused_ && !closing_ && !switching()
           && !state_.reading_paused.load() && !state_.closing.load()
           && state_.unconsumed.load() < state_.read_credit;
  }

  // Hands whole frames to the protocol while it takes them; at the end of
  // the stream, the last line and then eof_received.
  void pump() {
    while (!lost_ && app_reading()) {
      auto frame = decoder_.next();
      if (!frame) {
        lose(std::move(frame.error()), false);
        return;
      }
      if (!*frame) {
        if (lower_failure_) {
          // An unfinished frame before a failure is not a frame.
          lose(std::move(lower_failure_), true);
          return;
        }
        if (!lower_eof_ || eof_asked_)
          break;
        auto last = decoder_.finish();
        if (!last) {
          lose(std::move(last.error()), false);
          return;
        }
        if (*last)
          hand_up(**last);
        eof_asked_ = true;
        request_eof();
        if (lower_gone_)
          lose(caf::none, true);
        break;
      }
      hand_up(**frame);
    }
    throttle();
  }

  void hand_up(bytes& frame) {
    if (!protocol_)
      return;
    charge_credit(frame.size());
    if (fast_ && fast_->run_now([&] { fast_->direct_data(frame, *this); }))
      return;
    deliver(caf::make_message(data_received{std::move(frame)}));
  }

  // While the protocol takes frames, the decoder holds at most the start of
  // one; while it does not, the transport below stops at backlog_high.
  void throttle() {
    if (lost_ || !lower_ || lower_gone_)
      return;
    auto stop = !app_reading() && decoder_.buffered() >= backlog_high;
    if (stop != lower_paused_) {
      lower_paused_ = stop;
      if (stop)
        lower_.pause_reading();
      else
        lower_.resume_reading();
    }
  }

  // -- writing -----------------------------------------------------------------------

  void on_write(bytes& data) {
    if (lost_ || closing_) {
      state_.count_dropped_write();
      return;
    }
    chunks_.clear();
    if (auto err = encode_frame(format_, std::move(data), chunks_)) {
      lose(std::move(err), false);
      return;
    }
    for (auto& chunk : chunks_)
      lower_.write(std::move(chunk));
    chunks_.clear();
  }

  // -- closing -----------------------------------------------------------------------

  void on_close() {
    if (closing_ || lost_)
      return;
    closing_ = true;
    state_.closing = true;
    if (lower_gone_) {
      lose(std::move(lower_failure_), true);
      return;
    }
    // The transport below flushes, then reports the loss.
    lower_.close();
  }

  // Ends the connection: the transport below is closed or aborted unless
  // it is gone already (`from_below`), and the protocol above hears
  // `connection_lost(reason)`.
  void lose(caf::error reason, bool from_below) {
    if (lost_)
      return;
    lost_ = true;
    closing_ = true;
    state_.closing = true;
    state_.lost = true;
    mux().untrack(id());
    if (lower_ && !from_below && !lower_gone_)
      lower_.abort(reason);
    end_protocol(std::move(reason));
  }

  framing format_;
  frame_decoder decoder_;
  std::optional<protocol_factory> factory_;
  transport lower_;
  std::vector<bytes> chunks_;
  uint64_t made_request_ = 0;
  bool read_started_ = false;
  bool user_paused_ = false;
  bool lower_paused_ = false;
  bool lower_eof_ = false;
  // The transport below ended or went to another protocol.
  bool lower_gone_ = false;
  // Why the transport below ended, if it failed.
  caf::error lower_failure_;
  bool eof_asked_ = false;
  bool closing_ = false;
  bool lost_ = false;
};

caf::actor spawn_layer(detail::multiplexer& mux, layer_setup setup,
                       bytes unread = {}) {
  auto& sys = mux.system();
  caf::actor_config cfg{mux.home()};
  auto lower = setup.lower;
  auto hdl = caf::make_actor<frame_layer, caf::actor>(
    sys.next_actor_id(), sys.node(), &sys, cfg, mux, std::move(setup));
  // start_framing: the layer takes the stream over before it starts, so
  // nothing the peer sends goes to the old protocol.
  if (lower)
    lower.set_protocol(hdl, std::move(unread));
  static_cast<detail::light_actor*>(static_cast<frame_layer*>(
    caf::actor_cast<caf::abstract_actor*>(hdl)))
    ->start();
  return hdl;
}

} // namespace

caf::expected<protocol_factory> framed(framing f, protocol_factory inner) {
  if (auto err = check_framing(f))
    return err;
  return protocol_factory::with_loop(
    [f = std::move(f), inner = std::move(inner)](detail::multiplexer& mux) {
      layer_setup setup;
      setup.format = f;
      setup.factory = inner;
      // The read credit and EOF support come from the transport below when
      // it connects; these are the loop's defaults until then.
      return spawn_layer(mux, std::move(setup));
    });
}

caf::expected<transport> start_framing(const transport& t,
                                       caf::actor protocol, framing f,
                                       bytes unread) {
  auto* st = t.state();
  if (st == nullptr)
    return make_error(errc::not_supported,
                      "start_framing on a transport of another node");
  using detail::transport_kind;
  if (st->kind != transport_kind::stream && st->kind != transport_kind::tls)
    return make_error(errc::not_supported,
                      "start_framing needs a stream transport (TCP, Unix or "
                      "TLS)");
  if (st->closing.load())
    return make_error(errc::closed, "start_framing on a closing transport");
  if (auto err = check_framing(f))
    return err;
  layer_setup setup;
  setup.format = std::move(f);
  setup.app = std::move(protocol);
  setup.lower = t;
  setup.read_credit = st->read_credit;
  auto hdl = spawn_layer(st->core->mux(), std::move(setup), std::move(unread));
  auto* core = dynamic_cast<detail::transport_core*>(
    detail::as_light(hdl, st->core->mux()));
  return core->make_handle();
}

} // namespace tact
