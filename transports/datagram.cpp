// The datagram transport (UDP and Unix datagram sockets): asyncio's
// _SelectorDatagramTransport as a light actor living on the multiplexer.

#include "tact/runtime/detail/match.hpp"
#include "tact/transports/detail/datagram.hpp"

#include <cerrno>
#include <optional>

#include <sys/epoll.h>
#include <sys/socket.h>

#include "tact/runtime/errc.hpp"
#include "tact/runtime/messages.hpp"
#include "tact/transports/detail/fifo.hpp"
#include "tact/transports/detail/socket.hpp"
#include "tact/transports/detail/socket_transport.hpp"

namespace tact::detail {

namespace {

// Datagrams read per readiness before other descriptors get their turn.
constexpr int max_reads_per_event = 32;

// OS errors that mean "try again later" rather than "this datagram failed".
bool would_block(int err) {
  return err == EAGAIN || err == EWOULDBLOCK || err == EINTR;
}

class datagram_transport final : public socket_transport {
public:
  datagram_transport(caf::actor_config& cfg, multiplexer& mux, int fd,
                     caf::actor protocol, uint64_t read_credit)
    : socket_transport(cfg, mux, fd, std::move(protocol), read_credit,
                       transport_kind::datagram) {
    // nop
  }

  void handle_io(uint32_t events) override {
    if (lost_)
      return;
    note_events(events, wants_read());
    // A pending socket error (ICMP port unreachable on a connected UDP
    // socket, say) is the protocol's to hear about; the socket stays open.
    if (events & EPOLLERR) {
      if (auto err = socket_error(fd_))
        report(err, "socket");
    }
    if ((events & EPOLLIN) && wants_read())
      do_read();
    if (!lost_ && (events & EPOLLOUT) && !queue_.empty())
      do_flush();
    if (lost_)
      return;
    // Reported whatever the mask (someone shut the socket down): take it
    // off the loop while there is nothing to do, as streams do.
    if (events & EPOLLHUP)
      hup_ = true;
    update_interest();
  }

  void direct_write(bytes&) override {
    // write() on a datagram transport fails in the handle; never here.
  }

protected:
  bool on_transport_message(caf::mailbox_element&,
                            caf::type_erased_tuple& msg) override {
    if (!detail::is<op::sendto>(msg))
      return false;
    auto& x = msg.get_mutable_as<op::sendto>(0);
    if (x.counted)
      state_.in_flight -= x.data.size();
    on_sendto(x.data, x.addr);
    return true;
  }

  bool drained() const noexcept override {
    return queue_.empty();
  }

  void drop_buffer() override {
    queue_.clear();
  }

private:
  struct pending {
    bytes data;
    std::optional<sock_address> to;
  };

  // -- errors --------------------------------------------------------------------

  void report(int err, const char* call) {
    deliver(caf::make_message(error_received{error_from_errno(err, call)}));
  }

  // -- reading ---------------------------------------------------------------------

  void do_read() {
    for (int i = 0; i < max_reads_per_event && wants_read(); ++i) {
      sock_address from;
      from.length = sizeof(from.storage);
      auto n = ::recvfrom(fd_, mux().scratch(), mux().scratch_size(), 0,
                          reinterpret_cast<sockaddr*>(&from.storage),
                          &from.length);
      if (n < 0) {
        auto err = errno;
        if (!would_block(err))
          report(err, "recvfrom");
        return;
      }
      auto size = static_cast<size_t>(n);
      if (!protocol_ || !credit_left()) {
        if (++state_.dropped_datagrams == 1)
          mux().warn("datagrams are being dropped: no protocol, or the "
                     "protocol does not keep up (read credit exhausted)");
        continue;
      }
      // Empty datagrams cost something too, or a flood of them would
      // never exhaust the credit.
      charge_credit(size + datagram_overhead);
      deliver(caf::make_message(datagram_received{
        bytes(mux().scratch(), mux().scratch() + size), to_endpoint(from)}));
    }
  }

  // -- writing -----------------------------------------------------------------------

  void on_sendto(bytes& data, const endpoint& addr) {
    if (lost_ || closing_) {
      state_.count_dropped_write();
      return;
    }
    // On a connected endpoint the handle has checked that `addr` is the
    // peer's; send() then goes to it.
    std::optional<sock_address> to;
    if (!addr.empty() && state_.peer.family == 0) {
      auto sa = to_sock_address(addr);
      if (!sa) {
        deliver(caf::make_message(error_received{std::move(sa.error())}));
        return;
      }
      to = std::move(*sa);
    }
    if (drained()) {
      // Nothing queued: try the kernel right away.
      auto err = send_one(data, to);
      if (err == 0)
        return;
      if (!would_block(err)) {
        report(err, "sendto");
        return;
      }
      // An unconnected Unix socket gets no EPOLLOUT when the receiver's
      // queue drains (the kernel only tracks a connected peer), so a
      // queued datagram would spin the loop: drop it and say so.
      if (to && state_.local.family == 1) {
        deliver(caf::make_message(error_received{make_error(
          errc::out_of_resources,
          "the receiver's queue is full; datagram to "
            + to_string(to_endpoint(*to)) + " dropped")}));
        return;
      }
    }
    auto size = data.size();
    queue_.push_back(pending{std::move(data), std::move(to)});
    buffered_add(size);
    update_interest();
  }

  // Sends one datagram; returns 0 or the errno.
  int send_one(const bytes& data, const std::optional<sock_address>& to) {
    ssize_t n;
    if (to)
      n = ::sendto(fd_, data.data(), data.size(), MSG_NOSIGNAL, to->get(),
                   to->length);
    else
      n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
    return n < 0 ? errno : 0;
  }

  void do_flush() {
    while (!queue_.empty()) {
      auto& next = queue_.front();
      auto err = send_one(next.data, next.to);
      if (would_block(err))
        return;
      if (err != 0)
        report(err, "sendto");
      auto size = next.data.size();
      queue_.pop_front();
      buffered_sub(size);
      if (lost_)
        return;
    }
    on_drained();
  }

  fifo<pending> queue_;
};

} // namespace

transport spawn_datagram_transport(multiplexer& mux, int fd,
                                   caf::actor protocol, uint64_t read_credit) {
  return spawn_socket_transport<datagram_transport>(mux, fd,
                                                    std::move(protocol),
                                                    read_credit);
}

} // namespace tact::detail
