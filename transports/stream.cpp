// The stream-socket transport (TCP and Unix): asyncio's
// _SelectorSocketTransport as an actor living on the multiplexer.

#include "tact/transports/detail/stream.hpp"

#include <cerrno>
#include <deque>
#include <memory>

#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <caf/actor_system.hpp>
#include <caf/atom.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/send.hpp>

#include "tact/runtime/detail/multiplexer.hpp"
#include "tact/runtime/detail/mux_actor.hpp"
#include "tact/runtime/detail/transport_state.hpp"
#include "tact/runtime/errc.hpp"
#include "tact/runtime/messages.hpp"
#include "tact/transports/detail/socket.hpp"

namespace tact::detail {

namespace {

using stop_atom = caf::atom_constant<caf::atom("tactstop")>;

// Chunks handed to one writev.
constexpr int max_iov = 64;

class stream_transport final : public mux_actor, public io_handler {
public:
  stream_transport(caf::actor_config& cfg, multiplexer& mux, int fd,
                   caf::actor protocol, std::shared_ptr<transport_state> state,
                   caf::settings extra)
    : mux_actor(cfg, mux), fd_(fd), protocol_(std::move(protocol)),
      state_(std::move(state)), extra_(std::move(extra)) {
    // nop
  }

  ~stream_transport() override {
    if (fd_ >= 0)
      ::close(fd_);
  }

  caf::behavior make_behavior() override {
    mux().add(fd_, 0, this);
    registered_ = true;
    mux().track(id(), caf::actor_cast<caf::actor>(this), false);
    set_down_handler([this](caf::down_msg& msg) {
      if (protocol_ && msg.source == protocol_.address()) {
        protocol_ = nullptr;
        lose(make_error(errc::protocol_down));
      }
    });
    if (protocol_) {
      monitor(protocol_);
      set_shared_protocol(protocol_);
      transport handle{caf::actor_cast<caf::actor>(this), state_, extra_};
      // Read nothing before the protocol has seen connection_made: whatever
      // it asks for while handling it (pause_reading) comes first.
      request(protocol_, caf::infinite, connection_made{std::move(handle)})
        .then([this] { start(); },
              [this](caf::error& err) {
                // A behaviour without a handler for connection_made still
                // gets the data; a dead protocol ends the connection.
                if (err == caf::sec::unexpected_message)
                  start();
                else
                  lose(make_error(errc::protocol_down));
              });
    } else {
      lose(make_error(errc::protocol_down, "no protocol"));
    }
    return {
      [this](op::write& x) { on_write(x); },
      [this](op::write_eof) { on_write_eof(); },
      [this](op::close) { on_close(); },
      [this](op::abort& x) { lose(std::move(x.reason)); },
      [this](op::pause_reading) {
        if (closing_)
          return;
        user_paused_ = true;
        state_->reading_paused = true;
        update_interest();
      },
      [this](op::resume_reading) {
        if (closing_)
          return;
        user_paused_ = false;
        state_->reading_paused = false;
        update_interest();
      },
      [this](op::set_write_buffer_limits x) {
        high_ = x.high;
        low_ = x.low;
        state_->high = x.high;
        state_->low = x.low;
        maybe_pause_protocol();
      },
      [this](op::set_protocol& x) {
        if (lost_)
          return;
        if (protocol_)
          demonitor(protocol_);
        protocol_ = std::move(x.protocol);
        set_shared_protocol(protocol_);
        if (protocol_)
          monitor(protocol_);
      },
      [this](op::consumed x) {
        if (x.n > 0)
          state_->unconsumed -= x.n;
        state_->credit_blocked = false;
        update_interest();
      },
      [this](op::get_write_buffer_size) -> uint64_t { return buffered_; },
      [this](stop_atom) { quit(); },
    };
  }

  void handle_io(uint32_t events) override {
    if (lost_)
      return;
    if (events & EPOLLERR) {
      if (auto err = socket_error(fd_)) {
        lose_errno(err, "socket");
        return;
      }
    }
    if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && wants_read())
      do_read();
    if (!lost_ && (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) && !wbuf_.empty())
      do_flush();
    if (lost_)
      return;
    if (events & EPOLLHUP)
      hup_ = true;
    update_interest();
  }

  caf::strong_actor_ptr io_owner() override {
    return caf::actor_cast<caf::strong_actor_ptr>(this);
  }

private:
  // -- state queries -------------------------------------------------------------

