#pragma once

// A socket_transport that carries a byte stream (a TCP or Unix connection,
// either end of a pipe): the write buffer, writes that try the kernel at
// once and queue the rest, gather writes on readiness, and reads into the
// loop's scratch buffer handed to the protocol. Subclasses name the
// syscalls and say what EOF means.

#include <sys/types.h>
#include <sys/uio.h>

#include "tact/runtime/messages.hpp"
#include "tact/transports/detail/fifo.hpp"
#include "tact/transports/detail/socket_transport.hpp"

namespace tact::detail {

class byte_transport : public socket_transport {
public:
  using socket_transport::socket_transport;

  void direct_write(bytes& data) override;

protected:
  bool on_transport_message(caf::mailbox_element& x,
                            caf::type_erased_tuple& msg) override;

  bool drained() const noexcept override;

  void drop_buffer() override;

  // -- hooks ---------------------------------------------------------------------

  /// One write; bytes written, or -1 with errno.
  virtual ssize_t write_some(const char* data, size_t size) = 0;

  /// One gather write; bytes written, or -1 with errno.
  virtual ssize_t write_gather(const iovec* iov, size_t count) = 0;

  /// One read; bytes read (0 at EOF), or -1 with errno.
  virtual ssize_t read_some(char* buf, size_t size) = 0;

  /// One `sendfile(2)` of up to `count` bytes of `file` from `*offset`
  /// (advanced); bytes sent, or -1 with errno.
  virtual ssize_t send_file(int file, off_t* offset, size_t count);

  /// The other end sent EOF.
  virtual void on_eof() = 0;

  /// `write_eof()` was called.
  virtual void on_write_eof() = 0;

  /// A write failed with `err` (not EAGAIN).
  virtual void on_write_error(int err) = 0;

  /// Whether new writes are dropped (besides closing and lost).
  [[nodiscard]] virtual bool refuses_writes() const noexcept;

  // -- for subclasses ----------------------------------------------------------------

  /// Reads once and hands the bytes to the protocol.
  void do_read();

  /// Sends what the buffer holds, as much as the kernel takes.
  void do_flush();

  fifo<bytes> wbuf_;

private:
  // A queued `op::sendfile`: `ahead` chunks of `wbuf_` go before it.
  struct file_job {
    op::sendfile req;
    uint64_t sent = 0;
    size_t ahead = 0;
    pending_reply asker;
  };

  void on_write(bytes& data);

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
};

} // namespace tact::detail
