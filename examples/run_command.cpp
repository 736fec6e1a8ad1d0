// Runs a program as a child and relays its stdio, with flow control both
// ways: asyncio's subprocess_exec with pipes, as an actor program.
//
//   run_command [--timeout SECONDS] -- PROGRAM [ARGS...]
//
// Copies its stdin to the child's stdin and the child's stdout and stderr
// to its own as the data arrives. Exits with the child's exit code, or
// 128+N when signal N ended it. When whoever reads our stdout or stderr
// goes away, the child's pipe to it is closed, so the child gets SIGPIPE
// as in a shell pipeline (`run_command -- yes | head` exits 141).
//
// The child leads a process group of its own: SIGINT and SIGTERM sent to
// run_command go to that whole group (grandchildren included), and
// run_command exits after the child, with its status (pipes that a
// descendant ignoring the signal still holds are let go 2 s after the
// child's end). The timeout signals the group too, and after the kill no
// pipe a stray descendant holds keeps run_command waiting. The child's
// group is not the terminal's foreground group: a program that opens
// /dev/tty itself (a password prompt) is stopped by the terminal. With --timeout it sends SIGTERM on expiry,
// SIGKILL two seconds later if needed, and exits 124. A program that cannot
// start: one line on stderr, exit 127. A stdin, stdout or stderr that is
// not a pipe, socket or terminal (a regular file) is handed to the child.

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include <pthread.h>

#include <sys/epoll.h>
#include <unistd.h>

#include "tact/actors/protocol.hpp"
#include "tact/runtime/errc.hpp"
#include "tact/runtime/runtime.hpp"

namespace {

using namespace std::chrono_literals;

// Our own stdout or stderr: pauses the child's pipe it is fed from while
// over its high watermark; reports when it is flushed and closed.
class output final : public tact::protocol {
public:
  output(tact::transport* source, std::promise<void> done)
    : source_(source), done_(std::move(done)) {
    // nop
  }

  void pause_writing() override { source_->pause_reading(); }
  void resume_writing() override { source_->resume_reading(); }

  // Our reader went away (with data buffered or not), or we closed after
  // the child ended: as in a shell pipeline, the child's next write to
  // this pipe fails (SIGPIPE), instead of its output being read and
  // dropped for ever.
  void connection_lost(const caf::error&) override {
    if (*source_)
      source_->close();
    done_.set_value();
  }

private:
  tact::transport* source_; // the child's pipe, set before any data
  std::promise<void> done_;
};

// Our own stdin: feeds the child's stdin, which pauses it when full.
class input final : public tact::protocol {
public:
  input(tact::transport* self, tact::transport* sink)
    : self_(self), sink_(sink) {
    // nop
  }

  // On the loop thread, before any data: the child protocol may pause it.
  void connection_made(tact::transport& t) override { *self_ = t; }

  void data_received(tact::bytes data) override { sink_->write(std::move(data)); }

  bool eof_received() override {
    sink_->close(); // the child sees EOF once everything is written
    return false;
  }

private:
  tact::transport* self_;
  tact::transport* sink_;
};

// The child: its output goes to our stdout / stderr transports.
class child final : public tact::subprocess_protocol {
public:
  child(tact::transport* out, tact::transport* err, tact::transport* in,
        tact::transport (&pipes)[3], std::promise<void> exited,
        std::promise<void> done)
    : out_(out), err_(err), in_(in), pipes_(pipes),
      exited_(std::move(exited)), done_(std::move(done)) {
    // nop
  }

  // On the loop thread, before any output: the output protocols pause
  // these pipes.
  void connection_made(tact::transport& t) override {
    for (int fd = 0; fd < 3; ++fd)
      pipes_[fd] = t.get_pipe_transport(fd);
    // A reader of ours that left before now: the child's pipe to it goes
    // (the output protocol found no pipe to close yet).
    if (pipes_[1] && *out_ && out_->is_closing())
      pipes_[1].close();
    if (pipes_[2] && *err_ && err_->is_closing())
      pipes_[2].close();
  }

  void process_exited() override { exited_.set_value(); }

  // The child closed its stdin: stop reading ours.
  void pipe_connection_lost(int fd, const caf::error&) override {
    if (fd == 0 && *in_)
      in_->close();
  }

  void pipe_data_received(int fd, tact::bytes data) override {
    (fd == 1 ? out_ : err_)->write(std::move(data));
  }

  // The child's stdin is full: stop reading ours.
  void pause_writing() override { in_->pause_reading(); }
  void resume_writing() override { in_->resume_reading(); }

  void connection_lost(const caf::error&) override { done_.set_value(); }

private:
  tact::transport* out_;
  tact::transport* err_;
  tact::transport* in_;
  tact::transport (&pipes_)[3];
  std::promise<void> exited_;
  std::promise<void> done_;
};

// Whether epoll can watch `fd` (pipes, sockets, terminals can; regular
// files and /dev/null cannot).
bool pollable(int fd) {
  int ep = ::epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  bool ok = ep >= 0 && ::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0;
  if (ep >= 0)
    ::close(ep);
  return ok;
}

int usage(const char* self) {
  std::fprintf(stderr, "usage: %s [--timeout SECONDS] -- PROGRAM [ARGS...]\n",
               self);
  return 2;
}

} // namespace

