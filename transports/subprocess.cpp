// The subprocess transport: asyncio's BaseSubprocessTransport as a light
// actor. Boost.Process starts the child; its pipes become pipe transports
// whose protocol is this actor, which passes their events on as
// pipe_data_received / pipe_connection_lost; the child's exit is watched
// with a pidfd on the loop's epoll (no SIGCHLD handler, no polling).

#include <cerrno>
#include <csignal>
#include <system_error>

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/process/args.hpp>
#include <boost/process/child.hpp>
#include <boost/process/env.hpp>
#include <boost/process/environment.hpp>
#include <boost/process/exe.hpp>
#include <boost/process/extend.hpp>
#include <boost/process/io.hpp>
#include <boost/process/posix.hpp>
#include <boost/process/search_path.hpp>
#include <boost/process/start_dir.hpp>

#include <caf/sec.hpp>
#include <caf/send.hpp>
#include <caf/system_messages.hpp>

#include "tact/runtime/detail/match.hpp"
#include "tact/runtime/detail/multiplexer.hpp"
#include "tact/runtime/detail/transport_core.hpp"
#include "tact/runtime/errc.hpp"
#include "tact/runtime/messages.hpp"
#include "tact/transports/detail/pipe.hpp"
#include "tact/transports/detail/socket.hpp"
#include "tact/transports/detail/subprocess.hpp"

namespace tact {

namespace detail {

namespace {

class subprocess_transport final : public transport_core, public io_handler {
public:
  subprocess_transport(caf::actor_config& cfg, multiplexer& mux, int pid,
                       int pidfd, caf::actor protocol,
                       std::function<void()> on_made)
    : transport_core(cfg, mux, transport_kind::subprocess, 0,
                     std::move(protocol)),
      on_made_(std::move(on_made)) {
    sub_.pid = pid;
    sub_.pidfd = pidfd;
    state_.sub = &sub_;
    state_.family = "subprocess";
  }

  ~subprocess_transport() override {
    made();
    if (sub_.pidfd >= 0)
      ::close(sub_.pidfd);
  }

  /// The child's own process group, before any handle exists.
  void set_pgid(int pgid) {
    sub_.pgid = pgid;
  }

  /// Pipes, before start: their events come to this actor.
  void set_pipe(int fd, transport t) {
    sub_.pipes[fd] = std::move(t);
    open_pipes_ += sub_.pipes[fd] ? 1 : 0;
  }

  void handle_io(uint32_t) override {
    if (sub_.exited.load())
      return;
    siginfo_t info{};
    if (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(sub_.pidfd),
                 &info, WEXITED | WNOHANG)
          != 0
        || info.si_pid == 0)
      return;
    // asyncio's returncode: the exit status, or minus the signal.
    sub_.returncode = info.si_code == CLD_EXITED ? info.si_status
                                                 : -info.si_status;
    sub_.exited = true;
    mux().remove(sub_.pidfd);
    deliver(caf::make_message(process_exited{}));
    maybe_done();
  }

  caf::strong_actor_ptr io_owner() override {
    return caf::actor_cast<caf::strong_actor_ptr>(this);
  }

  void direct_write(bytes&) override {
    // write() goes to get_pipe_transport(0), never here.
  }

protected:
  void on_start() override {
    mux().track(id(), handle(), false);
    if (mux().add(sub_.pidfd, EPOLLIN, this) != 0)
      mux().warn("cannot watch child " + std::to_string(sub_.pid)
                 + ": epoll_ctl failed");
    if (protocol_) {
      monitor(protocol_);
      made_request_ = request_to(
        protocol_, caf::make_message(connection_made{make_handle()}));
    } else {
      made();
    }
  }

