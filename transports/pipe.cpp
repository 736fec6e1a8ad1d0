// The pipe transports: asyncio's _UnixReadPipeTransport and
// _UnixWritePipeTransport as light actors living on the multiplexer.

#include "tact/transports/detail/pipe.hpp"

#include <cerrno>

#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tact/runtime/errc.hpp"
#include "tact/runtime/messages.hpp"
#include "tact/transports/detail/byte_transport.hpp"
#include "tact/transports/detail/socket.hpp"

namespace tact::detail {

namespace {

// The read end: data_received until EOF, then eof_received and
// connection_lost(none), whatever eof_received answers. asyncio's read pipe
// has no abort(); here abort() ends it like close(), the same for a
// transport without a buffer.
class read_pipe_transport final : public byte_transport {
public:
  read_pipe_transport(caf::actor_config& cfg, multiplexer& mux, int fd,
                      caf::actor protocol, uint64_t read_credit,
                      std::function<void(transport)> on_made = {})
    : byte_transport(cfg, mux, fd, std::move(protocol), read_credit,
                     transport_kind::read_pipe) {
    on_made_ = std::move(on_made);
  }

  void handle_io(uint32_t events) override {
    handle_ready(*this, events);
  }

  // What this kind does with a readiness report (see handle_ready).
  void on_ready(uint32_t events, bool reading) {
    // The writer going away shows as EPOLLHUP; read what is left first.
    if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && reading)
      do_read();
  }

protected:
  void on_eof() override {
    // The answer does not matter: a read pipe ends at EOF.
    request_eof();
    lose(caf::none);
  }

  // write() and write_eof() fail in the handle; nothing gets here.
  void on_write_eof() override {
    // nop
  }

  void on_write_error(int err) override {
    lose_errno(err, "write");
  }
};

// The write end: close() is write_eof(): drain, then connection_lost. The
// reader going away ends it: broken_pipe if data was still buffered.
class write_pipe_transport final : public byte_transport {
public:
  write_pipe_transport(caf::actor_config& cfg, multiplexer& mux, int fd,
                       caf::actor protocol, uint64_t read_credit,
                       std::function<void(transport)> on_made = {})
    : byte_transport(cfg, mux, fd, std::move(protocol), read_credit,
                     transport_kind::write_pipe) {
    on_made_ = std::move(on_made);
    resume_when_empty_ = true;
    // Nothing to read from a write end.
    read_ended_ = true;
  }

  void handle_io(uint32_t events) override {
    handle_ready(*this, events);
  }

  // What this kind does with a readiness report (see handle_ready).
  void on_ready(uint32_t events, bool) {
    // A write end is never readable: EPOLLERR or EPOLLHUP means the reader
    // has gone (reported whatever the mask).
    if (events & (EPOLLERR | EPOLLHUP)) {
      lose(drained() ? caf::error{} : make_error(errc::broken_pipe));
      return;
    }
    if ((events & EPOLLOUT) && !drained())
      do_flush();
  }

protected:
  // Pipes have no MSG_NOSIGNAL: the loop thread blocks SIGPIPE; take the
  // pending one off.
  void on_write_error(int err) override {
    if (err == EPIPE)
      consume_sigpipe();
    lose_errno(err, "write");
  }

  // asyncio: write_eof() is close().
  void on_write_eof() override {
    on_close();
  }

  void on_eof() override {
    // nop
  }
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

// -- loop operations: connect_read_pipe, connect_write_pipe -------------------

namespace {

// asyncio's check: pipes, sockets and character devices only.
caf::error check_pipe_fd(int fd) {
  struct stat st{};
  if (::fstat(fd, &st) != 0)
    return error_from_errno(errno, "fstat of descriptor " + std::to_string(fd));
  if (!S_ISFIFO(st.st_mode) && !S_ISSOCK(st.st_mode) && !S_ISCHR(st.st_mode))
    return make_error(errc::invalid_argument,
                      "descriptor " + std::to_string(fd)
                        + " is not a pipe, socket or character device");
  // Some character devices (/dev/null, /dev/zero) cannot be watched by
  // epoll: say so now rather than after connection_made.
  int probe = ::epoll_create1(EPOLL_CLOEXEC);
  if (probe < 0)
    return error_from_errno(errno, "epoll_create1");
  epoll_event ev{};
  ev.events = EPOLLIN;
  auto rc = ::epoll_ctl(probe, EPOLL_CTL_ADD, fd, &ev);
  auto err = errno;
  ::close(probe);
  if (rc != 0)
    return error_from_errno(err, "descriptor " + std::to_string(fd)
                                   + " cannot be watched by epoll");
  if (!detail::set_nonblocking(fd, true))
    return error_from_errno(errno, "O_NONBLOCK on descriptor "
                                     + std::to_string(fd));
  return caf::none;
}

} // namespace

caf::expected<transport> open_read_pipe(multiplexer& mux, uint64_t read_credit,
                                        const protocol_factory& factory,
                                        int fd) {
  if (auto err = check_pipe_fd(fd))
    return err;
  return start_and_wait_made(mux, [&](std::function<void(transport)> made) {
    return spawn_socket_transport<read_pipe_transport>(
      mux, fd, factory(mux), read_credit, std::move(made));
  });
}

caf::expected<transport> open_write_pipe(multiplexer& mux,
                                         const protocol_factory& factory,
                                         int fd) {
  if (auto err = check_pipe_fd(fd))
    return err;
  return start_and_wait_made(mux, [&](std::function<void(transport)> made) {
    return spawn_socket_transport<write_pipe_transport>(
      mux, fd, factory(mux), 0, std::move(made));
  });
}

} // namespace tact::detail
