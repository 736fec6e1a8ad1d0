#pragma once

// A socket_transport that carries a byte stream (a TCP or Unix connection,
// either end of a pipe): the write buffer, writes that try the kernel at
// once and queue the rest, gather writes on readiness, reads into the
// loop's scratch buffer handed to the protocol, and the idle timeout.
// Subclasses say what EOF and a failed write mean. The syscalls are plain
// calls chosen by the kind (a socket takes MSG_NOSIGNAL, a pipe cannot):
// they run once or twice per request, where a virtual call each costs
// more than the choice.

#include <chrono>

#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#include "tact/runtime/messages.hpp"
#include "tact/transports/detail/fifo.hpp"
#include "tact/transports/detail/socket_transport.hpp"

namespace tact::detail {

class byte_transport : public socket_transport {
public:
  using socket_transport::socket_transport;

  void direct_write(bytes& data) override;

  void direct_write_eof() override {
    on_write_eof();
  }

protected:
  using clock_type = std::chrono::steady_clock;

  void on_start() override;

  bool on_transport_message(caf::mailbox_element& x,
                            caf::type_erased_tuple& msg) override;

  bool drained() const noexcept final {
    return wbuf_.empty() && files_.empty();
  }

  void drop_buffer() override;

  // -- hooks ---------------------------------------------------------------------

  /// The other end sent EOF.
  virtual void on_eof() = 0;

  /// `write_eof()` was called.
  virtual void on_write_eof() = 0;

  /// A write failed with `err` (not EAGAIN).
  virtual void on_write_error(int err) = 0;

  // -- for subclasses ----------------------------------------------------------------

  /// Reads once and hands the bytes to the protocol.
  void do_read();

  /// Sends what the buffer holds, as much as the kernel takes.
  void do_flush();

  /// Ends the connection once no byte has moved either way for `idle`
  /// (0: never). Call before the actor starts.
  void set_idle_timeout(std::chrono::milliseconds idle) noexcept {
    idle_ = idle;
    last_moved_ = clock_type::now();
  }

  fifo<bytes> wbuf_;
  // write_eof() was asked for: the writes after it are dropped.
  bool eof_requested_ = false;

private:
  [[nodiscard]] bool is_socket() const noexcept {
    return state_.kind == transport_kind::stream;
  }

  // One write, read or gather write: the count, or -1 with errno. A
  // socket is written with MSG_NOSIGNAL; a pipe has no such flag (the
  // loop thread blocks SIGPIPE, and a failed write takes it off).
  ssize_t write_some(const char* data, size_t size) {
    return moved(is_socket() ? ::send(fd_, data, size, MSG_NOSIGNAL)
                             : ::write(fd_, data, size));
  }

  ssize_t read_some(char* buf, size_t size) {
    return moved(::read(fd_, buf, size));
  }

  ssize_t write_gather(const iovec* iov, size_t count);

  // One sendfile(2) of up to `count` bytes of `file` from `*offset`
  // (advanced).
  ssize_t send_file(int file, off_t* offset, size_t count);

  /// Whether new writes are dropped (besides closing and lost).
  [[nodiscard]] bool refuses_writes() const noexcept {
    return eof_requested_ || failed_;
  }

  // -- idle timeout ----------------------------------------------------------

  // Notes when bytes moved either way (only with an idle timeout: the
  // clock is not read otherwise).
  ssize_t moved(ssize_t n) {
    if (n > 0 && idle_.count() > 0)
      last_moved_ = clock_type::now();
    return n;
  }

  void check_idle();


  // A queued `op::sendfile`: `ahead` chunks of `wbuf_` go before it.
  struct file_job {
    op::sendfile req;
    uint64_t sent = 0;
    size_t ahead = 0;
    pending_reply asker;
  };

  // Writes or buffers `data`; `counted` of its bytes are in the shared
  // `in_flight` (sent by a handle as a message) and leave it here.
  void on_write(bytes& data, uint64_t counted = 0);

  void on_sendfile(caf::mailbox_element& x, op::sendfile& req);

  // One sendfile(2) for the file at the head of the queue.
  void flush_file();

  // Answers the job at the head (the bytes sent, or `err`), takes what it
  // did not send off the buffered count, and drops it.
  void finish_file(caf::error err = {});

  size_t head_ = 0;
  fifo<file_job> files_;
  // Chunks queued since the last file was (they go before the next one).
  size_t chunks_after_file_ = 0;
  std::chrono::milliseconds idle_{0};
  clock_type::time_point last_moved_;
};

} // namespace tact::detail