  bool wants_read() const noexcept {
    return started_ && !closing_ && !user_paused_ && !eof_seen_ && !lost_
           && state_->unconsumed.load() < state_->read_credit;
  }

  bool wants_write() const noexcept {
    return !lost_ && !wbuf_.empty();
  }

  void update_interest() {
    if (lost_)
      return;
    uint32_t mask = (wants_read() ? EPOLLIN : 0u)
                    | (wants_write() ? EPOLLOUT : 0u);
    if (mask == 0 && hup_) {
      // A hung-up socket reports EPOLLHUP whatever the mask; take it off
      // the loop until there is something to do with it.
      if (registered_) {
        mux().remove(fd_);
        registered_ = false;
      }
      return;
    }
    if (!registered_) {
      mux().add(fd_, mask, this);
      registered_ = true;
      mask_ = mask;
      return;
    }
    if (mask != mask_) {
      mux().modify(fd_, mask, this);
      mask_ = mask;
    }
  }

  void set_shared_protocol(const caf::actor& p) {
    std::lock_guard<std::mutex> guard{state_->protocol_mtx};
    state_->protocol = p;
  }

  // -- reading ---------------------------------------------------------------------

  void start() {
    if (lost_)
      return;
    started_ = true;
    update_interest();
  }

  void do_read() {
    auto credit = state_->read_credit - state_->unconsumed.load();
    auto want = std::min<size_t>(mux().scratch_size(), credit);
    auto n = ::recv(fd_, mux().scratch(), want, 0);
    if (n > 0) {
      // With no protocol (set_protocol to nothing) the bytes have nowhere
      // to go: drop them rather than charge credit no one gives back.
      if (!protocol_)
        return;
      bytes data(mux().scratch(), mux().scratch() + n);
      auto before = state_->unconsumed.fetch_add(static_cast<uint64_t>(n));
      if (before + static_cast<uint64_t>(n) >= state_->read_credit) {
        state_->credit_blocked = true;
        // The protocol may have consumed in between: check again so that a
        // wake-up cannot be lost.
        if (state_->unconsumed.load() < state_->read_credit)
          state_->credit_blocked = false;
      }
      send(protocol_, data_received{std::move(data)});
      return;
    }
    if (n == 0) {
      on_eof();
      return;
    }
    auto err = errno;
    if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR)
      return;
    lose_errno(err, "recv");
  }

  void on_eof() {
    eof_seen_ = true;
    update_interest();
    if (!protocol_) {
      on_close();
      return;
    }
    request(protocol_, caf::infinite, eof_received{})
      .then([this](bool keep_open) {
              if (!keep_open)
                on_close();
            },
            [this](caf::error&) { on_close(); });
  }

  // -- writing -----------------------------------------------------------------------

  void on_write(op::write& x) {
    if (x.counted)
      state_->in_flight -= x.data.size();
    if (x.data.empty())
      return;
    if (lost_ || closing_ || eof_requested_) {
      state_->count_dropped_write();
      return;
    }
    if (wbuf_.empty()) {
      // Nothing queued: try the kernel right away.
      auto n = ::send(fd_, x.data.data(), x.data.size(), MSG_NOSIGNAL);
      if (n < 0) {
        auto err = errno;
        if (err != EAGAIN && err != EWOULDBLOCK && err != EINTR) {
          lose_errno(err, "send");
          return;
        }
        n = 0;
      }
      if (static_cast<size_t>(n) == x.data.size())
        return;
      head_ = static_cast<size_t>(n);
    }
    buffered_ += x.data.size() - (wbuf_.empty() ? head_ : 0);
    wbuf_.push_back(std::move(x.data));
    state_->buffered = buffered_;
    maybe_pause_protocol();
    update_interest();
  }

