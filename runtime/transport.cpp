#include "tact/runtime/transport.hpp"

#include <arpa/inet.h>
#include <cerrno>
#include <csignal>
#include <limits>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <fcntl.h>
#include <unistd.h>

#include <caf/send.hpp>

#include "tact/actors/detail/adapter.hpp"
#include "tact/actors/protocol.hpp"
#include "tact/runtime/detail/multiplexer.hpp"

#include "tact/runtime/detail/transport_core.hpp"
#include "tact/runtime/errc.hpp"
#include "tact/runtime/messages.hpp"

namespace tact {

namespace {

// asyncio's default watermarks for stream transports.
constexpr size_t default_high = 64 * 1024;

caf::error empty_handle(const char* call) {
  return make_error(errc::not_connected,
                    std::string{call} + " on an empty transport handle");
}

} // namespace

namespace detail {

caf::config_value to_config_value(const address_info& addr) {
  if (addr.family == 1 || addr.family == 0)
    return caf::config_value{addr.path ? *addr.path : std::string{}};
  char host[INET6_ADDRSTRLEN] = {};
  inet_ntop(addr.family == 4 ? AF_INET : AF_INET6, addr.ip.data(), host,
            sizeof(host));
  caf::config_value::list result;
  result.emplace_back(std::string{host});
  result.emplace_back(static_cast<int64_t>(addr.port));
  if (addr.family == 6) {
    result.emplace_back(static_cast<int64_t>(addr.flowinfo));
    result.emplace_back(static_cast<int64_t>(addr.scope_id));
  }
  return caf::config_value{std::move(result)};
}

endpoint to_endpoint(const address_info& addr) {
  if (addr.family == 1 || addr.family == 0)
    return endpoint::unix_path(addr.path ? *addr.path : std::string{});
  char host[INET6_ADDRSTRLEN] = {};
  inet_ntop(addr.family == 4 ? AF_INET : AF_INET6, addr.ip.data(), host,
            sizeof(host));
  return endpoint::inet(host, addr.port);
}

void transport_state::count_dropped_write() {
  if (++dropped_writes == 5)
    core->mux().warn("writes after the transport was closed are being dropped");
}

} // namespace detail

transport::transport(caf::actor actor, detail::transport_state* state)
  : actor_(std::move(actor)), state_(state) {
  // nop
}

// Inline: write() asks it on every call.
inline bool transport::drop_write() {
  if (!state_ || !state_->closing.load())
    return false;
  state_->count_dropped_write();
  return true;
}

namespace {

// Why a transport of `kind` takes no write(), or nothing.
caf::error write_refused(detail::transport_kind kind) {
  using detail::transport_kind;
  switch (kind) {
    case transport_kind::datagram:
      return make_error(errc::not_supported, "write on a datagram transport");
    case transport_kind::read_pipe:
      return make_error(errc::not_supported, "write on a read pipe");
    case transport_kind::subprocess:
      return make_error(errc::not_supported,
                        "write on a subprocess: use get_pipe_transport(0)");
    default:
      return caf::none;
  }
}

} // namespace

namespace {

// Why the transport behind `st` refuses a write before it is made, if it
// does: what write_if_taken tests on every write, and what write_refusal
// turns into an error.
enum class refusal : unsigned char { none, kind, after_eof };

[[gnu::always_inline]] inline refusal
write_refusal_of(const detail::transport_state& st) {
  if (st.kind != detail::transport_kind::stream && write_refused(st.kind))
    return refusal::kind;
  if (st.eof_written.load())
    return refusal::after_eof;
  return refusal::none;
}

} // namespace

// Why a write would fail, before it is made: `errc::not_connected`,
// `not_supported`, `write_after_eof`; empty when it would not.
caf::error transport::write_refusal() const {
  if (!actor_)
    return empty_handle("write");
  if (state_ == nullptr)
    return caf::none;
  switch (write_refusal_of(*state_)) {
    case refusal::none:
      break;
    case refusal::kind:
      return write_refused(state_->kind);
    case refusal::after_eof:
      return make_error(errc::write_after_eof);
  }
  return caf::none;
}

// Inline: write() and try_write() are one body, for one cost.
// Takes `data` unless the write is refused or the transport is closing
// (then `data` is left alone).
[[gnu::always_inline]] inline transport::write_outcome
transport::write_if_taken(bytes& data) {
  if (!actor_)
    return write_outcome::refused;
  if (state_ == nullptr) {
    // A handle without the shared state (from another node): the
    // transport itself drops what it cannot take.
    if (!data.empty())
      caf::anon_send(actor_, op::write{std::move(data), false});
    return write_outcome::taken;
  }
  if (write_refusal_of(*state_) != refusal::none)
    return write_outcome::refused;
  auto kind = state_->kind;
  // An empty frame is a frame; empty bytes on a stream are nothing.
  if (data.empty() && kind != detail::transport_kind::frames)
    return write_outcome::taken;
  if (state_->closing.load())
    return write_outcome::closing;
  // On the transport's loop with nothing queued before it: write now,
  // without a message (same order as the mailbox would give).
  auto* core = state_->core;
  if (core->run_now([&] { core->direct_write(data); }))
    return write_outcome::taken;
  state_->in_flight += data.size();
  caf::anon_send(actor_, op::write{std::move(data), true});
  return write_outcome::taken;
}

bool transport::try_write(bytes& data) {
  return write_if_taken(data) == write_outcome::taken;
}

caf::error transport::write(bytes data) {
  switch (write_if_taken(data)) {
    case write_outcome::taken:
      return caf::none;
    case write_outcome::closing:
      state_->count_dropped_write();
      return caf::none;
    case write_outcome::refused:
      break;
  }
  return write_refusal();
}

caf::error transport::sendto(bytes data, std::optional<endpoint> addr) {
  if (!actor_)
    return empty_handle("sendto");
  if (state_) {
    if (state_->kind != detail::transport_kind::datagram)
      return make_error(errc::not_supported, "sendto on a stream transport");
    if (addr && addr->empty())
      return make_error(errc::invalid_argument,
                        "sendto an empty address (an unnamed socket)");
    auto connected = state_->peer.family != 0;
    if (!addr && !connected)
      return make_error(errc::invalid_argument,
                        "sendto without an address on an unconnected "
                        "endpoint");
    if (addr && connected && *addr != detail::to_endpoint(state_->peer))
      return make_error(errc::invalid_argument,
                        "sendto " + to_string(*addr)
                          + " on an endpoint connected to "
                          + to_string(detail::to_endpoint(state_->peer)));
    if (addr && !addr->host.empty()) {
      // A quick check that the host is numeric, so the caller learns of a
      // name at once rather than through error_received.
      unsigned char buf[sizeof(in6_addr)];
      if (inet_pton(AF_INET, addr->host.c_str(), buf) != 1
          && inet_pton(AF_INET6, addr->host.c_str(), buf) != 1)
        return make_error(errc::invalid_argument,
                          "not a numeric IPv4 or IPv6 address: '"
                            + addr->host + "'");
    }
    if (drop_write())
      return caf::none;
    state_->in_flight += data.size();
  }
  caf::anon_send(actor_, op::sendto{std::move(data),
                                    addr ? std::move(*addr) : endpoint{},
                                    state_ != nullptr});
  return caf::none;
}

std::string to_string(const endpoint& x) {
  if (x.host.empty())
    return x.path;
  if (x.host.find(':') != std::string::npos)
    return "[" + x.host + "]:" + std::to_string(x.port);
  return x.host + ":" + std::to_string(x.port);
}

caf::error transport::write(std::string_view text) {
  return write(to_bytes(text));
}

caf::error transport::writelines(std::vector<bytes> chunks) {
  if (!actor_)
    return empty_handle("writelines");
  for (auto& chunk : chunks)
    if (auto err = write(std::move(chunk)))
      return err;
  return caf::none;
}

namespace op {

file_ref::~file_ref() {
  if (fd_ >= 0)
    ::close(fd_);
}

} // namespace op

caf::expected<op::sendfile> make_sendfile(int fd, uint64_t offset,
                                          std::optional<uint64_t> count) {
  struct stat st {};
  if (fd < 0 || ::fstat(fd, &st) != 0)
    return make_error(errc::invalid_argument,
                      "sendfile: not an open file descriptor");
  if (!S_ISREG(st.st_mode))
    return make_error(errc::invalid_argument,
                      "sendfile: not a regular file");
  auto size = static_cast<uint64_t>(st.st_size);
  if (offset > size)
    return make_error(errc::invalid_argument,
                      "sendfile: offset past the end of the file");
  if (!count)
    count = size - offset;
  else if (*count > size - offset)
    return make_error(errc::invalid_argument,
                      "sendfile: count past the end of the file");
  auto copy = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0)
    return make_error(from_errno(errno), "sendfile: dup");
  return op::sendfile{std::make_shared<const op::file_ref>(copy), offset,
                      *count, false};
}

