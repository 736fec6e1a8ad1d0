#include "tact/runtime/detail/match.hpp"
#include "tact/transports/detail/byte_transport.hpp"

#include <algorithm>
#include <cerrno>
#include <sys/sendfile.h>

#include <caf/send.hpp>

#include "tact/runtime/errc.hpp"
#include "tact/runtime/messages.hpp"

namespace tact::detail {

namespace {

using idle_atom = caf::atom_constant<caf::atom("idlecheck")>;

// Chunks handed to one gather write.
constexpr size_t max_iov = 64;

bool would_block(int err) {
  return err == EAGAIN || err == EWOULDBLOCK || err == EINTR;
}

// sendfile(2) errors that come from the file, not the connection.
bool file_error(int err) {
  return err == EIO || err == EINVAL || err == EOVERFLOW || err == ESPIPE
         || err == EBADF || err == EFAULT || err == ENOMEM;
}

// Bytes handed to one sendfile(2): what a socket buffer takes is far less.
constexpr size_t max_file_step = size_t{1} << 30;

} // namespace

void byte_transport::direct_write(bytes& data) {
  on_write(data);
}

void byte_transport::on_start() {
  socket_transport::on_start();
  // The first look at the clock; each one arms the next.
  check_idle();
}

bool byte_transport::on_transport_message(caf::mailbox_element& x,
                                          caf::type_erased_tuple& msg) {
  if (detail::is<op::write>(msg)) {
    auto& w = msg.get_mutable_as<op::write>(0);
    on_write(w.data, w.counted ? w.data.size() : 0);
    return true;
  }
  if (detail::is<op::write_eof>(msg)) {
    on_write_eof();
    return true;
  }
  if (detail::is<op::sendfile>(msg)) {
    on_sendfile(x, msg.get_mutable_as<op::sendfile>(0));
    return true;
  }
  if (detail::is<idle_atom>(msg)) {
    check_idle();
    return true;
  }
  return false;
}

void byte_transport::drop_buffer() {
  wbuf_.clear();
  head_ = 0;
  chunks_after_file_ = 0;
  while (!files_.empty()) {
    reply(files_.front().asker,
          caf::make_message(make_error(
            errc::closed, "sendfile: the connection ended before the file "
                          "was sent")));
    files_.pop_front();
  }
}

ssize_t byte_transport::write_gather(const iovec* iov, size_t count) {
  if (!is_socket())
    return moved(::writev(fd_, iov, static_cast<int>(count)));
  // sendmsg rather than writev: it takes MSG_NOSIGNAL.
  msghdr msg{};
  msg.msg_iov = const_cast<iovec*>(iov);
  msg.msg_iovlen = count;
  return moved(::sendmsg(fd_, &msg, MSG_NOSIGNAL));
}

ssize_t byte_transport::send_file(int file, off_t* offset, size_t count) {
  return moved(::sendfile(fd_, file, offset, count));
}

// Ends the connection after `idle_` without a byte moved; else looks again
// when that much will have passed since the last one. One check is pending
// at a time, on the loop's timers, holding the transport weakly (a
// transport that ended is freed at once).
void byte_transport::check_idle() {
  if (lost_ || idle_.count() <= 0)
    return;
  auto quiet = clock_type::now() - last_moved_;
  if (quiet >= idle_) {
    lose(make_error(errc::timed_out, "no byte either way for "
                                       + std::to_string(idle_.count())
                                       + " ms"));
    return;
  }
  auto left = std::chrono::ceil<std::chrono::milliseconds>(idle_ - quiet);
  caf::weak_actor_ptr self{ctrl()};
  mux().add_timer(left, [self] {
    if (auto strong = self.lock())
      caf::anon_send(caf::actor_cast<caf::actor>(strong), idle_atom::value);
  });
}

void byte_transport::do_read() {
  auto credit = state_.read_credit - state_.unconsumed.load();
  auto want = std::min<size_t>(mux().scratch_size(), credit);
  auto n = read_some(mux().scratch(), want);
  if (n > 0) {
    // With no protocol (set_protocol to nothing) the bytes have nowhere to
    // go: drop them rather than charge credit no one gives back.
    if (!protocol_)
      return;
    bytes data(mux().scratch(), mux().scratch() + n);
    // Nothing below depends on state a direct call into the protocol
    // changes.
    deliver_data(data);
    return;
  }
  if (n == 0) {
    on_eof();
    return;
  }
  auto err = errno;
  if (!would_block(err))
    lose_errno(err, "read");
}

void byte_transport::on_write(bytes& data, uint64_t counted) {
  // `counted` bytes of `data` are in `in_flight` (a handle's write sent as a
  // message). They leave it where they are counted again, sent or
  // buffered, so that another thread adding the two up never sees them
  // twice or not at all for longer than between two stores.
  if (data.empty())
    return;
  if (lost_ || closing_ || refuses_writes()) {
    state_.in_flight -= counted;
    state_.count_dropped_write();
    return;
  }
  size_t sent = 0;
  if (drained()) {
    // Nothing queued: try the kernel right away.
    auto n = write_some(data.data(), data.size());
    if (n < 0) {
      auto err = errno;
      if (!would_block(err)) {
        state_.in_flight -= counted;
        on_write_error(err);
        return;
      }
      n = 0;
    }
    sent = static_cast<size_t>(n);
    // (A direct write counted nothing: no atomic operation for it.)
    if (counted > 0)
      state_.in_flight -= std::min<uint64_t>(counted, sent);
    if (sent == data.size())
      return;
    head_ = sent;
  }
  auto rest = data.size() - sent;
  wbuf_.push_back(std::move(data));
  ++chunks_after_file_;
  buffered_add(rest, counted > sent ? counted - sent : 0);
  update_interest();
}

void byte_transport::on_sendfile(caf::mailbox_element& x, op::sendfile& req) {
  // A handle's count leaves `in_flight` as the file is counted buffered
  // (as on_write's bytes do), or as the request is refused.
  auto counted = req.counted ? req.count : 0;
  if (lost_ || closing_ || refuses_writes()) {
    state_.in_flight -= counted;
    state_.count_dropped_write();
    reply(x, caf::make_message(make_error(
               errc::closed, "sendfile after the transport was closed")));
    return;
  }
  if (req.count == 0 || !req.file) {
    state_.in_flight -= counted;
    reply(x, caf::make_message(uint64_t{0}));
    return;
  }
  auto ahead = files_.empty() ? wbuf_.size() : chunks_after_file_;
  chunks_after_file_ = 0;
  auto count = req.count;
  files_.push_back(file_job{std::move(req), 0, ahead, later(x)});
  buffered_add(count, counted);
  if (files_.size() == 1 && ahead == 0)
    flush_file();
  if (!lost_)
    update_interest();
}

void byte_transport::flush_file() {
  auto& job = files_.front();
  auto left = job.req.count - job.sent;
  auto offset = static_cast<off_t>(job.req.offset + job.sent);
  auto n = send_file(job.req.file->fd(), &offset,
                     std::min<uint64_t>(left, max_file_step));
  if (n < 0) {
    auto err = errno;
    if (would_block(err))
      return;
    if (err == EPIPE)
      consume_sigpipe();
    if (file_error(err))
      finish_file(error_from_errno(err, "sendfile"));
    else
      on_write_error(err);
    return;
  }
  if (n == 0) {
    // The file shrank under the range: asyncio answers with what was sent.
    finish_file();
    return;
  }
  job.sent += static_cast<uint64_t>(n);
  buffered_sub(static_cast<size_t>(n));
  if (job.sent == job.req.count)
    finish_file();
}

void byte_transport::finish_file(caf::error err) {
  auto job = std::move(files_.front());
  files_.pop_front();
  if (job.sent < job.req.count)
    buffered_sub(static_cast<size_t>(job.req.count - job.sent));
  reply(job.asker, err ? caf::make_message(std::move(err))
                       : caf::make_message(job.sent));
  if (drained())
    on_drained();
}

void byte_transport::do_flush() {
  if (!files_.empty() && files_.front().ahead == 0) {
    flush_file();
    return;
  }
  iovec iov[max_iov];
  auto count = std::min(wbuf_.size(), max_iov);
  if (!files_.empty())
    count = std::min(count, files_.front().ahead);
  size_t offset = head_;
  for (size_t i = 0; i < count; ++i) {
    auto& chunk = wbuf_.at(i);
    iov[i].iov_base = chunk.data() + offset;
    iov[i].iov_len = chunk.size() - offset;
    offset = 0;
  }
  auto n = write_gather(iov, count);
  if (n < 0) {
    auto err = errno;
    if (!would_block(err))
      on_write_error(err);
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
    if (!files_.empty())
      --files_.front().ahead;
  }
  buffered_sub(static_cast<size_t>(n));
  if (drained())
    on_drained();
}

} // namespace tact::detail
