// The stream-socket transport (TCP and Unix): asyncio's
// _SelectorSocketTransport as a light actor living on the multiplexer.

#include "tact/transports/detail/stream.hpp"

#include <cerrno>
#include <vector>

#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <caf/actor_system.hpp>
#include <caf/sec.hpp>
#include <caf/system_messages.hpp>

#include "tact/runtime/detail/multiplexer.hpp"
#include "tact/runtime/detail/transport_state.hpp"
#include "tact/runtime/errc.hpp"
#include "tact/runtime/messages.hpp"
#include "tact/transports/detail/socket.hpp"

namespace tact::detail {

namespace {

// Chunks handed to one sendmsg.
constexpr int max_iov = 64;

// The write buffer: the chunks as they were written (no copy), consumed
// from the front. Unlike std::deque it allocates nothing while empty, which
// is what nearly every idle connection is.
class write_queue {
public:
  [[nodiscard]] bool empty() const noexcept { return first_ == chunks_.size(); }

  [[nodiscard]] size_t count() const noexcept { return chunks_.size() - first_; }

  [[nodiscard]] bytes& at(size_t i) noexcept { return chunks_[first_ + i]; }

  void push_back(bytes&& chunk) { chunks_.push_back(std::move(chunk)); }

  void pop_front() {
    chunks_[first_++] = bytes{};
    if (first_ == chunks_.size()) {
      first_ = 0;
      chunks_.clear();
      if (chunks_.capacity() > 64)
        chunks_.shrink_to_fit();
    } else if (first_ >= 64 && first_ * 2 >= chunks_.size()) {
      chunks_.erase(chunks_.begin(),
                    chunks_.begin() + static_cast<ptrdiff_t>(first_));
      first_ = 0;
    }
  }

  void clear() {
    chunks_ = {};
    first_ = 0;
  }

private:
  std::vector<bytes> chunks_;
  size_t first_ = 0;
};

class stream_transport final : public transport_core, public io_handler {
public:
  stream_transport(caf::actor_config& cfg, multiplexer& mux, int fd,
                   caf::actor protocol, uint64_t read_credit)
    : transport_core(cfg, mux, true, read_credit), fd_(fd),
      protocol_(std::move(protocol)) {
    // The extra-info snapshot, taken before anyone can see the state.
    auto local = local_address(fd);
    state_.fd = fd;
    state_.local = to_address_info(local);
    state_.peer = to_address_info(peer_address(fd));
    switch (local.family()) {
      case AF_INET: state_.family = "inet"; break;
      case AF_INET6: state_.family = "inet6"; break;
      default: state_.family = "unix"; break;
    }
    state_.protocol = protocol_;
  }