caf::expected<op::sendfile>
transport::file_request(int fd, uint64_t offset,
                        std::optional<uint64_t> count) {
  if (!actor_)
    return empty_handle("sendfile");
  if (!state_)
    return make_error(errc::not_supported,
                      "sendfile on a transport of another node");
  switch (state_->kind) {
    case detail::transport_kind::stream:
    case detail::transport_kind::write_pipe:
    case detail::transport_kind::tls:
      break;
    default:
      return make_error(errc::not_supported,
                        "sendfile needs a stream, write pipe or TLS "
                        "transport");
  }
  if (state_->eof_written.load())
    return make_error(errc::write_after_eof);
  return make_sendfile(fd, offset, count);
}

caf::error transport::sendfile(int fd, uint64_t offset,
                               std::optional<uint64_t> count) {
  auto msg = file_request(fd, offset, count);
  if (!msg)
    return std::move(msg.error());
  if (msg->count == 0 || drop_write())
    return caf::none;
  msg->counted = true;
  state_->in_flight += msg->count;
  caf::anon_send(actor_, std::move(*msg));
  return caf::none;
}

caf::error transport::write_eof() {
  if (!actor_)
    return empty_handle("write_eof");
  if (state_ && !can_write_eof())
    return make_error(errc::not_supported, "write_eof");
  // asyncio: a write pipe's write_eof() is close().
  if (state_ && state_->kind == detail::transport_kind::write_pipe) {
    close();
    return caf::none;
  }
  if (state_ && (state_->closing.load() || state_->eof_written.exchange(true)))
    return caf::none;
  if (state_) {
    auto* core = state_->core;
    if (core->run_now([core] { core->direct_write_eof(); }))
      return caf::none;
  }
  caf::anon_send(actor_, op::write_eof{});
  return caf::none;
}

