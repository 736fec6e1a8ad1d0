// The stream-socket transport (TCP and Unix): asyncio's
// _SelectorSocketTransport as a light actor living on the multiplexer.

#include "tact/runtime/detail/match.hpp"
#include "tact/transports/detail/stream.hpp"

#include <future>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <caf/send.hpp>

#include "tact/runtime/detail/multiplexer.hpp"
#include "tact/runtime/errc.hpp"
#include "tact/runtime/messages.hpp"
#include "tact/actors/protocol.hpp"
#include "tact/transports/server.hpp"
#include "tact/transports/detail/byte_transport.hpp"
#include "tact/transports/detail/socket.hpp"

namespace tact::detail {

namespace {

class stream_transport final : public byte_transport {
public:
  stream_transport(caf::actor_config& cfg, multiplexer& mux, int fd,
                   caf::actor protocol, uint64_t read_credit,
                   std::function<void(transport)> on_made,
                   std::chrono::milliseconds idle_timeout,
                   const socket_origin* origin,
                   std::function<void(const caf::actor_addr&)> on_lost)
    : byte_transport(cfg, mux, fd, std::move(protocol), read_credit,
                     transport_kind::stream, origin) {
    on_made_ = std::move(on_made);
    on_lost_ = std::move(on_lost);
    set_idle_timeout(idle_timeout);
  }

  void handle_io(uint32_t events) override {
    handle_ready(*this, events);
  }

  // What this kind does with a readiness report (see handle_ready).
  void on_ready(uint32_t events, bool reading) {
    if ((events & EPOLLERR) && !failed_) {
      // A reset (or another error) may come after bytes the kernel still
      // holds: those are read first (asyncio reads until recv fails).
      if (auto err = socket_error(fd_))
        fail(err, "socket");
      if (lost_)
        return;
      reading = wants_read();
    }
    if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && reading)
      do_read();
    if (!lost_ && !failed_ && (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
        && !drained())
      do_flush();
  }

protected:
  void on_write_error(int err) override {
    fail(err, "send");
  }

  void on_answer(uint64_t id, caf::type_erased_tuple& msg) override {
    if (!is_eof_answer(id))
      return;
    // Anything but `true` (an error, no handler) closes.
    if (!(detail::is<bool>(msg) && msg.get_as<bool>(0)))
      on_close();
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
    read_ended_ = true;
    update_interest();
    if (!protocol_) {
      on_close();
      return;
    }
    bool keep_open = false;
    if (ask_eof(keep_open) && !keep_open)
      on_close();
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

  bool eof_sent_ = false;
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

transport spawn_stream_transport(
  multiplexer& mux, int fd, caf::actor protocol, stream_kind kind,
  uint64_t read_credit, std::function<void(transport)> on_made,
  const stream_limits& limits, const socket_origin* origin,
  std::function<void(const caf::actor_addr&)> on_lost) {
  if (kind == stream_kind::tcp) {
    set_nodelay(fd);
    if (limits.keepalive)
      set_keepalive(fd, limits);
  }
  return spawn_socket_transport<stream_transport>(mux, fd, std::move(protocol),
                                                 read_credit,
                                                 std::move(on_made),
                                                 limits.idle_timeout, origin,
                                                 std::move(on_lost));
}

// -- loop operations: connect_accepted_socket ------------------------------

// The per-connection limits of `opts`, checked.
caf::expected<detail::stream_limits>
stream_limits_of(const connection_options& opts) {
  detail::stream_limits limits;
  // A day at most: the transport's clock arithmetic stays in range.
  if (opts.idle_timeout.count() < 0 || opts.idle_timeout > std::chrono::hours{24})
    return make_error(errc::invalid_argument,
                      "idle_timeout must be from 0 to 24 h");
  limits.idle_timeout = opts.idle_timeout;
  if (opts.keepalive) {
    auto& k = *opts.keepalive;
    if (k.idle.count() < 1 || k.interval.count() < 1 || k.count < 1
        || k.idle.count() > 32767 || k.interval.count() > 32767
        || k.count > 127)
      return make_error(errc::invalid_argument,
                        "keepalive: idle and interval must be 1 to 32767 s, "
                        "count 1 to 127");
    limits.keepalive = true;
    limits.keepalive_idle = k.idle;
    limits.keepalive_interval = k.interval;
    limits.keepalive_count = k.count;
  }
  return limits;
}


namespace {

// Starts the transport of a connected stream socket and, off the loop,
// returns once its protocol has handled connection_made (asyncio's
// create_connection awaits that too): a handle the protocol stored there
// is set when the caller goes on.
transport start_stream(detail::multiplexer& mux, int fd, caf::actor protocol,
                       detail::stream_kind kind, uint64_t read_credit,
                       const detail::stream_limits& limits = {}) {
  return detail::start_and_wait_made(
    mux, [&](std::function<void(transport)> on_made) {
      return detail::spawn_stream_transport(mux, fd, std::move(protocol), kind,
                                            read_credit, std::move(on_made),
                                            limits);
    });
}

} // namespace

caf::expected<transport> wrap_accepted_socket(multiplexer& mux,
                                              uint64_t read_credit,
                                              const protocol_factory& factory,
                                              int fd) {
  auto domain = socket_domain(fd);
  if (domain < 0)
    return make_error(errc::bad_file_descriptor,
                      "descriptor " + std::to_string(fd) + " is not a socket");
  if (socket_type(fd) != SOCK_STREAM)
    return make_error(errc::invalid_argument,
                      "descriptor " + std::to_string(fd)
                        + " is not a stream socket");
  set_nonblocking(fd, true);
  auto kind = domain == AF_UNIX ? stream_kind::unix_socket : stream_kind::tcp;
  return start_stream(mux, fd, factory(mux), kind, read_credit);
}

} // namespace tact::detail
