// The relay: one class protocol on each side, installed with set_protocol.
// Each forwards what its transport reads to the other side and holds the
// other side's reading back while its own write buffer is full.

#include "tact/protocols/relay.hpp"

#include <atomic>
#include <memory>

#include <caf/sec.hpp>

#include "tact/runtime/detail/light_actor.hpp"
#include "tact/runtime/detail/transport_state.hpp"
#include "tact/runtime/errc.hpp"
#include "tact/runtime/messages.hpp"
#include "tact/runtime/runtime.hpp"

namespace tact {

namespace {

using detail::transport_kind;

bool is_child(const transport& t) {
  return t.state()->kind == transport_kind::subprocess;
}

// One side as the other sees it: where bytes for it are written and
// whose reading its buffer holds back (the transport, or the child's stdin
// and stdout).
struct relay_end {
  transport t;
  bool child = false;
  // Set when this side's peer sent EOF, and when EOF went out to it; a
  // stream side that has both is done and is closed.
  std::atomic<int> halves{0};

  [[nodiscard]] transport input() const {
    return child ? t.get_pipe_transport(0) : t;
  }

  [[nodiscard]] transport output() const {
    return child ? t.get_pipe_transport(1) : t;
  }

  void write(bytes data) const {
    if (auto in = input())
      in.write(std::move(data));
  }

  void pause() const {
    if (auto out = output())
      out.pause_reading();
  }

  void resume() const {
    if (auto out = output())
      out.resume_reading();
  }

  // One half of a stream side ended; the second closes it.
  void half_done() {
    if (!child && halves.fetch_add(1) == 1)
      t.close();
  }

  // The peer of the other side sent EOF: pass it on where it can go.
  void end_input() {
    if (child) {
      // A write pipe's close is asyncio's write_eof: drain, then close.
      if (auto in = input())
        in.close();
      return;
    }
    if (t.can_write_eof()) {
      t.write_eof();
      half_done();
      return;
    }
    // TLS has no half-close: its end of stream is close_notify, after what
    // is buffered.
    t.close();
  }
};

struct relay_link {
  relay_end ends[2];
};

// What both kinds of side do: hold the other side's reading back while
// this side's buffer is full, and close it when this side ends.
template <class Base>
class relay_side : public Base {
public:
  relay_side(std::shared_ptr<relay_link> link, int me)
    : link_(std::move(link)), me_(link_->ends[me]),
      other_(link_->ends[1 - me]) {
    // nop
  }

  // For a child: about its stdin.
  void pause_writing() override {
    other_.pause();
  }

  void resume_writing() override {
    other_.resume();
  }

  void connection_lost(const caf::error&) override {
    other_.t.close();
  }

protected:
  std::shared_ptr<relay_link> link_;
  relay_end& me_;
  relay_end& other_;
};

// The relay's protocol on a stream transport.
class stream_side final : public relay_side<protocol> {
public:
  using relay_side::relay_side;

  void data_received(bytes data) override {
    other_.write(std::move(data));
  }

  bool eof_received() override {
    other_.end_input();
    me_.half_done();
    // Half-open: what the other side still sends is written here.
    return true;
  }
};

// The relay's protocol on a subprocess transport.
class child_side final : public relay_side<subprocess_protocol> {
public:
  using relay_side::relay_side;

  void pipe_data_received(int fd, bytes data) override {
    if (fd == 1)
      other_.write(std::move(data));
  }