  void on_message(caf::mailbox_element& x) override {
    auto& msg = x.content();
    auto from = pipe_of(x);
    if (handle_protocol_message(x, msg)) {
      // set_protocol and its handover, or the protocol's end
    } else if (auto id = answer_to(x); id != 0) {
      // connection_made answered (or failed): whoever waits may go on.
      if (id == made_request_)
        made();
    } else if (detail::is<connection_made>(msg)) {
      // A pipe transport is up; it reads once answered. Answering after
      // our own connection_made went out keeps the user's order.
      reply(x, caf::make_message());
    } else if (detail::is<data_received>(msg)) {
      auto& d = msg.get_mutable_as<data_received>(0);
      if (protocol_ && from > 0)
        deliver(caf::make_message(pipe_data_received{from, std::move(d.data)}));
      else if (from > 0)
        sub_.pipes[from].consumed(d.data.size());
    } else if (detail::is<eof_received>(msg)) {
      reply(x, caf::make_message(false));
    } else if (detail::is<connection_lost>(msg)) {
      if (from >= 0 && !pipe_lost_[from]) {
        pipe_lost_[from] = true;
        --open_pipes_;
        deliver(caf::make_message(pipe_connection_lost{
          from, std::move(msg.get_mutable_as<connection_lost>(0).reason)}));
        maybe_done();
      }
    } else if (detail::is<pause_writing>(msg)) {
      deliver(caf::make_message(pause_writing{}));
    } else if (detail::is<resume_writing>(msg)) {
      deliver(caf::make_message(resume_writing{}));
    } else if (detail::is<op::close>(msg) || detail::is<op::abort>(msg)) {
      on_close();
    } else if (x.mid.is_request()) {
      reply(x, caf::make_message(caf::make_error(caf::sec::unexpected_message)));
    }
  }

  void on_exit(caf::error) override {
    on_close();
  }

private:
  // Which of the child's pipes sent `x`, or -1.
  int pipe_of(const caf::mailbox_element& x) const {
    if (!x.sender)
      return -1;
    for (int fd = 0; fd < 3; ++fd)
      if (sub_.pipes[fd] && sub_.pipes[fd].actor().address() == x.sender->address())
        return fd;
    return -1;
  }

  // asyncio's close(): close the pipes, kill a child still running.
  void on_close() {
    if (closing_)
      return;
    closing_ = true;
    state_.closing = true;
    // The kill first: a pipe's close may now run at once (a direct call),
    // and a child blocked writing to a closed pipe would die of SIGPIPE
    // instead. asyncio kills before its pipes' descriptors are closed too
    // (they close in a later callback).
    // The pipes close by message, after the kill: a direct close would
    // shut a pipe before the child is killed, and a child blocked writing
    // to it would die of SIGPIPE instead (asyncio too kills before its
    // pipes' descriptors close, in a later callback).
    for (auto& p : sub_.pipes)
      if (p)
        caf::anon_send(p.actor(), op::close{});
    if (!sub_.exited.load())
      ::syscall(SYS_pidfd_send_signal, sub_.pidfd, SIGKILL, nullptr, 0);
  }

  void made() {
    if (auto f = std::move(on_made_)) {
      on_made_ = nullptr;
      f();
    }
  }

  // connection_lost once the child has exited and every pipe is closed.
  void maybe_done() {
    if (lost_ || !sub_.exited.load() || open_pipes_ > 0)
      return;
    made();
    lost_ = true;
    state_.closing = true;
    state_.lost = true;
    mux().untrack(id());
    if (protocol_) {
      demonitor(protocol_);
      deliver(caf::make_message(connection_lost{}));
      protocol_ = nullptr;
    }
    // The pipes stay: get_pipe_transport answers with them, closed, after
    // the end too, as asyncio's does. They hold no strong reference back:
    // a pipe names this actor by address only, and dropped its protocol
    // reference when it was lost (every pipe was, to get here).
    quit();
  }

  void on_protocol_down() override {
    on_close();
  }

  subprocess_state sub_;
  std::function<void()> on_made_;
  uint64_t made_request_ = 0;
  int open_pipes_ = 0;
  bool pipe_lost_[3] = {false, false, false};
  bool closing_ = false;
  bool lost_ = false;
};

// Makes a pipe; the child's end is not inherited by later children.
bool make_pipe(int (&fds)[2]) {
  return ::pipe2(fds, O_CLOEXEC) == 0;
}

void close_both(int (&fds)[2]) {
  for (auto& fd : fds)
    if (fd >= 0) {
      ::close(fd);
      fd = -1;
    }
}

} // namespace

} // namespace detail