  ~stream_transport() override {
    if (fd_ >= 0)
      ::close(fd_);
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

  void direct_write(bytes& data) override {
    on_write(data);
  }

  // Killed by an exit message: the protocol still hears of it.
  void on_exit(caf::error reason) override {
    lose(reason ? std::move(reason) : make_error(errc::transport_down));
  }

protected:
  void on_start() override {
    mux().add(fd_, 0, this);
    registered_ = true;
    mux().track(id(), handle(), false);
    if (!protocol_) {
      lose(make_error(errc::protocol_down, "no protocol"));
      return;
    }
    watch_protocol(false);
    // Read nothing before the protocol has seen connection_made: whatever
    // it asks for while handling it (pause_reading) comes first.
    made_request_ = request_to(
      protocol_, caf::make_message(connection_made{transport{handle(), &state_}}));
  }

  void on_message(caf::mailbox_element& x) override {
    auto& msg = x.content();
    if (auto id = answer_to(x)) {
      on_answer(id, msg);
    } else if (msg.match_elements<op::write>()) {
      auto& w = msg.get_mutable_as<op::write>(0);
      if (w.counted)
        state_.in_flight -= w.data.size();
      on_write(w.data);
    } else if (msg.match_elements<op::consumed>()) {
      if (auto n = msg.get_as<op::consumed>(0).n; n > 0)
        state_.unconsumed -= n;
      state_.credit_blocked = false;
      update_interest();
    } else if (msg.match_elements<op::write_eof>()) {
      on_write_eof();
    } else if (msg.match_elements<op::close>()) {
      on_close();
    } else if (msg.match_elements<op::abort>()) {
      lose(std::move(msg.get_mutable_as<op::abort>(0).reason));
    } else if (msg.match_elements<op::pause_reading>()) {
      set_paused(true);
    } else if (msg.match_elements<op::resume_reading>()) {
      set_paused(false);
    } else if (msg.match_elements<op::set_write_buffer_limits>()) {
      // A local handle stored the limits already; storing them again here
      // could undo a later call that the handle made meanwhile.
      if (auto& lim = msg.get_as<op::set_write_buffer_limits>(0); !lim.applied) {
        state_.high = lim.high;
        state_.low = lim.low;
      }
      maybe_pause_protocol();
    } else if (msg.match_elements<op::set_protocol>()) {
      on_set_protocol(std::move(msg.get_mutable_as<op::set_protocol>(0).protocol));
    } else if (msg.match_elements<op::get_write_buffer_size>()) {
      reply(x, caf::make_message(static_cast<uint64_t>(buffered_)));
    } else if (msg.match_elements<caf::down_msg>()) {
      auto& down = msg.get_as<caf::down_msg>(0);
      if (protocol_ && down.source == protocol_.address()) {
        protocol_ = nullptr;
        fast_ = nullptr;
        lose(make_error(errc::protocol_down));
      }
    } else if (x.mid.is_request()) {
      reply(x, caf::make_message(caf::make_error(caf::sec::unexpected_message)));
    }
  }

private:
  // -- state queries -------------------------------------------------------------

  bool wants_read() const noexcept {
    return read_started_ && !closing_ && !user_paused_ && !eof_seen_ && !lost_
           && state_.unconsumed.load() < state_.read_credit;
  }

  void update_interest() {
    if (lost_)
      return;
    uint32_t mask = (wants_read() ? EPOLLIN : 0u)
                    | (!wbuf_.empty() ? EPOLLOUT : 0u);
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

  // -- the protocol --------------------------------------------------------------

  // The class adapter made for this connection needs no monitor: it ends
  // only through connection_lost or by aborting this transport (see
  // adapter.cpp). Behaviours, and any protocol installed by set_protocol
  // (an adapter there has no handle to abort with), are monitored.
  void watch_protocol(bool installed) {
    fast_ = dynamic_cast<protocol_core*>(as_light(protocol_, mux()));
    monitored_ = installed || fast_ == nullptr;
    if (monitored_)
      monitor(protocol_);
  }

  void unwatch_protocol() {
    if (protocol_ && monitored_)
      demonitor(protocol_);
    monitored_ = false;
    fast_ = nullptr;
  }

  void on_set_protocol(caf::actor p) {
    if (lost_)
      return;
    unwatch_protocol();
    protocol_ = std::move(p);
    state_.set_protocol(protocol_);
    if (protocol_)
      watch_protocol(true);
  }

  void on_answer(uint64_t id, caf::type_erased_tuple& msg) {
    if (id == made_request_) {
      // An empty answer, or a behaviour without a handler for
      // connection_made: read. Anything else means the protocol is gone.
      if (msg.empty()
          || (msg.match_elements<caf::error>()
              && msg.get_as<caf::error>(0) == caf::sec::unexpected_message))
        start_reading();
      else
        lose(make_error(errc::protocol_down));
    } else if (id == eof_request_) {
      bool keep_open = msg.match_elements<bool>() && msg.get_as<bool>(0);
      if (!keep_open)
        on_close();
    }
  }

  void set_paused(bool paused) {
    if (closing_)
      return;
    user_paused_ = paused;
    state_.reading_paused = paused;
    update_interest();
  }

  // -- reading ---------------------------------------------------------------------

  void start_reading() {
    if (lost_)
      return;
    read_started_ = true;
    update_interest();
  }

  void do_read() {
    auto credit = state_.read_credit - state_.unconsumed.load();
    auto want = std::min<size_t>(mux().scratch_size(), credit);
    auto n = ::recv(fd_, mux().scratch(), want, 0);
    if (n > 0) {
      // With no protocol (set_protocol to nothing) the bytes have nowhere
      // to go: drop them rather than charge credit no one gives back.
      if (!protocol_)
        return;
      bytes data(mux().scratch(), mux().scratch() + n);
      auto before = state_.unconsumed.fetch_add(static_cast<uint64_t>(n));
      if (before + static_cast<uint64_t>(n) >= state_.read_credit) {
        state_.credit_blocked = true;
        // The protocol may have consumed in between: check again so that a
        // wake-up cannot be lost.
        if (state_.unconsumed.load() < state_.read_credit)
          state_.credit_blocked = false;
      }
      // A class protocol on this loop with nothing queued takes the bytes
      // by a direct call: same order as the mailbox, no message. It may
      // write back from inside (direct_write): nothing below depends on
      // state that call changes.
      if (fast_ && fast_->run_now([&] { fast_->direct_data(data, *this); }))
        return;
      send_to(protocol_, caf::make_message(data_received{std::move(data)}));
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
    eof_request_ = request_to(protocol_, caf::make_message(eof_received{}));
  }

  // -- writing -----------------------------------------------------------------------

  void on_write(bytes& data) {
    if (data.empty())
      return;
    if (lost_ || closing_ || eof_requested_) {
      state_.count_dropped_write();
      return;
    }
    if (wbuf_.empty()) {
      // Nothing queued: try the kernel right away.
      auto n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n < 0) {
        auto err = errno;
        if (err != EAGAIN && err != EWOULDBLOCK && err != EINTR) {
          lose_errno(err, "send");
          return;
        }
        n = 0;
      }
      if (static_cast<size_t>(n) == data.size())
        return;
      head_ = static_cast<size_t>(n);
      buffered_ += data.size() - head_;
    } else {
      buffered_ += data.size();
    }
    wbuf_.push_back(std::move(data));
    state_.buffered = buffered_;
    maybe_pause_protocol();
    update_interest();
  }

  void do_flush() {
    iovec iov[max_iov];
    auto count = std::min<size_t>(wbuf_.count(), max_iov);
    size_t offset = head_;
    for (size_t i = 0; i < count; ++i) {
      auto& chunk = wbuf_.at(i);
      iov[i].iov_base = chunk.data() + offset;
      iov[i].iov_len = chunk.size() - offset;
      offset = 0;
    }
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = count;
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
      auto avail = wbuf_.at(0).size() - head_;
      if (left < avail) {
        head_ += left;
        break;
      }
      left -= avail;
      wbuf_.pop_front();
      head_ = 0;
    }
    state_.buffered = buffered_;
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
    state_.eof_written = true;
    if (wbuf_.empty())
      on_drained();
  }

  void maybe_pause_protocol() {
    if (!protocol_paused_ && buffered_ > state_.high.load(std::memory_order_relaxed) && protocol_) {
      protocol_paused_ = true;
      send_to(protocol_, caf::make_message(pause_writing{}));
    }
  }

  void maybe_resume_protocol() {
    if (protocol_paused_ && buffered_ <= state_.low.load(std::memory_order_relaxed)) {
      protocol_paused_ = false;
      if (protocol_)
        send_to(protocol_, caf::make_message(resume_writing{}));
    }
  }

  // -- closing -----------------------------------------------------------------------

  void on_close() {
    if (closing_ || lost_)
      return;
    closing_ = true;
    state_.closing = true;
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
    state_.closing = true;
    if (registered_) {
      mux().remove(fd_);
      registered_ = false;
    }
    ::close(fd_);
    fd_ = -1;
    wbuf_.clear();
    buffered_ = 0;
    state_.buffered = 0;
    mux().untrack(id());
    state_.lost = true;
    if (protocol_) {
      unwatch_protocol();
      send_to(protocol_, caf::make_message(connection_lost{std::move(reason)}));
      protocol_ = nullptr;
    }
    quit();
  }

  int fd_;
  caf::actor protocol_;
  // protocol_ as a class adapter on this loop, for direct delivery.
  protocol_core* fast_ = nullptr;

  write_queue wbuf_;
  size_t head_ = 0;
  size_t buffered_ = 0;
  uint64_t made_request_ = 0;
  uint64_t eof_request_ = 0;

  uint32_t mask_ = 0;
  bool monitored_ = false;
  bool registered_ = false;
  bool hup_ = false;
  bool read_started_ = false;
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
  auto hdl = spawn_light<stream_transport>(mux, fd, std::move(protocol),
                                           read_credit);
  auto* self = static_cast<stream_transport*>(
    caf::actor_cast<caf::abstract_actor*>(hdl));
  return transport{std::move(hdl), &self->state()};
}

} // namespace tact::detail