  void pipe_connection_lost(int fd, const caf::error&) override {
    if (fd == 1)
      other_.end_input();
  }
};

caf::error check_end(const transport& t) {
  auto* st = t.state();
  if (st == nullptr)
    return make_error(errc::not_supported, "relay on a transport of another "
                                           "node");
  if (st->kind == transport_kind::datagram
      || st->kind == transport_kind::read_pipe
      || st->kind == transport_kind::write_pipe)
    return make_error(errc::not_supported,
                      "relay needs stream or subprocess transports");
  return caf::none;
}

// Reads nothing: the relay resumes it.
void hold(transport t) {
  if (t.state() != nullptr && is_child(t)) {
    if (auto out = t.get_pipe_transport(1))
      out.pause_reading();
  } else {
    t.pause_reading();
  }
}

// The protocol of a side while the other is being opened, for any kind of
// transport: it stops reading at once, runs `on_made`, and leaves when the
// relay's protocol takes over. A light actor of the loop, so that waiting
// costs neither a thread nor an event-based actor.
class waiting final : public detail::light_actor {
public:
  waiting(caf::actor_config& cfg, detail::multiplexer& mux,
          std::function<void(transport)> on_made)
    : detail::light_actor(cfg, mux), on_made_(std::move(on_made)) {
    // nop
  }

  static protocol_factory factory(std::function<void(transport)> on_made) {
    return protocol_factory::with_loop(
      [on_made = std::move(on_made)](detail::multiplexer& mux) {
        return detail::spawn_light<waiting>(mux, on_made);
      });
  }

protected:
  void on_message(caf::mailbox_element& x) override {
    auto& msg = x.content();
    if (msg.match_elements<connection_made>()) {
      auto t = msg.get_as<connection_made>(0).handle;
      hold(t);
      if (auto f = std::move(on_made_)) {
        on_made_ = nullptr;
        f(t);
      }
      reply(x, caf::make_message());
    } else if (msg.match_elements<handover>()) {
      reply(x, caf::make_message(handover_stash{}));
      quit();
    } else if (msg.match_elements<connection_lost>()) {
      quit();
    } else if (x.mid.is_request()) {
      reply(x, caf::make_message(caf::make_error(caf::sec::unexpected_message)));
    }
  }

private:
  std::function<void(transport)> on_made_;
};

} // namespace

caf::error relay(transport a, transport b) {
  if (auto err = check_end(a))
    return err;
  if (auto err = check_end(b))
    return err;
  if (is_child(a) && is_child(b))
    return make_error(errc::not_supported, "relay between two subprocesses");
  if (a.is_closing() || b.is_closing()) {
    a.close();
    b.close();
    return make_error(errc::closed, "relay of a closing transport");
  }
  auto link = std::make_shared<relay_link>();
  link->ends[0].t = a;
  link->ends[0].child = is_child(a);
  link->ends[1].t = b;
  link->ends[1].child = is_child(b);
  for (int i = 0; i < 2; ++i) {
    auto& end = link->ends[i];
    auto t = end.t;
    if (end.child)
      t.set_protocol(std::make_unique<child_side>(link, i));
    else
      t.set_protocol(std::make_unique<stream_side>(link, i));
  }
  for (auto& end : link->ends)
    end.resume();
  return caf::none;
}

protocol_factory relay_to(relay_opener open,
                          std::function<void(const caf::error&)> on_error) {
  auto opener = std::make_shared<relay_opener>(std::move(open));
  auto report = std::make_shared<std::function<void(const caf::error&)>>(
    std::move(on_error));
  return waiting::factory([opener, report](transport accepted) {
    auto fail = [accepted, report](caf::error err) mutable {
      if (*report)
        (*report)(err);
      accepted.abort(std::move(err));
    };
    // The other end joins this one once it is up and holds its reading:
    // from its own connection_made, so that nothing it does there can come
    // after the relay's start.
    auto other_end = waiting::factory(
      [accepted](transport other) { relay(accepted, other); });
    try {
      (*opener)(std::move(other_end),
                [fail](caf::expected<transport> other) mutable {
                  if (!other)
                    fail(std::move(other.error()));
                });
    } catch (const std::exception& ex) {
      fail(make_error(errc::protocol_failed,
                      std::string{"the relay's opener threw: "} + ex.what()));
    }
  });
}

} // namespace tact
