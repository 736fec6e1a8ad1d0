#include "tact/runtime/detail/match.hpp"
#include "tact/transports/detail/socket_transport.hpp"

#include <cerrno>

#include <sys/epoll.h>
#include <unistd.h>

#include <caf/sec.hpp>
#include <caf/system_messages.hpp>

#include "tact/runtime/errc.hpp"
#include "tact/runtime/messages.hpp"
#include "tact/transports/detail/socket.hpp"

namespace tact::detail {

socket_transport::socket_transport(caf::actor_config& cfg, multiplexer& mux,
                                   int fd, caf::actor protocol,
                                   uint64_t read_credit, transport_kind kind,
                                   const socket_origin* origin)
  : transport_core(cfg, mux, kind, read_credit, std::move(protocol)),
    fd_(fd) {
  state_.fd = fd;
  if (kind == transport_kind::read_pipe || kind == transport_kind::write_pipe) {
    state_.family = "pipe";
    return;
  }
  socket_origin known;
  if (origin != nullptr)
    known = *origin;
  read_first_ = known.accepted;
  // The extra-info snapshot, taken before anyone can see the state.
  auto local = known.local != nullptr && known.local->length > 0
                 ? *known.local
                 : local_address(fd);
  state_.local = to_address_info(local);
  state_.peer = to_address_info(known.peer != nullptr && known.peer->length > 0
                                  ? *known.peer
                                  : peer_address(fd));
  switch (local.family()) {
    case AF_INET: state_.family = "inet"; break;
    case AF_INET6: state_.family = "inet6"; break;
    default: state_.family = "unix"; break;
  }
}

socket_transport::~socket_transport() {
  if (fd_ >= 0)
    ::close(fd_);
  made_done(false);
}

void socket_transport::made_done(bool alive) {
  if (on_made_) {
    auto f = std::move(on_made_);
    on_made_ = nullptr;
    f(alive ? make_handle() : transport{});
  }
}

caf::strong_actor_ptr socket_transport::io_owner() {
  return caf::actor_cast<caf::strong_actor_ptr>(this);
}

void socket_transport::on_exit(caf::error reason) {
  lose(reason ? std::move(reason) : make_error(errc::transport_down));
}

void socket_transport::on_start() {
  mux().track(id(), handle(), false);
  // A stream socket joins the loop's epoll when connection_made has been
  // answered, with what it then waits for (update_interest): one
  // epoll_ctl per connection fewer than joining with nothing and changing
  // that at once. Pipes join at once: with no event asked for,
  // epoll still reports the other end's close (EPOLLERR, EPOLLHUP), which
  // a write pipe has no other way to learn.
  if (state_.kind != transport_kind::stream) {
    if (auto err = mux().add(fd_, 0, this)) {
      // Not a descriptor epoll can watch (a regular file, /dev/null).
      lose(error_from_errno(err, "epoll_ctl"));
      return;
    }
    registered_ = true;
  }
  if (!protocol_) {
    lose(make_error(errc::protocol_down, "no protocol"));
    return;
  }
  watch_protocol(false);
  // Read nothing before the protocol has seen connection_made: whatever it
  // asks for while handling it (pause_reading) comes first.
  made_request_ = request_to(protocol_,
                             caf::make_message(connection_made{make_handle()}));
}

void socket_transport::on_message(caf::mailbox_element& x) {
  auto& msg = x.content();
  if (handle_protocol_message(x, msg)) {
    // set_protocol and its handover, or the protocol's end
  } else if (auto id = answer_to(x)) {
    if (id != made_request_) {
      on_answer(id, msg);
      return;
    }
    // An empty answer, or a behaviour without a handler for
    // connection_made: read. Anything else means the protocol is gone.
    if (made_ok(msg)) {
      if (!lost_) {
        read_started_ = true;
        // What an accepted socket's client sent is mostly there already.
        if (read_first_ && wants_read())
          handle_io(EPOLLIN);
        else
          update_interest();
      }
    } else {
      lose(make_error(errc::protocol_down));
    }
    made_done();
  } else if (on_transport_message(x, msg)) {
    // handled by the subclass
  } else if (read_command(msg, user_paused_, closing_)) {
    update_interest();
  } else if (detail::is<op::close>(msg)) {
    on_close();
  } else if (detail::is<op::abort>(msg)) {
    lose(std::move(msg.get_mutable_as<op::abort>(0).reason));
  } else if (limits_command(msg)) {
    maybe_pause_protocol();
  } else if (detail::is<op::get_write_buffer_size>(msg)) {
    reply(x, caf::make_message(static_cast<uint64_t>(buffered_)));
  } else if (x.mid.is_request()) {
    reply(x, caf::make_message(caf::make_error(caf::sec::unexpected_message)));
  }
}

void socket_transport::on_answer(uint64_t, caf::type_erased_tuple&) {
  // nop
}

void socket_transport::on_protocol_down() {
  lose(make_error(errc::protocol_down));
}

void socket_transport::on_switched() {
  update_interest();
}

void socket_transport::change_interest(uint32_t mask) {
  if (mask == 0
      && (hup_ || (read_ended_ && state_.kind == transport_kind::stream))) {
    // A hung-up socket reports EPOLLHUP whatever the mask; take it off the
    // loop until there is something to do with it. So is a stream socket
    // whose EOF was read and that has nothing to send, as asyncio does: a
    // reset then shows at the next write, and its close needs no
    // epoll_ctl.
    if (registered_) {
      mux().remove(fd_);
      registered_ = false;
    }
    return;
  }
  if (!registered_) {
    // Before connection_made is answered, only a write that waits joins
    // epoll; from then on the socket is watched even with nothing asked
    // (a reset or a hang-up then ends a connection paused in
    // connection_made).
    if (mask == 0 && !read_started_)
      return;
    if (auto err = mux().add(fd_, mask, this)) {
      lose(error_from_errno(err, "epoll_ctl"));
      return;
    }
    registered_ = true;
    mask_ = mask;
    return;
  }
  if (mask == mask_)
    return;
  // Only EPOLLIN to drop (EOF read, reading paused, credit spent): the
  // kernel may keep reporting it until it comes when unwanted, because
  // handle_io reads only when it wants to. A connection that ends in this
  // pass of the loop (most do after EOF) then needs no epoll_ctl for it.
  if ((mask_ & ~mask) == EPOLLIN && (mask & ~mask_) == 0 && !in_unwanted_)
    return;
  in_unwanted_ = false;
  mux().modify(fd_, mask, this);
  mask_ = mask;
}

void socket_transport::discard_buffer() {
  drop_buffer();
  buffered_ = 0;
  state_.buffered = 0;
}

void socket_transport::buffered_add(size_t n, uint64_t uncounted) {
  buffered_ += n;
  state_.buffered.store(buffered_, std::memory_order_relaxed);
  if (uncounted > 0)
    state_.in_flight -= uncounted;
  maybe_pause_protocol();
}

void socket_transport::buffered_sub(size_t n) {
  buffered_ -= n;
  state_.buffered.store(buffered_, std::memory_order_relaxed);
  maybe_resume_protocol();
}

void socket_transport::maybe_pause_protocol() {
  if (!protocol_paused_ && protocol_
      && buffered_ > state_.high.load(std::memory_order_relaxed)) {
    protocol_paused_ = true;
    deliver(caf::make_message(pause_writing{}));
  }
}

void socket_transport::maybe_resume_protocol() {
  auto low = resume_when_empty_ ? 0 : state_.low.load(std::memory_order_relaxed);
  if (protocol_paused_ && buffered_ <= low) {
    protocol_paused_ = false;
    deliver(caf::make_message(resume_writing{}));
  }
}

void socket_transport::on_close() {
  if (closing_ || lost_)
    return;
  closing_ = true;
  state_.closing = true;
  update_interest();
  if (drained())
    lose(caf::none);
}

void socket_transport::on_drained() {
  if (closing_)
    lose(caf::none);
}

caf::error socket_transport::error_of_errno(int err, const char* call) {
  auto code = from_errno(err);
  if (code == errc::connection_reset || code == errc::broken_pipe)
    return make_error(code);
  return error_from_errno(err, call);
}

void socket_transport::lose_errno(int err, const char* call) {
  lose(error_of_errno(err, call));
}

void socket_transport::lose(caf::error reason) {
  if (lost_)
    return;
  // After a failure, the end is that failure, whatever ends it (the last
  // byte read, close, abort).
  if (failed_)
    reason = std::move(failure_);
  lost_ = true;
  closing_ = true;
  state_.closing = true;
  if (registered_) {
    mux().remove(fd_);
    registered_ = false;
  }
  ::close(fd_);
  fd_ = -1;
  discard_buffer();
  mux().untrack(id());
  state_.lost = true;
  end_protocol(std::move(reason));
  made_done();
  if (on_lost_) {
    auto f = std::move(on_lost_);
    on_lost_ = nullptr;
    f(address());
  }
}

} // namespace tact::detail