namespace bp = boost::process;

// Any thread: starts the child and its transport.
caf::expected<transport>
detail::start_process(multiplexer& mux, uint64_t read_credit,
                      const protocol_factory& factory,
                      const std::vector<std::string>& argv,
                      const subprocess_options& opts,
                      std::function<void()> on_made) {
  if (argv.empty() || argv[0].empty())
    return make_error(errc::invalid_argument, "no program to run");
  if (opts.std_in == subprocess_stdio::stdout_merge
      || opts.std_out == subprocess_stdio::stdout_merge)
    return make_error(errc::invalid_argument,
                      "only stderr can be merged into stdout");
  if (opts.process_group && *opts.process_group < 0)
    return make_error(errc::invalid_argument,
                      "process_group (" + std::to_string(*opts.process_group)
                        + ") must be >= 0");
  if (opts.process_group && opts.start_new_session)
    return make_error(errc::invalid_argument,
                      "start_new_session and process_group exclude each "
                      "other (a new session is a new group)");
  for (auto fd : opts.pass_fds)
    if (fd < 0 || ::fcntl(fd, F_GETFD) < 0)
      return make_error(errc::invalid_argument,
                        "pass_fds: " + std::to_string(fd)
                          + " is not an open descriptor");
  // The program: a path as given, else looked up in PATH.
  boost::filesystem::path exe = argv[0];
  if (argv[0].find('/') == std::string::npos) {
    exe = bp::search_path(argv[0]);
    if (exe.empty())
      return make_error(errc::no_such_file,
                        "program not found in PATH: '" + argv[0] + "'");
  }
  if (::access(exe.c_str(), X_OK) != 0)
    return error_from_errno(errno, "cannot execute '" + exe.string() + "'");
  int in[2] = {-1, -1};
  int out[2] = {-1, -1};
  int err[2] = {-1, -1};
  auto fail = [&](caf::error e) -> caf::expected<transport> {
    detail::close_both(in);
    detail::close_both(out);
    detail::close_both(err);
    return e;
  };
  if ((opts.std_in == subprocess_stdio::pipe && !detail::make_pipe(in))
      || (opts.std_out == subprocess_stdio::pipe && !detail::make_pipe(out))
      || (opts.std_err == subprocess_stdio::pipe && !detail::make_pipe(err)))
    return fail(error_from_errno(errno, "pipe2"));
  int devnull = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (devnull < 0)
    return fail(error_from_errno(errno, "open /dev/null"));
  auto child_fd = [&](subprocess_stdio how, int pipe_end, int self) {
    switch (how) {
      case subprocess_stdio::pipe: return pipe_end;
      case subprocess_stdio::devnull: return devnull;
      case subprocess_stdio::stdout_merge: return out[1] >= 0 ? out[1] : 1;
      default: return self; // inherit
    }
  };
  auto fd0 = child_fd(opts.std_in, in[0], 0);
  auto fd1 = child_fd(opts.std_out, out[1], 1);
  auto fd2 = child_fd(opts.std_err, err[1], 2);
  std::vector<std::string> args(argv.begin() + 1, argv.end());
  std::error_code ec;
  bp::child child;
  // When exec fails Boost.Process returns an empty child and leaves the
  // forked one unreaped: note its pid to reap it.
  pid_t failed_pid = -1;
  auto note_pid = bp::extend::on_error = [&](auto& exec, const std::error_code&) {
    failed_pid = exec.pid;
  };
  // In the child, between fork and exec (async-signal-safe calls only):
  // no blocked signal (the runtime blocks SIGINT and SIGTERM in its
  // threads for wait_for_signal, and a mask survives exec: the child could
  // not be terminated), its session or process group, and the descriptors
  // it keeps.
  auto setup = bp::extend::on_exec_setup = [&](auto& exec) {
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    // A failed call is reported to the parent, and the program does not
    // run (set_error only reports it).
    if (opts.start_new_session && ::setsid() < 0) {
      exec.set_error(std::error_code(errno, std::system_category()),
                     "setsid");
      ::_exit(127);
    }
    if (opts.process_group && ::setpgid(0, *opts.process_group) != 0) {
      exec.set_error(std::error_code(errno, std::system_category()),
                     "setpgid");
      ::_exit(127);
    }
    for (auto fd : opts.pass_fds)
      ::fcntl(fd, F_SETFD, 0);
  };
  bp::environment env = boost::this_process::environment();
  if (opts.env) {
    env.clear();
    for (auto& [k, v] : *opts.env)
      env[k] = v;
  }
  if (!opts.cwd.empty()) {
    // Checked here: Boost.Process reports a failed chdir only as a
    // failed exec.
    if (::access(opts.cwd.c_str(), X_OK) != 0) {
      auto e = errno;
      ::close(devnull);
      return fail(error_from_errno(e, "working directory " + opts.cwd));
    }
    child = bp::child(bp::exe = exe, bp::args = args, env,
                      bp::start_dir = opts.cwd, bp::posix::fd.bind(0, fd0),
                      bp::posix::fd.bind(1, fd1), bp::posix::fd.bind(2, fd2),
                      note_pid, setup, ec);
  } else {
    child = bp::child(bp::exe = exe, bp::args = args, env,
                      bp::posix::fd.bind(0, fd0), bp::posix::fd.bind(1, fd1),
                      bp::posix::fd.bind(2, fd2), note_pid, setup, ec);
  }
  ::close(devnull);
  if (ec) {
    // The child was forked and its exec failed: reap it.
    if (failed_pid > 0)
      ::waitpid(failed_pid, nullptr, 0);
    child.detach();
    return fail(error_from_errno(ec.value(), "start " + argv[0]));
  }
  auto pid = child.id();
  // Tact reaps the child (waitid on the pidfd), not Boost.Process.
  child.detach();
  // The child's ends belong to the child now.
  for (auto* fd : {&in[0], &out[1], &err[1]})
    if (*fd >= 0) {
      ::close(*fd);
      *fd = -1;
    }
  auto pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) {
    auto e = errno;
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    return fail(error_from_errno(e, "pidfd_open"));
  }
  ::fcntl(pidfd, F_SETFD, FD_CLOEXEC);
  auto proto = factory.make(mux);
  if (!proto) {
    // No protocol, no child.
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    ::close(pidfd);
    return fail(std::move(proto.error()));
  }
  auto& sys = mux.system();
  caf::actor_config cfg{mux.home()};
  auto hdl = caf::make_actor<detail::subprocess_transport, caf::actor>(
    sys.next_actor_id(), sys.node(), &sys, cfg, mux, pid, pidfd,
    std::move(*proto), std::move(on_made));
  auto* self = static_cast<detail::subprocess_transport*>(
    caf::actor_cast<caf::abstract_actor*>(hdl));
  // Its own process group: the one it leads, or the one it joined.
  if (opts.start_new_session || (opts.process_group && *opts.process_group == 0))
    self->set_pgid(pid);
  else if (opts.process_group)
    self->set_pgid(*opts.process_group);
  // The pipes talk to the subprocess actor, which talks to the protocol.
  if (in[1] >= 0) {
    detail::set_nonblocking(in[1], true);
    self->set_pipe(0, detail::spawn_write_pipe_transport(mux, in[1], hdl));
    in[1] = -1;
  }
  if (out[0] >= 0) {
    detail::set_nonblocking(out[0], true);
    self->set_pipe(1, detail::spawn_read_pipe_transport(mux, out[0], hdl,
                                                        read_credit));
    out[0] = -1;
  }
  if (err[0] >= 0) {
    detail::set_nonblocking(err[0], true);
    self->set_pipe(2, detail::spawn_read_pipe_transport(mux, err[0], hdl,
                                                        read_credit));
    err[0] = -1;
  }
  static_cast<detail::light_actor*>(self)->start();
  return transport{std::move(hdl), &self->state()};
}

} // namespace tact
