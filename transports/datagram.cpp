// The datagram transport (UDP and Unix datagram sockets): asyncio's
// _SelectorDatagramTransport as a light actor living on the multiplexer.

#include "tact/runtime/detail/match.hpp"
#include "tact/transports/detail/datagram.hpp"

#include <cerrno>
#include <optional>
#include <utility>

#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tact/runtime/detail/multiplexer.hpp"
#include "tact/runtime/detail/resolver.hpp"
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
    handle_ready(*this, events);
  }

  // What this kind does with a readiness report (see handle_ready).
  void on_ready(uint32_t events, bool) {
    // A pending socket error (ICMP port unreachable on a connected UDP
    // socket, say) is the protocol's to hear about; the socket stays open.
    if (events & EPOLLERR) {
      if (auto err = socket_error(fd_))
        report(err, "socket");
    }
    // The error's report may have paused reading: ask again.
    if ((events & EPOLLIN) && wants_read())
      do_read();
    if (!lost_ && (events & EPOLLOUT) && !queue_.empty())
      do_flush();
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
    on_sendto(x.data, x.addr, x.counted ? x.data.size() : 0);
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

  // `counted` bytes of `data` are in `in_flight` (a handle's message): they
  // leave it as they are counted buffered, or once sent or dropped.
  void on_sendto(bytes& data, const endpoint& addr, uint64_t counted) {
    struct uncount {
      transport_state& st;
      uint64_t n;
      ~uncount() {
        if (n > 0)
          st.in_flight -= n;
      }
    } guard{state_, counted};
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
    buffered_add(size, std::exchange(guard.n, 0));
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

// -- loop operations: create_datagram_endpoint and its Unix variant -----------

namespace {

// Opens a datagram socket of `family`, with asyncio's options, bound to
// `local` and connected to `remote` when given.
caf::expected<int> datagram_socket(int family, const detail::sock_address* local,
                                 const detail::sock_address* remote,
                                 const datagram_options& opts) {
  auto fd = ::socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return error_from_errno(errno, "socket");
  int one = 1;
  if (opts.reuse_port
      && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) {
    auto err = errno;
    ::close(fd);
    return error_from_errno(err, "SO_REUSEPORT");
  }
  if (opts.allow_broadcast)
    setsockopt(fd, SOL_SOCKET, SO_BROADCAST, &one, sizeof(one));
  if (local && ::bind(fd, local->get(), local->length) != 0) {
    auto err = errno;
    ::close(fd);
    return error_from_errno(err, "bind " + detail::to_string(*local));
  }
  if (remote && ::connect(fd, remote->get(), remote->length) != 0) {
    auto err = errno;
    ::close(fd);
    return error_from_errno(err, "connect " + detail::to_string(*remote));
  }
  return fd;
}

int to_af(address_family family) {
  switch (family) {
    case address_family::ipv4: return AF_INET;
    case address_family::ipv6: return AF_INET6;
    default: return AF_UNSPEC;
  }
}

// Picks the socket of a datagram endpoint from the resolved addresses.
caf::expected<int>
datagram_endpoint_socket(int want, const std::vector<detail::sock_address>& locals,
                         const std::vector<detail::sock_address>& remotes,
                         const datagram_options& opts) {
  if (locals.empty() && remotes.empty()) {
    if (want != AF_UNSPEC)
      return datagram_socket(want, nullptr, nullptr, opts);
    return make_error(errc::invalid_argument,
                      "unexpected address family: give local_addr, "
                      "remote_addr or family");
  }
  // asyncio's order: each family the local addresses have (or the remote
  // ones, when no local address is given), local and remote of that
  // family together; the first pair that binds and connects wins.
  caf::expected<int> fd = make_error(errc::invalid_argument,
                                     "local_addr and remote_addr have no "
                                     "family in common");
  auto try_family = [&](int family, const detail::sock_address* local) {
    if (remotes.empty())
      return datagram_socket(family, local, nullptr, opts);
    caf::expected<int> last = make_error(errc::invalid_argument);
    for (auto& remote : remotes) {
      if (remote.family() != family)
        continue;
      last = datagram_socket(family, local, &remote, opts);
      if (last)
        break;
    }
    return last;
  };
  if (!locals.empty()) {
    for (auto& local : locals) {
      if (!remotes.empty()
          && std::none_of(remotes.begin(), remotes.end(),
                          [&](auto& r) { return r.family() == local.family(); }))
        continue;
      fd = try_family(local.family(), &local);
      if (fd)
        break;
    }
  } else {
    for (auto& remote : remotes) {
      fd = datagram_socket(remote.family(), nullptr, &remote, opts);
      if (fd)
        break;
    }
  }
  return fd;
}

// The datagram transport of the socket `fd` (closed when the factory
// fails).
caf::expected<transport> start_datagram(detail::multiplexer& mux, int fd,
                                        const protocol_factory& factory,
                                        uint64_t read_credit) {
  auto proto = factory.make(mux);
  if (!proto) {
    ::close(fd);
    return std::move(proto.error());
  }
  return detail::spawn_datagram_transport(mux, fd, std::move(*proto),
                                          read_credit);
}

using addresses_callback
  = std::function<void(caf::expected<std::vector<detail::sock_address>>)>;

// Resolves `ep` on the loop, keeping the addresses of family `want`
// (AF_UNSPEC: all); no endpoint is no address.
void resolve_endpoint(detail::multiplexer& mux,
                      const std::optional<endpoint>& ep, bool passive,
                      int want, addresses_callback done) {
  if (!ep)
    return done(std::vector<detail::sock_address>{});
  mux.names().resolve(
    ep->host, ep->port, passive,
    [want, host = ep->host, done = std::move(done)](
      caf::expected<std::vector<detail::sock_address>> addrs) {
      if (!addrs)
        return done(std::move(addrs.error()));
      std::vector<detail::sock_address> result;
      for (auto& a : *addrs)
        if (want == AF_UNSPEC || a.family() == want)
          result.push_back(a);
      if (result.empty())
        return done(make_error(errc::name_resolution_failed,
                               "no address of the requested family for '"
                                 + host + "'"));
      done(std::move(result));
    });
}

} // namespace

void open_datagram(multiplexer& mux_ref, uint64_t credit,
                   protocol_factory factory, datagram_options opts,
                   transport_callback done) {
  auto* mux = &mux_ref;
  mux->post([mux, credit, factory = std::move(factory), opts = std::move(opts),
             done = std::move(done)]() mutable {
    auto want = to_af(opts.family);
    auto local = opts.local_addr;
    resolve_endpoint(
      *mux, local, true, want,
      [mux, credit, want, factory = std::move(factory), opts = std::move(opts),
       done = std::move(done)](auto locals) mutable {
        if (!locals)
          return done(std::move(locals.error()));
        auto remote = opts.remote_addr;
        resolve_endpoint(
          *mux, remote, false, want,
          [mux, credit, want, factory = std::move(factory),
           opts = std::move(opts), locals = std::move(*locals),
           done = std::move(done)](auto remotes) mutable {
            if (!remotes)
              return done(std::move(remotes.error()));
            auto fd = datagram_endpoint_socket(want, locals, *remotes, opts);
            if (!fd)
              return done(std::move(fd.error()));
            done(start_datagram(*mux, *fd, factory, credit));
          });
      });
  });
}

void open_unix_datagram(multiplexer& mux_ref, uint64_t credit,
                        protocol_factory factory, std::string local_path,
                        std::string remote_path, transport_callback done) {
  auto* mux = &mux_ref;
  mux->post([mux, credit, factory = std::move(factory),
             local_path = std::move(local_path),
             remote_path = std::move(remote_path),
             done = std::move(done)]() mutable {
    std::optional<detail::sock_address> local;
    std::optional<detail::sock_address> remote;
    if (!local_path.empty()) {
      auto addr = detail::unix_address(local_path);
      if (!addr)
        return done(std::move(addr.error()));
      local = *addr;
      remove_stale_socket(local_path);
    }
    if (!remote_path.empty()) {
      auto addr = detail::unix_address(remote_path);
      if (!addr)
        return done(std::move(addr.error()));
      remote = *addr;
    }
    auto fd = datagram_socket(AF_UNIX, local ? &*local : nullptr,
                              remote ? &*remote : nullptr, datagram_options{});
    if (!fd)
      return done(std::move(fd.error()));
    done(start_datagram(*mux, *fd, factory, credit));
  });
}

} // namespace tact::detail
