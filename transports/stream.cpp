// The stream-socket transport (TCP and Unix): asyncio's
// _SelectorSocketTransport as a light actor living on the multiplexer.

#include "tact/transports/detail/stream.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <caf/send.hpp>

#include "tact/runtime/detail/multiplexer.hpp"
#include "tact/runtime/errc.hpp"
#include "tact/runtime/messages.hpp"
#include "tact/transports/detail/byte_transport.hpp"
#include "tact/transports/detail/socket.hpp"

namespace tact::detail {

namespace {

using idle_atom = caf::atom_constant<caf::atom("idlecheck")>;

using clock_type = std::chrono::steady_clock;

class stream_transport final : public byte_transport {
public:
  stream_transport(caf::actor_config& cfg, multiplexer& mux, int fd,
                   caf::actor protocol, uint64_t read_credit,
                   std::function<void(transport)> on_made,
                   std::chrono::milliseconds idle_timeout,
                   const sock_address* peer)
    : byte_transport(cfg, mux, fd, std::move(protocol), read_credit,
                     transport_kind::stream, peer),
      idle_(idle_timeout), last_moved_(clock_type::now()) {
    on_made_ = std::move(on_made);
  }

  void handle_io(uint32_t events) override {
    if (lost_)
      return;
    if ((events & EPOLLERR) && !failed_) {
      // A reset (or another error) may come after bytes the kernel still
      // holds: those are read first (asyncio reads until recv fails).
      if (auto err = socket_error(fd_))
        fail(err, "socket");
      if (lost_)
        return;
    }
    if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && wants_read())
      do_read();
    if (!lost_ && !failed_ && (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
        && !drained())
      do_flush();
    if (lost_)
      return;
    if (events & EPOLLHUP)
      hup_ = true;
    update_interest();
  }

protected:
  ssize_t write_some(const char* data, size_t size) override {
    return moved(::send(fd_, data, size, MSG_NOSIGNAL));
  }

  ssize_t write_gather(const iovec* iov, size_t count) override {
    // sendmsg rather than writev: it takes MSG_NOSIGNAL.
    msghdr msg{};
    msg.msg_iov = const_cast<iovec*>(iov);
    msg.msg_iovlen = count;
    return moved(::sendmsg(fd_, &msg, MSG_NOSIGNAL));
  }

  ssize_t read_some(char* buf, size_t size) override {
    return moved(::recv(fd_, buf, size, 0));
  }

  ssize_t send_file(int file, off_t* offset, size_t count) override {
    return moved(byte_transport::send_file(file, offset, count));
  }

  bool on_transport_message(caf::mailbox_element& x,
                            caf::type_erased_tuple& msg) override {
    if (msg.match_elements<idle_atom>()) {
      check_idle();
      return true;
    }
    return byte_transport::on_transport_message(x, msg);
  }

  void on_write_error(int err) override {
    fail(err, "send");
  }

  bool refuses_writes() const noexcept override {
    return eof_requested_ || failed_;
  }

  void on_answer(uint64_t id, caf::type_erased_tuple& msg) override {
    if (!is_eof_answer(id))
      return;
    // Anything but `true` (an error, no handler) closes.
    if (!(msg.match_elements<bool>() && msg.get_as<bool>(0)))
      on_close();
  }

  bool wants_read() const noexcept override {
    return byte_transport::wants_read() && !eof_seen_;
  }

  void on_drained() override {
    if (eof_requested_ && !eof_sent_) {
      eof_sent_ = true;
      ::shutdown(fd_, SHUT_WR);
    }
    byte_transport::on_drained();
  }

  // No data_received after eof_received; the answer decides.
  void on_eof() override {
    // After a reset: the end of what the peer sent, and no eof_received.
    if (failed_) {
      lose(caf::none);
      return;
    }
    eof_seen_ = true;
    update_interest();
    if (!protocol_) {
      on_close();
      return;
    }
    request_eof();
  }

  void on_write_eof() override {
    if (closing_ || eof_requested_ || lost_)
      return;
    eof_requested_ = true;
    state_.eof_written = true;
    if (drained())
      on_drained();
  }

private:
  // -- idle timeout ----------------------------------------------------------

  // Notes when bytes moved either way (only with an idle timeout: the
  // clock is not read otherwise).
  ssize_t moved(ssize_t n) {
    if (n > 0 && idle_.count() > 0)
      last_moved_ = clock_type::now();
    return n;
  }

  // Ends the connection after `idle_` without a byte moved; else looks
  // again when that much will have passed since the last one. One check
  // is pending at a time, on the loop's timers, holding the transport
  // weakly (a transport that ended is freed at once).
  void check_idle() {
    if (lost_ || idle_.count() <= 0)
      return;
    auto quiet = clock_type::now() - last_moved_;
    if (quiet >= idle_) {
      lose(make_error(errc::timed_out,
                      "no byte either way for "
                        + std::to_string(idle_.count()) + " ms"));
      return;
    }
    auto left = std::chrono::ceil<std::chrono::milliseconds>(idle_ - quiet);
    caf::weak_actor_ptr self{ctrl()};
    mux().add_timer(left, [self] {
      if (auto strong = self.lock())
        caf::anon_send(caf::actor_cast<caf::actor>(strong), idle_atom::value);
    });
  }

  // The connection failed (`err` from `call`): nothing more goes out. If
  // the kernel still holds bytes the peer sent before, they are delivered
  // first (as the protocol reads them) and the loss comes after them.
  void fail(int err, const char* call) {
    auto reason = error_of_errno(err, call);
    if (failed_ || unread_bytes(fd_) == 0) {
      lose(std::move(reason));
      return;
    }
    failed_ = true;
    failure_ = std::move(reason);
    discard_buffer();
    // The descriptor reports the hang-up whatever the mask: off the loop
    // while the protocol does not read.
    hup_ = true;
    update_interest();
  }

  bool eof_seen_ = false;
  bool eof_requested_ = false;
  bool eof_sent_ = false;
  std::chrono::milliseconds idle_;
  clock_type::time_point last_moved_;
};

void set_keepalive(int fd, const stream_limits& limits) {
  int on = 1;
  int idle = static_cast<int>(limits.keepalive_idle.count());
  int interval = static_cast<int>(limits.keepalive_interval.count());
  int count = limits.keepalive_count;
  ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof(interval));
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof(count));
}

} // namespace

transport spawn_stream_transport(multiplexer& mux, int fd, caf::actor protocol,
                                 stream_kind kind, uint64_t read_credit,
                                 std::function<void(transport)> on_made,
                                 const stream_limits& limits,
                                 const sock_address* peer) {
  if (kind == stream_kind::tcp) {
    set_nodelay(fd);
    if (limits.keepalive)
      set_keepalive(fd, limits);
  }
  auto t = spawn_socket_transport<stream_transport>(mux, fd,
                                                    std::move(protocol),
                                                    read_credit,
                                                    std::move(on_made),
                                                    limits.idle_timeout, peer);
  // The first look at the clock; each one arms the next.
  if (limits.idle_timeout.count() > 0)
    caf::anon_send(t.actor(), idle_atom::value);
  return t;
}

} // namespace tact::detail
