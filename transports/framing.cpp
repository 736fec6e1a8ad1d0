// The framing layer: one light actor per connection, on the loop of the
// stream transport below it. Below, it is that transport's protocol; above,
// it is a transport that delivers one frame per data_received and frames
// each write. It holds no write buffer: frames go straight to the
// transport below, whose buffer and watermarks are the layer's.

#include "tact/transports/framing.hpp"

#include <exception>
#include <optional>
#include <string>

#include <caf/sec.hpp>
#include <caf/system_messages.hpp>

#include "tact/runtime/detail/multiplexer.hpp"
#include "tact/runtime/detail/transport_core.hpp"
#include "tact/runtime/errc.hpp"
#include "tact/runtime/messages.hpp"
#include "tact/transports/detail/layer.hpp"

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

class frame_layer final : public detail::layer {
public:
  frame_layer(caf::actor_config& cfg, detail::multiplexer& mux,
              layer_setup setup)
    : layer(cfg, mux, detail::transport_kind::frames, setup.read_credit,
            std::move(setup.app), std::move(setup.lower)),
      format_(setup.format), decoder_(std::move(setup.format)),
      factory_(std::move(setup.factory)) {
    state_.family = "frames";
  }

protected:
  bool on_layer_start() override {
    // start_framing: the protocol had connection_made from the transport
    // below.
    if (protocol_)
      read_started_ = true;
    return true;
  }

  void begin() override {
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
    // framed(): the protocol above is made once the transport below is up.
    if (factory_ && !lost_)
      make_protocol();
  }

  void on_app_ready() override {
    pump();
  }

  // -- the transport below ---------------------------------------------------------

  void on_lower_data(bytes& data) override {
    decoder_.feed(std::move(data));
    pump();
  }

  void on_lower_eof() override {
    lower_eof_ = true;
    pump();
  }

  void on_lower_pause(bool paused) override {
    if (paused)
      deliver(caf::make_message(pause_writing{}));
    else
      deliver(caf::make_message(resume_writing{}));
  }

  void on_lower_lost(caf::error reason) override {
    // After close() nothing more is delivered: that end is the answer.
    if (lost_ || closing_) {
      lose(std::move(reason), true);
      return;
    }
    // What was read is still delivered; then, after a clean end below
    // (TLS after close_notify), eof_received and connection_lost; after a
    // failure (a reset), connection_lost with it.
    lower_eof_ = true;
    lower_failure_ = std::move(reason);
    pump();
  }

  handover_stash on_lower_handover() override {
    // The transport below goes to another protocol: it gets the stream
    // this layer had not cut into frames yet (and the EOF it had
    // answered), and the protocol above loses its transport. `lower_`
    // stays: the shared state it keeps alive is still `below`.
    handover_stash stash;
    if (auto rest = decoder_.take_rest(); !rest.empty())
      stash.messages.push_back(caf::make_message(data_received{std::move(rest)}));
    if (lower_eof_)
      stash.messages.push_back(caf::make_message(eof_received{}));
    lower_gone_ = true;
    lose(make_error(errc::closed, "the framing layer was replaced"), true);
    return stash;
  }

  // -- the protocol above ------------------------------------------------------------

  void on_write(bytes& data) override {
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

  void on_write_eof() override {
    if (!closing_ && !lost_)
      lower_.write_eof();
  }

  void on_close() override {
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

  void on_read_change() override {
    pump();
  }

  void on_limits() override {
    if (lower_)
      lower_.set_write_buffer_limits(state_.high.load(), state_.low.load());
  }

  void on_eof_answer(bool keep_open) override {
    if (!keep_open)
      on_close();
  }

  size_t buffer_size() const override {
    return lower_ ? lower_.get_write_buffer_size() : 0;
  }

  void abort_layer(caf::error reason) override {
    lose(std::move(reason), false);
  }

private:
  void make_protocol() {
    made_request_ = install_protocol(*factory_);
    factory_.reset();
    if (made_request_ == 0)
      lose(make_error(errc::protocol_failed,
                      "the protocol factory made no protocol"),
           false);
  }

  // -- reading -----------------------------------------------------------------------

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
          deliver_data(**last);
        eof_asked_ = true;
        request_eof();
        if (lower_gone_)
          lose(caf::none, true);
        break;
      }
      deliver_data(**frame);
    }
    throttle();
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

  // Ends the connection: the transport below is aborted unless it is gone
  // already (`from_below`), and the protocol above hears
  // `connection_lost(reason)`.
  void lose(caf::error reason, bool from_below) {
    if (!mark_lost())
      return;
    if (lower_ && !from_below && !lower_gone_)
      lower_.abort(reason);
    end_protocol(std::move(reason));
  }

  framing format_;
  frame_decoder decoder_;
  std::optional<protocol_factory> factory_;
  std::vector<bytes> chunks_;
  bool lower_paused_ = false;
  bool lower_eof_ = false;
  bool eof_asked_ = false;
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
