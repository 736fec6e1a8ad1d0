#include "tact/transports/detail/byte_transport.hpp"

#include <cerrno>

#include "tact/runtime/messages.hpp"

namespace tact::detail {

namespace {

// Chunks handed to one gather write.
constexpr size_t max_iov = 64;

bool would_block(int err) {
  return err == EAGAIN || err == EWOULDBLOCK || err == EINTR;
}

} // namespace

void byte_transport::direct_write(bytes& data) {
  on_write(data);
}

bool byte_transport::on_transport_message(caf::mailbox_element&,
                                          caf::type_erased_tuple& msg) {
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

bool byte_transport::drained() const noexcept {
  return wbuf_.empty();
}

void byte_transport::drop_buffer() {
  wbuf_.clear();
}

bool byte_transport::refuses_writes() const noexcept {
  return false;
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

void byte_transport::on_write(bytes& data) {
  if (data.empty())
    return;
  if (lost_ || closing_ || refuses_writes()) {
    state_.count_dropped_write();
    return;
  }
  size_t sent = 0;
  if (wbuf_.empty()) {
    // Nothing queued: try the kernel right away.
    auto n = write_some(data.data(), data.size());
    if (n < 0) {
      auto err = errno;
      if (!would_block(err)) {
        on_write_error(err);
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

void byte_transport::do_flush() {
  iovec iov[max_iov];
  auto count = std::min(wbuf_.size(), max_iov);
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
  }
  buffered_sub(static_cast<size_t>(n));
  if (wbuf_.empty())
    on_drained();
}

} // namespace tact::detail
