// The relay: one light actor on each side, that side's protocol. Each
// forwards what its transport reads to the other side and holds the other
// side's reading back while its own write buffer is full.

#include "tact/protocols/relay.hpp"

#include <atomic>
#include <memory>

#include <caf/sec.hpp>

#include "tact/runtime/detail/light_actor.hpp"
#include "tact/runtime/detail/multiplexer.hpp"
#include "tact/runtime/detail/match.hpp"
#include "tact/runtime/detail/transport_core.hpp"
#include "tact/runtime/errc.hpp"
#include "tact/runtime/messages.hpp"

namespace tact {

namespace {

using detail::transport_kind;

// From a relay's side to the other, across loops: your reading may go on
// (see relay_side::hold_if_full).
using recheck_atom = caf::atom_constant<caf::atom("relaychk")>;

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
  // stream side that has both is done and is closed. Atomic: the two sides
  // of a relay may live on two loops, and each counts on both ends.
  std::atomic<int> halves{0};
  // Whether this end's transport has paused writing (its pause_writing came
  // to this end's side, and its resume_writing has not): set by that side,
  // read by the other, which may live on another loop.
  std::atomic<bool> writing_paused{false};
  // Set once `t` is: with relay_to, the other end's side sets it on its
  // loop, which may not be the accepted side's.
  std::atomic<bool> ready{false};

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
    if (!child && halves.fetch_add(1) + 1 == 2)
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
      if (halves.load() == 1) {
        // Its peer has ended already: close() sends the same FIN after
        // what is buffered, without a shutdown() first.
        t.close();
        return;
      }
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
  // `relay_to`: the accepted side's connection_made, answered once the
  // other end is connected (its transport reads nothing before).
  detail::light_actor::pending_reply accepted_made;
};

// One side of a relay: the protocol of that side's transport, a light
// actor of the loop that the transport hands its bytes by a direct call.
// It writes what its side reads to the other side, holds the other side's
// reading back while its own write buffer is full, passes EOF on, and
// closes the other side when its own ends. The same actor serves a stream
// transport and a subprocess transport (the child's stdout is read, its
// stdin written).
//
// `relay` installs it with set_protocol; `relay_to` makes it the first
// protocol of both sides, so that no protocol is switched per connection:
// then `on_made` runs in connection_made. The accepted side answers its
// connection_made only when the other end is up (`start_made`), so that
// its transport reads nothing before, without a pause and a resume.
class relay_side final : public detail::protocol_core {
public:
  relay_side(caf::actor_config& cfg, detail::multiplexer& mux,
             std::shared_ptr<relay_link> link, int me,
             std::function<void(transport)> on_made = {})
    : detail::protocol_core(cfg, mux), link_(std::move(link)),
      me_(link_->ends[me]), other_(link_->ends[1 - me]),
      on_made_(std::move(on_made)) {
    // nop
  }

  void direct_data(bytes& data, detail::transport_core&) override {
    forward(data);
  }

  bool direct_eof(detail::transport_core&, bool& keep_open) override {
    keep_open = on_eof();
    return true;
  }