bool transport::can_write_eof() const noexcept {
  if (!state_)
    return true;
  // A framing layer passes EOF down to the transport below it (known once
  // that transport is connected).
  if (state_->kind == detail::transport_kind::frames)
    return state_->below != nullptr
           && transport{caf::actor{}, state_->below}.can_write_eof();
  return state_->can_write_eof;
}

caf::error transport::close() {
  if (!actor_)
    return empty_handle("close");
  if (state_ && state_->closing.exchange(true))
    return caf::none;
  // On the transport's loop with nothing queued before it: now, without a
  // message (as write()).
  if (state_) {
    auto* core = state_->core;
    if (core->run_now([core] { core->direct_close(); }))
      return caf::none;
  }
  caf::anon_send(actor_, op::close{});
  return caf::none;
}

caf::error transport::abort() {
  return abort(caf::none);
}

caf::error transport::abort(caf::error reason) {
  if (!actor_)
    return empty_handle("abort");
  // Unlike close(), a transport that is closing may still be aborted: that
  // drops what close() would have flushed.
  if (state_)
    state_->closing = true;
  caf::anon_send(actor_, op::abort{std::move(reason)});
  return caf::none;
}

bool transport::is_closing() const noexcept {
  return state_ && state_->closing.load();
}

caf::error transport::pause_reading() {
  if (!actor_)
    return empty_handle("pause_reading");
  return switch_reading(true);
}

