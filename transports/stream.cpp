// The stream-socket transport (TCP and Unix): asyncio's
// _SelectorSocketTransport as a light actor living on the multiplexer.

#include "tact/transports/detail/stream.hpp"

#include <cerrno>
#include <vector>

#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "tact/runtime/errc.hpp"
#include "tact/runtime/messages.hpp"
#include "tact/transports/detail/fifo.hpp"
#include "tact/transports/detail/socket.hpp"
#include "tact/transports/detail/socket_transport.hpp"

namespace tact::detail {

namespace {

// Chunks handed to one sendmsg.
constexpr size_t max_iov = 64;

class stream_transport final : public socket_transport {
public:
  stream_transport(caf::actor_config& cfg, multiplexer& mux, int fd,
                   caf::actor protocol, uint64_t read_credit)
    : socket_transport(cfg, mux, fd, std::move(protocol), read_credit,
                       transport_kind::stream) {
    // nop
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

  void direct_write(bytes& data) override {
    on_write(data);
  }

protected:
  bool on_transport_message(caf::mailbox_element&,
                            caf::type_erased_tuple& msg) override {
    if (msg.match_elements<op::write>()) {
      auto& w = msg.get_mutable_as<op::write>(0);
      if (w.counted)
        state_.in_flight -= w.data.size();
      on_write(w.data);
      return true;
    }
    if (msg.match_elements<op::write_eof>()) {
      on_write_eof();
      return true;
    }
    return false;
  }

  void on_answer(uint64_t id, caf::type_erased_tuple& msg) override {
    if (id != eof_request_)
      return;
    // Anything but `true` (an error, no handler) closes.
    if (!(msg.match_elements<bool>() && msg.get_as<bool>(0)))
      on_close();
  }

  bool drained() const noexcept override {
    return wbuf_.empty();
  }

  void drop_buffer() override {
    wbuf_.clear();
  }

  bool wants_read() const noexcept override {
    return socket_transport::wants_read() && !eof_seen_;
  }

  void on_drained() override {
    if (eof_requested_ && !eof_sent_) {
      eof_sent_ = true;
      ::shutdown(fd_, SHUT_WR);
    }
    socket_transport::on_drained();
  }

private:
  // -- reading ---------------------------------------------------------------------

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
      charge_credit(static_cast<size_t>(n));
      // A class protocol on this loop with nothing queued takes the bytes
      // by a direct call: same order as the mailbox, no message. It may
      // write back from inside (direct_write): nothing below depends on
      // state that call changes.
      if (fast_ && fast_->run_now([&] { fast_->direct_data(data, *this); }))
        return;
      deliver(caf::make_message(data_received{std::move(data)}));
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
    size_t sent = 0;
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
      sent = static_cast<size_t>(n);
      if (sent == data.size())
        return;
      head_ = sent;
    }
    auto rest = data.size() - sent;
    wbuf_.push_back(std::move(data));
    buffered_add(rest);
    update_interest();
  }

  void do_flush() {
    iovec iov[max_iov];
    auto count = std::min(wbuf_.size(), max_iov);
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
    buffered_sub(left);
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
    if (wbuf_.empty())
      on_drained();
  }

  void on_write_eof() {
    if (closing_ || eof_requested_ || lost_)
      return;
    eof_requested_ = true;
    state_.eof_written = true;
    if (wbuf_.empty())
      on_drained();
  }

  // The chunks as they were written (no copy).
  fifo<bytes> wbuf_;
  size_t head_ = 0;
  uint64_t eof_request_ = 0;
  bool eof_seen_ = false;
  bool eof_requested_ = false;
  bool eof_sent_ = false;
};

} // namespace

transport spawn_stream_transport(multiplexer& mux, int fd, caf::actor protocol,
                                 stream_kind kind, uint64_t read_credit) {
  if (kind == stream_kind::tcp)
    set_nodelay(fd);
  return spawn_socket_transport<stream_transport>(mux, fd, std::move(protocol),
                                                  read_credit);
}

} // namespace tact::detail
