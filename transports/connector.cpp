// Connecting on the loop: asyncio's create_connection without blocking.
// The name is resolved by the loop's resolver; each address gets a
// non-blocking connect() that epoll reports as writable when it is done.
// Without Happy Eyeballs the addresses are tried one after the other; with
// it the next one starts after the delay even while the last is pending,
// and the first to connect wins.

#include "tact/transports/detail/connector.hpp"

#include <cerrno>
#include <memory>
#include <vector>

#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tact/runtime/detail/multiplexer.hpp"
#include "tact/runtime/detail/resolver.hpp"
#include "tact/runtime/errc.hpp"
#include "tact/transports/detail/socket.hpp"
#include "tact/transports/detail/tls.hpp"

namespace tact::detail {

namespace {

// asyncio's interleave=1: the first family, then the other, alternating.
std::vector<sock_address> interleave(std::vector<sock_address> addrs) {
  if (addrs.empty())
    return addrs;
  std::vector<sock_address> first;
  std::vector<sock_address> other;
  auto family = addrs.front().family();
  for (auto& a : addrs)
    (a.family() == family ? first : other).push_back(a);
  std::vector<sock_address> result;
  result.reserve(addrs.size());
  for (size_t i = 0; i < std::max(first.size(), other.size()); ++i) {
    if (i < first.size())
      result.push_back(first[i]);
    if (i < other.size())
      result.push_back(other[i]);
  }
  return result;
}

class connector : public loop_operation,
                  public std::enable_shared_from_this<connector> {
public:
  connector(multiplexer& mux, connect_target target, protocol_factory factory,
            transport_callback done)
    : mux_(mux), target_(std::move(target)), factory_(std::move(factory)),
      done_(std::move(done)) {
    // nop
  }

  ~connector() override {
    for (auto& a : attempts_)
      if (a->fd >= 0)
        ::close(a->fd);
    // Still pending: the loop stopped.
    if (done_)
      done_(make_error(errc::closed, "the loop stopped while connecting to "
                                       + name()));
  }

  /// Ends the connect with `closed` (the runtime shuts down).
  void cancel() override {
    fail(make_error(errc::closed, "the runtime shut down while connecting to "
                                    + name()));
  }

  void start() {
    struct starting_guard {
      bool& flag;
      ~starting_guard() { flag = false; }
    } guard{starting_};
    starting_ = true;
    if (!mux_.on_loop_thread()) {
      // Only when the loop has stopped: its last posted work runs on the
      // stopping thread.
      answer(make_error(errc::closed, "the loop stopped before connecting to "
                                        + name()));
      return;
    }
    kept_ = mux_.keep(shared_from_this());
    if (target_.timeout.count() > 0)
      deadline_ = mux_.add_timer(target_.timeout, [this] {
        deadline_ = 0;
        fail(make_error(errc::timed_out,
                        "connecting to " + name() + " took longer than "
                          + std::to_string(target_.timeout.count())
                          + " ms"));
      });
    if (!target_.path.empty()) {
      auto addr = unix_address(target_.path);
      if (!addr) {
        fail(std::move(addr.error()));
        return;
      }
      addrs_.push_back(*addr);
      try_next();
      return;
    }
    mux_.names().resolve(
      target_.host, target_.port, false,
      [self = shared_from_this()](
        caf::expected<std::vector<sock_address>> addrs) {
        if (self->finished_)
          return;
        if (!addrs) {
          self->fail(std::move(addrs.error()));
          return;
        }
        self->addrs_ = self->target_.happy_eyeballs_delay
                         ? interleave(std::move(*addrs))
                         : std::move(*addrs);
        self->try_next();
      });
  }

private:
  // One connect() in flight. Attempts stay allocated for the connector's
  // life, so an event still queued for a closed one finds it (fd -1).
  struct attempt final : io_handler {
    connector* owner = nullptr;
    int fd = -1;
    sock_address addr;

    void handle_io(uint32_t events) override {
      if (fd >= 0)
        owner->on_writable(*this, events);
    }

    caf::strong_actor_ptr io_owner() override {
      return nullptr;
    }
  };

  [[nodiscard]] std::string name() const {
    if (!target_.path.empty())
      return target_.path;
    return target_.host + ":" + std::to_string(target_.port);
  }

  [[nodiscard]] size_t in_flight() const {
    size_t n = 0;
    for (auto& a : attempts_)
      n += a->fd >= 0 ? 1 : 0;
    return n;
  }

  // One connect(): 0 once connected, EINPROGRESS while the handshake is
  // under way (EALREADY, from a second call, means the same), else the
  // error.
  static int connect_now(int fd, const sock_address& addr) {
    for (;;) {
      if (::connect(fd, addr.get(), addr.length) == 0)
        return 0;
      auto err = errno;
      if (err != EINTR)
        return err == EALREADY ? EINPROGRESS : err;
    }
  }

  // Starts connecting to the next address; with Happy Eyeballs, schedules
  // the one after it.
  void try_next() {
    while (!finished_ && next_ < addrs_.size()) {
      auto& addr = addrs_[next_++];
      auto fd = ::socket(addr.family(),
                         SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (fd < 0) {
        last_ = error_from_errno(errno, "socket for " + to_string(addr));
        continue;
      }
      auto err = connect_now(fd, addr);
      // Over loopback the handshake has mostly finished by now: a second
      // connect() says so (0) or reports the failure, and the wait on the
      // loop (two epoll_ctl calls and a pass) is saved.
      if (err == EINPROGRESS)
        err = connect_now(fd, addr);
      if (err == 0) {
        succeed(fd, addr);
        return;
      }
      // A Unix socket whose backlog is full says EAGAIN: it is refused
      // now, as a blocking connect would have waited without end.
      if (err != EINPROGRESS) {
        last_ = error_from_errno(err, "connect " + to_string(addr));
        ::close(fd);
        continue;
      }
      auto a = std::make_unique<attempt>();
      a->owner = this;
      a->fd = fd;
      a->addr = addr;
      if (auto failed = mux_.add(fd, EPOLLOUT, a.get())) {
        last_ = error_from_errno(failed, "epoll_ctl");
        ::close(fd);
        continue;
      }
      attempts_.push_back(std::move(a));
      if (target_.happy_eyeballs_delay && next_ < addrs_.size())
        eyeballs_ = mux_.add_timer(*target_.happy_eyeballs_delay, [this] {
          eyeballs_ = 0;
          try_next();
        });
      return;
    }
    if (!finished_ && in_flight() == 0 && next_ >= addrs_.size())
      fail(last_ ? last_
                 : make_error(errc::name_resolution_failed,
                              "no address to connect to for " + name()));
  }

  void on_writable(attempt& a, uint32_t events) {
    // A connect that failed is reported with EPOLLERR (and EPOLLHUP): only
    // then is SO_ERROR read.
    auto err = (events & (EPOLLERR | EPOLLHUP)) != 0 ? socket_error(a.fd) : 0;
    if (err == 0 && (events & EPOLLHUP) != 0)
      err = ECONNRESET;
    if (err == 0) {
      auto fd = a.fd;
      mux_.remove(fd);
      a.fd = -1;
      succeed(fd, a.addr);
      return;
    }
    last_ = error_from_errno(err, "connect " + to_string(a.addr));
    mux_.remove(a.fd);
    ::close(a.fd);
    a.fd = -1;
    // The next address now rather than after the delay.
    if (eyeballs_ != 0) {
      mux_.cancel_timer(eyeballs_);
      eyeballs_ = 0;
    }
    if (in_flight() == 0 || next_ < addrs_.size())
      try_next();
  }

  // Ends every other attempt and every timer.
  void stop_all() {
    finished_ = true;
    for (auto& a : attempts_)
      if (a->fd >= 0) {
        mux_.remove(a->fd);
        ::close(a->fd);
        a->fd = -1;
      }
    if (deadline_ != 0)
      mux_.cancel_timer(deadline_);
    if (eyeballs_ != 0)
      mux_.cancel_timer(eyeballs_);
    deadline_ = eyeballs_ = 0;
    // Events of this pass may still name the attempts.
    if (kept_ != 0)
      mux_.release_later(mux_.unkeep(kept_));
    kept_ = 0;
  }

  void succeed(int fd, const sock_address& addr) {
    stop_all();
    auto kind = target_.path.empty() ? stream_kind::tcp
                                     : stream_kind::unix_socket;
    auto proto = factory_.make(mux_);
    if (!proto) {
      ::close(fd);
      answer(std::move(proto.error()));
      return;
    }
    auto done = std::move(done_);
    done_ = nullptr;
    socket_origin origin;
    origin.peer = &addr;
    spawn_stream_transport(
      mux_, fd, std::move(*proto), kind, target_.read_credit,
      [done = std::move(done)](transport t) {
        if (t)
          done(std::move(t));
        else
          done(make_error(errc::closed, "the loop stopped before the "
                                        "connection started"));
      },
      target_.limits, &origin);
  }

  void fail(caf::error err) {
    if (finished_)
      return;
    stop_all();
    answer(std::move(err));
  }

  // Answers with an error: at once, except inside `start()`, where the
  // caller has not got its answer handler back yet.
  void answer(caf::error err) {
    auto done = std::move(done_);
    done_ = nullptr;
    if (!starting_ || !mux_.on_loop_thread()) {
      done(std::move(err));
      return;
    }
    mux_.add_timer(multiplexer::clock_type::now(),
                   [done = std::move(done), err = std::move(err)] {
                     done(err);
                   });
  }

  multiplexer& mux_;
  connect_target target_;
  protocol_factory factory_;
  transport_callback done_;
  // Its id with the loop, which keeps it while it is under way.
  uint64_t kept_ = 0;
  std::vector<sock_address> addrs_;
  size_t next_ = 0;
  std::vector<std::unique_ptr<attempt>> attempts_;
  uint64_t deadline_ = 0;
  uint64_t eyeballs_ = 0;
  caf::error last_;
  bool finished_ = false;
  bool starting_ = false;
};

} // namespace

void connect_stream(multiplexer& mux, connect_target target,
                    protocol_factory factory, transport_callback done) {
  std::make_shared<connector>(mux, std::move(target), std::move(factory),
                              std::move(done))
    ->start();
}

// -- loop operations: create_connection, create_unix_connection --------------

namespace {

// A factory whose protocol is a client TLS layer; the layer answers `done`
// after its handshake.
caf::expected<protocol_factory>
tls_client_factory(const tls_context& ctx, tls_options opts,
                   protocol_factory factory, uint64_t read_credit,
                   transport_callback done) {
  opts.server_side = false;
  if (auto err = detail::check_tls_options(ctx, opts, false))
    return err;
  detail::tls_setup setup{.ctx = ctx,
                          .opts = std::move(opts),
                          .factory = std::move(factory),
                          .on_ready = std::move(done),
                          .read_credit = read_credit};
  return protocol_factory::with_loop(
    [setup = std::move(setup)](detail::multiplexer& mux) mutable {
      return detail::spawn_tls(mux, std::move(setup)).actor();
    });
}

caf::error check_connect_options(const connection_options& opts) {
  if (opts.connect_timeout.count() < 0)
    return make_error(errc::invalid_argument,
                      "connect_timeout must not be negative");
  if (opts.happy_eyeballs_delay && opts.happy_eyeballs_delay->count() < 0)
    return make_error(errc::invalid_argument,
                      "happy_eyeballs_delay must not be negative");
  return caf::none;
}

} // namespace

// Every connect: checks the options, puts a client TLS layer on top when
// `ctx` is given (the layer answers after its handshake, so the plain
// connect answers only its failure), and connects on the loop, at once
// when called there. An error is answered later, never from inside.
void open_stream(detail::multiplexer& mux, uint64_t read_credit,
                 detail::connect_target target, const connection_options& opts,
                 protocol_factory factory, transport_callback done,
                 const tls_context* ctx, tls_options tls) {
  auto fail = [&](caf::error err) {
    mux.post([done = std::move(done), err = std::move(err)] { done(err); });
  };
  if (auto err = check_connect_options(opts))
    return fail(std::move(err));
  auto limits = stream_limits_of(opts);
  if (!limits)
    return fail(std::move(limits.error()));
  if (ctx != nullptr) {
    auto layered = tls_client_factory(*ctx, std::move(tls), std::move(factory),
                                      read_credit, done);
    if (!layered)
      return fail(std::move(layered.error()));
    factory = std::move(*layered);
    done = [answer = std::move(done)](caf::expected<transport> plain) {
      if (!plain)
        answer(std::move(plain.error()));
    };
  }
  target.limits = *limits;
  target.timeout = opts.connect_timeout;
  target.happy_eyeballs_delay = opts.happy_eyeballs_delay;
  target.read_credit = read_credit;
  auto run = [&mux, target = std::move(target), factory = std::move(factory),
              done = std::move(done)]() mutable {
    detail::connect_stream(mux, std::move(target), std::move(factory),
                           std::move(done));
  };
  if (mux.on_loop_thread())
    run();
  else
    mux.post(std::move(run));
}

} // namespace tact::detail