caf::error transport::resume_reading() {
  if (!actor_)
    return empty_handle("resume_reading");
  return switch_reading(false);
}

caf::error transport::switch_reading(bool pause) {
  if (!state_) {
    // A handle from another node: its node's transport decides.
    if (pause)
      caf::anon_send(actor_, op::pause_reading{false});
    else
      caf::anon_send(actor_, op::resume_reading{false});
    return caf::none;
  }
  // The shared flag is the truth: the transport reads it on either
  // command, so when two threads (a relay's two sides on two loops) pause
  // and resume one transport, the order their commands reach its mailbox
  // in does not matter, and a call the flag makes redundant sends nothing.
  if (state_->closing.load() || state_->reading_paused.exchange(pause) == pause)
    return caf::none;
  if (pause)
    caf::anon_send(actor_, op::pause_reading{true});
  else
    caf::anon_send(actor_, op::resume_reading{true});
  return caf::none;
}

bool transport::is_reading() const noexcept {
  return state_ && !state_->closing.load() && !state_->reading_paused.load();
}

void transport::consumed(size_t n) {
  if (n == 0)
    return;
  if (!state_) {
    caf::anon_send(actor_, op::consumed{n});
    return;
  }
  auto before = state_->unconsumed.fetch_sub(n);
  // Wake the transport only when it stopped reading for lack of credit and
  // this gives enough back; the common case sends nothing.
  if (before - n < state_->read_credit && state_->credit_blocked.load()
      && state_->credit_blocked.exchange(false))
    caf::anon_send(actor_, op::consumed{0});
}

caf::error transport::set_write_buffer_limits(std::optional<int64_t> high,
                                              std::optional<int64_t> low) {
  if (!actor_)
    return empty_handle("set_write_buffer_limits");
  for (auto [name, value] : {std::pair{"high", high}, std::pair{"low", low}})
    if (value && *value < 0)
      return make_error(errc::invalid_argument,
                        std::string{name} + " (" + std::to_string(*value)
                          + ") must be >= 0");
  // Four times a low above a quarter of the range is the range's top
  // (every limit stays a valid argument for a layer to pass down).
  auto times_four = [](size_t x) {
    constexpr auto top = static_cast<size_t>(std::numeric_limits<int64_t>::max());
    return x > top / 4 ? top : 4 * x;
  };
  size_t hi;
  size_t lo;
  if (!high && !low) {
    hi = default_high;
    lo = hi / 4;
  } else if (!low) {
    hi = static_cast<size_t>(*high);
    lo = hi / 4;
  } else if (!high) {
    lo = static_cast<size_t>(*low);
    hi = times_four(lo);
  } else {
    hi = static_cast<size_t>(*high);
    lo = static_cast<size_t>(*low);
  }
  if (hi < lo)
    return make_error(errc::invalid_argument,
                      "high (" + std::to_string(hi) + ") must be >= low ("
                        + std::to_string(lo) + ")");
  if (state_) {
    state_->high = hi;
    state_->low = lo;
  }
  caf::anon_send(actor_, op::set_write_buffer_limits{hi, lo, state_ != nullptr});
  return caf::none;
}

std::pair<size_t, size_t> transport::get_write_buffer_limits() const {
  if (!state_)
    return {default_high / 4, default_high};
  return {state_->low.load(), state_->high.load()};
}