  bool direct_lost(caf::error&, detail::transport_core&) override {
    on_lost();
    return true;
  }

protected:
  void on_message(caf::mailbox_element& x) override {
    auto& msg = x.content();
    if (auto id = answer_to(x); id != 0) {
      if (id == barrier_)
        on_barrier(msg);
    } else if (detail::is<data_received>(msg)) {
      forward(msg.get_mutable_as<data_received>(0).data);
    } else if (detail::is<pipe_data_received>(msg)) {
      auto& d = msg.get_mutable_as<pipe_data_received>(0);
      if (d.fd == 1) {
        forward(d.data);
      } else if (auto pipe = me_.t.get_pipe_transport(d.fd)) {
        // stderr, when it is a pipe: not relayed.
        pipe.consumed(d.data.size());
      }
    } else if (detail::is<eof_received>(msg)) {
      reply(x, caf::make_message(on_eof()));
    } else if (detail::is<pipe_connection_lost>(msg)) {
      auto fd = msg.get_as<pipe_connection_lost>(0).fd;
      if (fd == 1)
        other_.end_input();
      else if (fd == 0)
        writing_resumed(); // the child's stdin is gone: nothing holds back
    } else if (detail::is<pause_writing>(msg)) {
      // For a child: about its stdin.
      me_.writing_paused = true;
      other_.pause();
    } else if (detail::is<resume_writing>(msg)) {
      writing_resumed();
    } else if (msg.match_elements<recheck_atom>()) {
      if (barrier_ == 0)
        recheck();
    } else if (detail::is<connection_made>(msg)) {
      made(x, msg.get_as<connection_made>(0).handle);
    } else if (detail::is<connection_lost>(msg)) {
      on_lost();
    } else if (detail::is<handover>(msg)) {
      // The transport moves on to another protocol (set_protocol).
      reply(x, caf::make_message(handover_stash{}));
      quit();
    } else if (x.mid.is_request()) {
      reply(x, caf::make_message(caf::make_error(caf::sec::unexpected_message)));
    }
  }

private:
  // EOF goes on to the other side; half-open, what the other side still
  // sends is written here.
  bool on_eof() {
    other_.end_input();
    me_.half_done();
    return true;
  }

  void on_lost() {
    // The other end not up yet: its start finds this one closing and
    // closes both.
    if (other_.ready.load())
      other_.t.close();
    quit();
  }

  // This side's transport takes writes again (or, a child's stdin gone,
  // drops them): the other side's reading may go on. Across loops, bytes
  // the other side wrote may still be on their way here: that side, which
  // counts them, decides.
  void writing_resumed() {
    me_.writing_paused = false;
    if (across())
      send_to(other_.t.get_protocol(), caf::make_message(recheck_atom::value));
    else
      other_.resume();
  }

  void forward(bytes& data) {
    auto n = data.size();
    other_.write(std::move(data));
    // The bytes are the other side's now (or dropped with it): the read
    // credit goes back at once, and the other side's watermark holds this
    // side back.
    if (auto out = me_.output())
      out.consumed(n);
    if (across())
      hold_if_full();
  }

  // Whether the other side's transport lives on another loop than this
  // side's: then a write to it is a message.
  bool across() {
    if (across_ == loops::unknown) {
      auto* mine = me_.output().state();
      auto* theirs = other_.input().state();
      across_ = mine != nullptr && theirs != nullptr
                    && &mine->core->mux() != &theirs->core->mux()
                  ? loops::two
                  : loops::one;
    }
    return across_ == loops::two;
  }

  // Across loops, the other transport's pause_writing comes only once its
  // loop has taken in the bytes written to it, while this side's loop reads
  // on. So this side holds its own reading back whenever the other side's
  // buffer, bytes on their way counted, is over its high watermark (even
  // with a barrier out: the other side may have resumed this one since),
  // and asks that transport for its buffer size: the answer comes in its
  // mailbox's order, after those bytes.
  void hold_if_full() {
    auto in = other_.input();
    if (!in || in.get_write_buffer_size() <= in.get_write_buffer_limits().second)
      return;
    me_.pause();
    if (barrier_ == 0)
      send_barrier(in);
  }

  void send_barrier(const transport& in) {
    barrier_ = request_to(in.actor(),
                          caf::make_message(op::get_write_buffer_size{}));
  }

  // The bytes written before the barrier are in, or that transport is gone
  // (a child's stdin can go with the child still running): look again.
  void on_barrier(const caf::type_erased_tuple&) {
    barrier_ = 0;
    recheck();
  }

