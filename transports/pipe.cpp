// The pipe transports: asyncio's _UnixReadPipeTransport and
// _UnixWritePipeTransport as light actors living on the multiplexer.

#include "tact/transports/detail/pipe.hpp"

#include <cerrno>

#include <sys/epoll.h>
#include <sys/uio.h>
#include <unistd.h>

#include "tact/runtime/errc.hpp"
#include "tact/runtime/messages.hpp"
#include "tact/transports/detail/fifo.hpp"
#include "tact/transports/detail/socket_transport.hpp"

namespace tact::detail {

namespace {

// Chunks handed to one writev.
constexpr size_t max_iov = 64;

bool would_block(int err) {
  return err == EAGAIN || err == EWOULDBLOCK || err == EINTR;
}

// The read end: data_received until EOF, then eof_received and
// connection_lost(none), whatever eof_received answers.
class read_pipe_transport final : public socket_transport {
public:
  read_pipe_transport(caf::actor_config& cfg, multiplexer& mux, int fd,
                      caf::actor protocol, uint64_t read_credit)
    : socket_transport(cfg, mux, fd, std::move(protocol), read_credit,
                       transport_kind::read_pipe) {
    // nop
  }

  void handle_io(uint32_t events) override {
    if (lost_)
      return;
    // The writer going away shows as EPOLLHUP; read what is left first.
    if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && wants_read())
      do_read();
    if (lost_)
      return;
    if (events & EPOLLHUP)
      hup_ = true;
    update_interest();
  }

  void direct_write(bytes&) override {
    // write() on a read pipe fails in the handle; never here.
  }

protected:
  // Nothing beyond the common commands (asyncio's read pipe has no
  // abort(); here abort() ends it like close(), the same for a transport
  // without a buffer).
  bool on_transport_message(caf::mailbox_element&,
                            caf::type_erased_tuple&) override {
    return false;
  }

  bool drained() const noexcept override {
    return true;
  }

  void drop_buffer() override {
    // nop
  }

private:
  void do_read() {
    auto credit = state_.read_credit - state_.unconsumed.load();
    auto want = std::min<size_t>(mux().scratch_size(), credit);
    auto n = ::read(fd_, mux().scratch(), want);
    if (n > 0) {
      if (!protocol_)
        return;
      bytes data(mux().scratch(), mux().scratch() + n);
      charge_credit(static_cast<size_t>(n));
      if (fast_ && fast_->run_now([&] { fast_->direct_data(data, *this); }))
        return;
      deliver(caf::make_message(data_received{std::move(data)}));
      return;
    }
    if (n == 0) {
      // The answer does not matter: a read pipe ends at EOF.
      if (protocol_)
        request_to(protocol_, caf::make_message(eof_received{}));
      lose(caf::none);
      return;
    }
    auto err = errno;
    if (!would_block(err))
      lose_errno(err, "read");
  }
};

// The write end: close() is write_eof(): drain, then connection_lost. The
// reader going away ends it: broken_pipe if data was still buffered.
class write_pipe_transport final : public socket_transport {
public:
  write_pipe_transport(caf::actor_config& cfg, multiplexer& mux, int fd,
                       caf::actor protocol, uint64_t read_credit)
    : socket_transport(cfg, mux, fd, std::move(protocol), read_credit,
                       transport_kind::write_pipe) {
    resume_when_empty_ = true;
  }

  void handle_io(uint32_t events) override {
    if (lost_)
      return;
    // A write end is never readable: EPOLLERR or EPOLLHUP means the reader
    // has gone (reported whatever the mask).
    if (events & (EPOLLERR | EPOLLHUP)) {
      lose(wbuf_.empty() ? caf::error{} : make_error(errc::broken_pipe));
      return;
    }
    if ((events & EPOLLOUT) && !wbuf_.empty())
      do_flush();
    if (!lost_)
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
      // asyncio: write_eof() is close().
      on_close();
      return true;
    }
    return false;
  }

  bool drained() const noexcept override {
    return wbuf_.empty();
  }

  void drop_buffer() override {
    wbuf_.clear();
  }

  // Nothing to read from a write end.
  bool wants_read() const noexcept override {
    return false;
  }

private:
  void on_write(bytes& data) {
    if (data.empty())
      return;
    if (lost_ || closing_) {
      state_.count_dropped_write();
      return;
    }
    size_t sent = 0;
    if (wbuf_.empty()) {
      auto n = ::write(fd_, data.data(), data.size());
      if (n < 0) {
        auto err = errno;
        if (!would_block(err)) {
          fail_write(err);
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
    auto n = ::writev(fd_, iov, static_cast<int>(count));
    if (n < 0) {
      auto err = errno;
      if (!would_block(err))
        fail_write(err);
      return;
    }
    auto left = static_cast<size_t>(n);
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
    buffered_sub(static_cast<size_t>(n));
    if (wbuf_.empty())
      on_drained();
  }

  void fail_write(int err) {
    if (err == EPIPE)
      consume_sigpipe();
    lose_errno(err, "write");
  }

  fifo<bytes> wbuf_;
  size_t head_ = 0;
};

} // namespace

transport spawn_read_pipe_transport(multiplexer& mux, int fd,
                                    caf::actor protocol, uint64_t read_credit) {
  return spawn_socket_transport<read_pipe_transport>(mux, fd,
                                                     std::move(protocol),
                                                     read_credit);
}

transport spawn_write_pipe_transport(multiplexer& mux, int fd,
                                     caf::actor protocol) {
  return spawn_socket_transport<write_pipe_transport>(mux, fd,
                                                      std::move(protocol), 0);
}

} // namespace tact::detail