size_t transport::get_write_buffer_size() const {
  size_t result = 0;
  // A layer's buffer includes what it handed to the transport below. A
  // lost transport holds nothing: writes counted on their way to it just
  // before the loss were dropped with its mailbox.
  for (auto* st = state_; st != nullptr && !st->lost.load(); st = st->below) {
    // In this order: the transport moves bytes from in_flight to buffered
    // by storing buffered first, so a later in_flight seen here comes with
    // its buffered (never a byte missed; at most counted twice for an
    // instant).
    auto flying = st->in_flight.load();
    result += flying + st->buffered.load();
  }
  return result;
}

std::optional<caf::config_value>
transport::get_extra_info(std::string_view name) const {
  if (!state_) {
    if (!remote_extra_)
      return std::nullopt;
    auto i = remote_extra_->find(name);
    if (i == remote_extra_->end())
      return std::nullopt;
    return i->second;
  }
  return state_->core->extra_info(name);
}

caf::settings transport::extra_info() const {
  if (!state_)
    return remote_extra_ ? *remote_extra_ : caf::settings{};
  caf::settings result;
  for (auto name : state_->core->extra_info_names())
    if (auto value = get_extra_info(name))
      result[std::string{name}] = std::move(*value);
  return result;
}

void transport::set_protocol(caf::actor protocol, bytes unread) {
  if (state_)
    state_->set_protocol(protocol);
  caf::anon_send(actor_, op::set_protocol{std::move(protocol), std::move(unread),
                                          state_ != nullptr});
}

caf::actor transport::set_protocol(std::unique_ptr<base_protocol> protocol,
                                   bytes unread) {
  if (!state_ || !protocol)
    return {};
  auto hdl = detail::spawn_adapter(state_->core->mux(), std::move(protocol),
                                   *this);
  set_protocol(hdl, std::move(unread));
  return hdl;
}

caf::actor transport::get_protocol() const {
  if (!state_ || state_->lost.load())
    return {};
  return state_->current_protocol();
}

int transport::get_pid() const noexcept {
  return state_ && state_->sub ? state_->sub->pid : -1;
}

std::optional<int> transport::get_returncode() const noexcept {
  if (!state_ || !state_->sub || !state_->sub->exited.load())
    return std::nullopt;
  return state_->sub->returncode.load();
}

transport transport::get_pipe_transport(int fd) const {
  if (!state_ || !state_->sub || fd < 0 || fd > 2)
    return {};
  // Set before any handle exists, never changed after.
  return state_->sub->pipes[fd];
}

caf::error transport::send_signal(int sig, signal_target target) {
  if (!state_ || !state_->sub)
    return make_error(errc::not_supported, "send_signal on a transport "
                                           "without a child");
  if (target == signal_target::group) {
    auto pgid = state_->sub->pgid;
    if (pgid <= 0)
      return make_error(errc::invalid_argument,
                        "the child has no process group of its own (start "
                        "it with start_new_session or process_group)");
    if (state_->sub->group_gone.load())
      return make_error(errc::no_such_process, "the child's process group "
                                               "is empty");
    if (::kill(-pgid, sig) != 0) {
      auto err = errno;
      if (err == ESRCH)
        state_->sub->group_gone = true;
      return error_from_errno(err, "kill of process group "
                                     + std::to_string(pgid));
    }
    return caf::none;
  }
  if (state_->sub->exited.load())
    return make_error(errc::no_such_process, "the child has exited");
  if (::syscall(SYS_pidfd_send_signal, state_->sub->pidfd, sig, nullptr, 0)
      != 0)
    return error_from_errno(errno, "pidfd_send_signal");
  return caf::none;
}

caf::error transport::terminate(signal_target target) {
  return send_signal(SIGTERM, target);
}

caf::error transport::kill(signal_target target) {
  return send_signal(SIGKILL, target);
}

uint64_t transport::dropped_datagrams() const noexcept {
  return state_ ? state_->dropped_datagrams.load() : 0;
}

uint64_t transport::dropped_writes() const noexcept {
  return state_ ? state_->dropped_writes.load() : 0;
}

} // namespace tact