int main(int argc, char** argv) {
  double timeout = 0;
  int i = 1;
  for (; i < argc && std::strcmp(argv[i], "--") != 0; ++i) {
    if (std::strcmp(argv[i], "--timeout") == 0 && i + 1 < argc)
      timeout = std::atof(argv[++i]);
    else
      return usage(argv[0]);
  }
  if (i + 1 >= argc)
    return usage(argv[0]);
  std::vector<std::string> command(argv + i + 1, argv + argc);
  tact::runtime rt{tact::runtime_options{.handle_signals = true}};
  // Handles filled in before any data can flow; the protocols keep
  // pointers to them.
  tact::transport proc;
  // The child's stdin, stdout, stderr; set on the loop thread.
  tact::transport pipes[3];
  auto& child_in = pipes[0];
  auto& child_out = pipes[1];
  auto& child_err = pipes[2];
  tact::transport my_in;
  tact::transport my_out;
  tact::transport my_err;
  std::promise<void> child_exit;
  std::promise<void> child_done;
  std::promise<void> out_done;
  std::promise<void> err_done;
  // The child process ended; then its pipes are closed too (finished).
  auto child_exited = child_exit.get_future().share();
  auto child_finished = child_done.get_future().share();
  auto out_flushed = out_done.get_future();
  auto err_flushed = err_done.get_future();
  // Our stdio as transports; what epoll cannot watch goes to the child.
  tact::subprocess_options opts;
  opts.process_group = 0;
  if (!pollable(0))
    opts.std_in = tact::subprocess_stdio::inherit;
  auto out_fd = ::dup(1);
  auto err_fd = ::dup(2);
  auto out = rt.connect_write_pipe(
    [&] { return std::make_unique<output>(&child_out, std::move(out_done)); },
    out_fd);
  auto err = rt.connect_write_pipe(
    [&] { return std::make_unique<output>(&child_err, std::move(err_done)); },
    err_fd);
  // What a pipe transport does not take (a regular file) the child
  // inherits; the copy stays ours to close.
  if (out) {
    my_out = *out;
  } else {
    ::close(out_fd);
    opts.std_out = tact::subprocess_stdio::inherit;
  }
  if (err) {
    my_err = *err;
  } else {
    ::close(err_fd);
    opts.std_err = tact::subprocess_stdio::inherit;
  }
  // Reading stdin starts once the child's stdin exists.
  auto started = rt.subprocess_exec(
    [&] {
      return std::make_unique<child>(&my_out, &my_err, &my_in, pipes,
                                     std::move(child_exit),
                                     std::move(child_done));
    },
    command, opts);
  if (!started) {
    std::fprintf(stderr, "run_command: cannot run %s: %s\n",
                 command[0].c_str(), tact::describe(started.error()).c_str());
    return 127;
  }
  proc = *started;
  if (opts.std_in == tact::subprocess_stdio::pipe) {
    auto in_fd = ::dup(0);
    auto in = rt.connect_read_pipe(
      [&] { return std::make_unique<input>(&my_in, &child_in); }, in_fd);
    if (!in) {
      ::close(in_fd);
      proc.get_pipe_transport(0).close();
    }
  }
  auto ready = [&](auto wait) {
    return child_finished.wait_for(wait) == std::future_status::ready;
  };
  // Pipes that a descendant still holds (one that left the group, or
  // ignores the signal, as a shell's background jobs ignore SIGINT) stop
  // keeping us once the child itself has ended.
  auto stop_waiting_for_pipes = [&] {
    for (int fd = 0; fd < 3; ++fd)
      if (auto pipe = proc.get_pipe_transport(fd))
        pipe.close();
  };
  auto exited = [&](auto wait) {
    return child_exited.wait_for(wait) == std::future_status::ready;
  };
  // SIGINT and SIGTERM (blocked in every thread) go to the child's group;
  // the child's end ends the run. Woken by a signal of its own at the end.
  std::atomic<bool> finished{false};
  std::atomic<bool> signalled{false};
  std::thread forwarder{[&] {
    for (;;) {
      auto sig = rt.wait_for_signal();
      if (finished.load())
        return;
      signalled = true;
      (void) proc.send_signal(sig, tact::signal_target::group);
      // Signalled after the child's end (the main thread waits for that
      // end otherwise).
      if (exited(0s) && !ready(2s))
        stop_waiting_for_pipes();
    }
  }};
  bool timed_out = false;
  // The timeout counts until the run is over: the child's end and its
  // pipes' (a grandchild may hold them).
  if (timeout > 0 && !ready(std::chrono::duration<double>(timeout))) {
    timed_out = true;
    (void) proc.terminate(tact::signal_target::group);
    if (!ready(2s))
      (void) proc.kill(tact::signal_target::group);
  }
  child_exited.wait();
  // Ended by a signal or the timeout: what a descendant still holds open
  // keeps us 2 s at most.
  if ((timed_out || signalled.load()) && !ready(2s))
    stop_waiting_for_pipes();
  child_finished.wait();
  finished = true;
  ::pthread_kill(forwarder.native_handle(), SIGTERM);
  forwarder.join();
  // From here SIGINT and SIGTERM end run_command at once (a flush to a
  // reader that does not read must not make it unkillable).
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  ::pthread_sigmask(SIG_UNBLOCK, &stop, nullptr);
  // Flush what the child wrote, then leave. (my_in was set on the loop
  // thread before the child could finish.)
  for (auto* t : {&my_out, &my_err})
    if (*t)
      t->close();
  if (my_out)
    out_flushed.wait();
  if (my_err)
    err_flushed.wait();
  if (my_in)
    my_in.close();
  if (timed_out)
    return 124;
  auto code = proc.get_returncode().value_or(1);
  return code >= 0 ? code : 128 - code;
}