  // If the other side's transport has paused writing, that side's
  // resume_writing brings a recheck. Else, under the mark, reading goes
  // on; over it (bytes still on their way, or a pause_writing the other
  // side has not handled yet), this side holds and sends a barrier.
  void recheck() {
    auto in = other_.input();
    if (in && other_.writing_paused.load())
      return;
    // (No input left, or a lost one, holds nothing back.)
    if (in && in.get_write_buffer_size() > in.get_write_buffer_limits().second) {
      me_.pause();
      send_barrier(in);
    } else {
      me_.resume();
    }
  }

  void made(const caf::mailbox_element& x, const transport& t) {
    me_.t = t;
    me_.ready = true;
    me_.child = is_child(t);
    auto f = std::move(on_made_);
    on_made_ = nullptr;
    if (&me_ == &link_->ends[0]) {
      // The accepted side: answered by the other end's start.
      link_->accepted_made = later(x);
      if (f)
        f(t);
      return;
    }
    if (f)
      f(t);
    // This end's transport goes first, so that it has nothing queued when
    // the accepted side's first bytes come for it (a direct write then).
    reply(x, caf::make_message());
    // The other end is up: the accepted side's transport may read (or, if
    // start closed both, learn that it is closing).
    if (link_->accepted_made.sender) {
      reply(link_->accepted_made, caf::make_message());
      link_->accepted_made = {};
    }
  }

  std::shared_ptr<relay_link> link_;
  relay_end& me_;
  relay_end& other_;
  std::function<void(transport)> on_made_;
  enum class loops : unsigned char { unknown, one, two };
  loops across_ = loops::unknown;
  // The request of `hold_if_full` under way (0: none).
  uint64_t barrier_ = 0;
};

// Starts relaying between the two ends of `link`: reading resumes on both
// (with `resume`), unless one of them is closing already (both are closed
// then).
caf::error start(relay_link& link, bool resume = true) {
  auto& a = link.ends[0].t;
  auto& b = link.ends[1].t;
  if (a.is_closing() || b.is_closing()) {
    a.close();
    b.close();
    return make_error(errc::closed, "relay of a closing transport");
  }
  if (resume)
    for (auto& end : link.ends)
      end.resume();
  return caf::none;
}

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
  link->ends[0].ready = true;
  link->ends[1].t = b;
  link->ends[1].child = is_child(b);
  link->ends[1].ready = true;
  // Each side on its transport's loop: it takes what that transport reads
  // by a direct call, and holds that reading back at once.
  for (int i = 0; i < 2; ++i) {
    auto t = link->ends[i].t;
    t.set_protocol(
      detail::spawn_light<relay_side>(t.state()->core->mux(), link, i));
  }
  return start(*link);
}

protocol_factory relay_to(relay_opener open,
                          std::function<void(const caf::error&)> on_error) {
  auto opener = std::make_shared<relay_opener>(std::move(open));
  auto report = std::make_shared<std::function<void(const caf::error&)>>(
    std::move(on_error));
  return protocol_factory::with_loop([opener,
                                      report](detail::multiplexer& mux) {
    auto link = std::make_shared<relay_link>();
    return detail::spawn_light<relay_side>(
      mux, link, 0, [opener, report, link](transport accepted) {
        auto fail = [accepted, report](caf::error err) mutable {
          if (*report)
            (*report)(err);
          accepted.abort(std::move(err));
        };
        // The other end starts the relay from its own connection_made, so
        // that nothing it does there can come after the start. It lives on
        // its transport's loop (this one, when the opener connects from
        // here, as an opener that calls the runtime does); what it reads of
        // the link, this side wrote before it called the opener.
        auto other_end = protocol_factory::with_loop(
          [link](detail::multiplexer& m) {
            return detail::spawn_light<relay_side>(
              m, link, 1, [link](transport) { start(*link, false); });
          });
        try {
          (*opener)(std::move(other_end),
                    [fail](caf::expected<transport> other) mutable {
                      if (!other)
                        fail(std::move(other.error()));
                    });
        } catch (const std::exception& ex) {
          fail(make_error(errc::protocol_failed,
                          std::string{"the relay's opener threw: "}
                            + ex.what()));
        }
      });
  });
}

} // namespace tact