  void do_flush() {
    iovec iov[max_iov];
    int count = 0;
    size_t offset = head_;
    for (auto i = wbuf_.begin(); i != wbuf_.end() && count < max_iov; ++i) {
      iov[count].iov_base = i->data() + offset;
      iov[count].iov_len = i->size() - offset;
      offset = 0;
      ++count;
    }
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = static_cast<size_t>(count);
    auto n = ::sendmsg(fd_, &msg, MSG_NOSIGNAL);
    if (n < 0) {
      auto err = errno;
      if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR)
        return;
      lose_errno(err, "send");
      return;
    }
    auto left = static_cast<size_t>(n);
    buffered_ -= left;
    while (left > 0) {
      auto avail = wbuf_.front().size() - head_;
      if (left < avail) {
        head_ += left;
        break;
      }
      left -= avail;
      wbuf_.pop_front();
      head_ = 0;
    }
    state_->buffered = buffered_;
    maybe_resume_protocol();
    if (wbuf_.empty())
      on_drained();
  }

  void on_drained() {
    if (eof_requested_ && !eof_sent_) {
      eof_sent_ = true;
      ::shutdown(fd_, SHUT_WR);
    }
    if (closing_)
      lose(caf::none);
  }

  void on_write_eof() {
    if (closing_ || eof_requested_ || lost_)
      return;
    eof_requested_ = true;
    state_->eof_written = true;
    if (wbuf_.empty())
      on_drained();
  }

  void maybe_pause_protocol() {
    if (!protocol_paused_ && buffered_ > high_ && protocol_) {
      protocol_paused_ = true;
      send(protocol_, pause_writing{});
    }
  }

  void maybe_resume_protocol() {
    if (protocol_paused_ && buffered_ <= low_) {
      protocol_paused_ = false;
      if (protocol_)
        send(protocol_, resume_writing{});
    }
  }

  // -- closing -----------------------------------------------------------------------

  void on_close() {
    if (closing_ || lost_)
      return;
    closing_ = true;
    state_->closing = true;
    update_interest();
    if (wbuf_.empty())
      lose(caf::none);
  }

  void lose_errno(int err, const char* call) {
    auto code = from_errno(err);
    if (code == errc::connection_reset || code == errc::broken_pipe)
      lose(make_error(code));
    else
      lose(error_from_errno(err, call));
  }

  // Ends the connection exactly once: closes the descriptor, tells the
  // protocol, drops it, and stops the actor.
  void lose(caf::error reason) {
    if (lost_)
      return;
    lost_ = true;
    closing_ = true;
    state_->closing = true;
    if (registered_) {
      mux().remove(fd_);
      registered_ = false;
    }
    ::close(fd_);
    fd_ = -1;
    wbuf_.clear();
    buffered_ = 0;
    state_->buffered = 0;
    mux().untrack(id());
    state_->lost = true;
    if (protocol_) {
      demonitor(protocol_);
      send(protocol_, connection_lost{std::move(reason)});
      protocol_ = nullptr;
    }
    // lose() may run inside handle_io, outside of a resume: stop through the
    // mailbox so CAF finalizes the actor properly.
    caf::anon_send(caf::actor_cast<caf::actor>(this), stop_atom::value);
  }

  int fd_;
  caf::actor protocol_;
  std::shared_ptr<transport_state> state_;
  caf::settings extra_;

  std::deque<bytes> wbuf_;
  size_t head_ = 0;
  size_t buffered_ = 0;
  size_t high_ = 64 * 1024;
  size_t low_ = 16 * 1024;

  uint32_t mask_ = 0;
  bool registered_ = false;
  bool hup_ = false;
  bool started_ = false;
  bool user_paused_ = false;
  bool eof_seen_ = false;
  bool eof_requested_ = false;
  bool eof_sent_ = false;
  bool protocol_paused_ = false;
  bool closing_ = false;
  bool lost_ = false;
};

} // namespace

transport spawn_stream_transport(multiplexer& mux, int fd, caf::actor protocol,
                                 stream_kind kind, uint64_t read_credit) {
  if (kind == stream_kind::tcp)
    set_nodelay(fd);
  caf::settings extra;
  auto local = local_address(fd);
  auto peer = peer_address(fd);
  extra["sockname"] = to_config_value(local);
  extra["peername"] = to_config_value(peer);
  extra["socket"] = static_cast<int64_t>(fd);
  switch (local.family()) {
    case AF_INET: extra["family"] = "inet"; break;
    case AF_INET6: extra["family"] = "inet6"; break;
    default: extra["family"] = "unix"; break;
  }
  auto state = std::make_shared<transport_state>(true, read_credit);
  state->warn = [&mux](const std::string& text) { mux.warn(text); };
  {
    std::lock_guard<std::mutex> guard{state->protocol_mtx};
    state->protocol = protocol;
  }
  auto self = mux.system().spawn<stream_transport>(mux, fd, protocol, state,
                                                   extra);
  return transport{std::move(self), std::move(state), std::move(extra)};
}

} // namespace tact::detail
