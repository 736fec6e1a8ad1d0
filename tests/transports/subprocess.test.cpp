// asyncio's subprocess transports: children started with subprocess_exec
// and subprocess_shell, real processes, their pipes and their exit.

#include <catch2/catch.hpp>

#include <csignal>
#include <dirent.h>
#include <fcntl.h>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>
#include <sys/stat.h>
#include <unistd.h>

#include "support/harness.hpp"
#include "tact/runtime/messages.hpp"

using namespace tact;
using namespace tact::test;

namespace {

// What a subprocess protocol saw.
// What a subprocess protocol saw: the journal's events and reason, and the
// child's output and pipe losses, guarded by the journal's lock.
struct plog : journal {
  std::string out;
  std::string err;
  std::vector<caf::error> pipe_lost;

  // A child takes longer than a socket: 10 s by default.
  bool wait_for(const std::string& ev, std::chrono::milliseconds t = 10s) {
    return journal::wait_for(ev, 1, t);
  }
};

class precorder : public subprocess_protocol {
public:
  explicit precorder(std::shared_ptr<plog> log) : log_(std::move(log)) {
    // nop
  }

  void connection_made(transport& t) override {
    t_ = t;
    log_->add("connection_made");
    if (on_made)
      on_made(t_);
  }

  void pipe_data_received(int fd, bytes data) override {
    {
      std::lock_guard<journal> guard{*log_};
      (fd == 1 ? log_->out : log_->err).append(data.begin(), data.end());
    }
    log_->add("pipe_data_received " + std::to_string(fd));
  }

  void pipe_connection_lost(int fd, const caf::error& reason) override {
    {
      std::lock_guard<journal> guard{*log_};
      log_->pipe_lost.push_back(reason);
    }
    log_->add("pipe_connection_lost " + std::to_string(fd));
  }

  void process_exited() override {
    log_->add("process_exited");
  }

  void pause_writing() override { log_->add("pause_writing"); }

  void resume_writing() override { log_->add("resume_writing"); }

  void connection_lost(const caf::error& reason) override {
    log_->set_reason(reason);
    log_->add("connection_lost");
  }

  std::function<void(transport&)> on_made;

private:
  std::shared_ptr<plog> log_;
  transport t_;
};

protocol_factory precording(std::shared_ptr<plog> log,
                            std::function<void(precorder&)> setup = {}) {
  return [log, setup] {
    auto p = std::make_unique<precorder>(log);
    if (setup)
      setup(*p);
    return p;
  };
}

// Children of this process in the zombie state.
size_t zombies() {
  size_t n = 0;
  auto self = std::to_string(::getpid());
  if (auto* dir = opendir("/proc")) {
    while (auto* e = readdir(dir)) {
      std::ifstream f{std::string{"/proc/"} + e->d_name + "/stat"};
      std::string line;
      if (!std::getline(f, line))
        continue;
      auto close = line.rfind(')');
      if (close == std::string::npos)
        continue;
      std::istringstream rest{line.substr(close + 2)};
      std::string state;
      std::string ppid;
      rest >> state >> ppid;
      if (state == "Z" && ppid == self)
        ++n;
    }
    closedir(dir);
  }
  return n;
}

} // namespace

SCENARIO("a child's output, exit and close come in asyncio's order") {
  auto log = std::make_shared<plog>();
  with_runtime([&](runtime& rt) {
    auto t = rt.subprocess_exec(precording(log),
                                {"sh", "-c", "echo out; echo err >&2"});
    REQUIRE(t);
    CHECK(t->get_pid() > 0);
    REQUIRE(log->wait_for("connection_lost"));
    auto ev = log->events();
    CHECK(ev.front() == "connection_made");
    CHECK(ev.back() == "connection_lost");
    CHECK(std::count(ev.begin(), ev.end(), "process_exited") == 1);
    CHECK(std::count(ev.begin(), ev.end(), "pipe_connection_lost 1") == 1);
    CHECK(std::count(ev.begin(), ev.end(), "pipe_connection_lost 2") == 1);
    // Per pipe: data, then its pipe_connection_lost.
    auto last_data1 = std::find(ev.rbegin(), ev.rend(), "pipe_data_received 1");
    auto lost1 = std::find(ev.rbegin(), ev.rend(), "pipe_connection_lost 1");
    CHECK(last_data1 > lost1); // reverse iterators: later is smaller
    {
      std::lock_guard<journal> guard{*log};
      CHECK(log->out == "out\n");
      CHECK(log->err == "err\n");
      for (auto& e : log->pipe_lost)
        CHECK(e == caf::none);
    }
    CHECK(log->lost_reason() == caf::none);
    CHECK(t->get_returncode() == 0);
    CHECK(caf::get<int64_t>(*t->get_extra_info("subprocess")) == t->get_pid());
  });
  CHECK(zombies() == 0);
}

SCENARIO("stdin is a write pipe transport; stdout and stderr read pipes") {
  auto log = std::make_shared<plog>();
  with_runtime([&](runtime& rt) {
    auto t = rt.subprocess_exec(precording(log), {"cat"});
    REQUIRE(t);
    REQUIRE(log->wait_for("connection_made"));
    auto in = t->get_pipe_transport(0);
    REQUIRE(in);
    CHECK(in.can_write_eof());
    CHECK(t->get_pipe_transport(1));
    CHECK(t->get_pipe_transport(2));
    CHECK_FALSE(t->get_pipe_transport(3));
    CHECK(code_of(t->write(to_bytes("x"))) == errc::not_supported);
    CHECK_FALSE(t->can_write_eof());
    CHECK_FALSE(t->get_returncode());
    CHECK(in.write(to_bytes("through cat")) == caf::none);
    in.close();
    REQUIRE(log->wait_for("connection_lost"));
    for (int fd = 0; fd < 3; ++fd) {
      INFO("fd " << fd);
      REQUIRE(t->get_pipe_transport(fd));
      CHECK(t->get_pipe_transport(fd).is_closing());
    }
    std::lock_guard<journal> guard{*log};
    CHECK(log->out == "through cat");
    CHECK(t->get_returncode() == 0);
  });
}

SCENARIO("stderr merged into stdout, and streams that are not pipes") {
  auto log = std::make_shared<plog>();
  with_runtime([&](runtime& rt) {
    subprocess_options opts;
    opts.std_err = subprocess_stdio::stdout_merge;
    opts.std_in = subprocess_stdio::devnull;
    auto t = rt.subprocess_shell(precording(log), "echo a; echo b >&2; cat",
                                 opts);
    REQUIRE(t);
    REQUIRE(log->wait_for("connection_made"));
    // The child may be gone already; the pipes stay either way.
    CHECK_FALSE(t->get_pipe_transport(0));
    CHECK(t->get_pipe_transport(1));
    CHECK_FALSE(t->get_pipe_transport(2));
    REQUIRE(log->wait_for("connection_lost"));
    // asyncio answers with the pipe transports after the end too, closed.
    CHECK_FALSE(t->get_pipe_transport(0));
    REQUIRE(t->get_pipe_transport(1));
    CHECK(t->get_pipe_transport(1).is_closing());
    CHECK_FALSE(t->get_pipe_transport(2));
    std::lock_guard<journal> guard{*log};
    CHECK(log->out == "a\nb\n");
    CHECK(log->err.empty());
  });
}

SCENARIO("return codes: the exit status, or minus the signal") {
  auto sig = GENERATE(0, SIGTERM, SIGKILL);
  INFO("signal " << sig);
  auto log = std::make_shared<plog>();
  with_runtime([&](runtime& rt) {
    // The signal goes to the child itself: `sleep` directly, not a shell
    // that might fork it (a grandchild would keep the pipes open).
    auto argv = sig == 0 ? std::vector<std::string>{"sh", "-c", "exit 3"}
                         : std::vector<std::string>{"sleep", "30"};
    auto t = rt.subprocess_exec(precording(log), argv);
    REQUIRE(t);
    REQUIRE(log->wait_for("connection_made"));
    if (sig == SIGTERM)
      CHECK(t->terminate() == caf::none);
    else if (sig == SIGKILL)
      CHECK(t->kill() == caf::none);
    REQUIRE(log->wait_for("process_exited"));
    CHECK(t->get_returncode() == (sig == 0 ? 3 : -sig));
    REQUIRE(log->wait_for("connection_lost"));
    // Reaped: no signal can go anywhere now.
    CHECK(code_of(t->send_signal(SIGTERM)) == errc::no_such_process);
    CHECK(code_of(t->kill()) == errc::no_such_process);
  });
  CHECK(zombies() == 0);
}

SCENARIO("close() kills a running child and leaves a finished one alone") {
  auto running = GENERATE(true, false);
  INFO((running ? "running" : "finished"));
  auto log = std::make_shared<plog>();
  with_runtime([&](runtime& rt) {
    auto argv = running ? std::vector<std::string>{"sleep", "30"}
                        : std::vector<std::string>{"sh", "-c", "exit 5"};
    auto t = rt.subprocess_exec(precording(log), argv);
    REQUIRE(t);
    if (!running)
      REQUIRE(log->wait_for("process_exited"));
    else
      REQUIRE(log->wait_for("connection_made"));
    t->close();
    CHECK(t->is_closing());
    REQUIRE(log->wait_for("connection_lost"));
    CHECK(t->get_returncode() == (running ? -SIGKILL : 5));
  });
  CHECK(zombies() == 0);
}

SCENARIO("a child that cannot start is an error reply, and no protocol "
         "message follows") {
  auto log = std::make_shared<plog>();
  with_runtime([&](runtime& rt) {
    auto missing = rt.subprocess_exec(precording(log),
                                      {"tact-no-such-program-here"});
    REQUIRE_FALSE(missing);
    CHECK(code_of(missing.error()) == errc::no_such_file);
    char path[] = "/tmp/tact-noexec-XXXXXX";
    int file = ::mkstemp(path);
    REQUIRE(file >= 0);
    REQUIRE(::write(file, "#!/bin/sh\n", 10) == 10);
    ::close(file); // mode 0600: not executable
    auto not_exec = rt.subprocess_exec(precording(log), {path});
    ::unlink(path);
    REQUIRE_FALSE(not_exec);
    CHECK(code_of(not_exec.error()) == errc::permission_denied);
    // Executable but not a program the kernel can run.
    char junk[] = "/tmp/tact-junk-XXXXXX";
    file = ::mkstemp(junk);
    REQUIRE(file >= 0);
    REQUIRE(::write(file, "\x7f" "ELFjunk", 8) == 8);
    ::fchmod(file, 0700);
    ::close(file);
    auto bad_format = rt.subprocess_exec(precording(log), {junk});
    ::unlink(junk);
    REQUIRE_FALSE(bad_format);
    subprocess_options bad_dir;
    bad_dir.cwd = "/no/such/directory";
    auto bad = rt.subprocess_exec(precording(log), {"true"}, bad_dir);
    REQUIRE_FALSE(bad);
    CHECK(code_of(bad.error()) == errc::no_such_file);
    std::this_thread::sleep_for(100ms);
    CHECK(log->events().empty());
  });
  CHECK(zombies() == 0);
}

SCENARIO("environment and working directory reach the child") {
  auto log = std::make_shared<plog>();
  with_runtime([&](runtime& rt) {
    subprocess_options opts;
    opts.env = std::map<std::string, std::string>{{"TACT_TEST", "yes"}};
    opts.cwd = "/tmp";
    auto t = rt.subprocess_exec(precording(log),
                                {"/bin/sh", "-c", "echo $TACT_TEST; pwd; "
                                                  "echo ${HOME:-nohome}"},
                                opts);
    REQUIRE(t);
    REQUIRE(log->wait_for("connection_lost"));
    auto ev = log->events();
    std::string seen;
    for (auto& e : ev)
      seen += e + "; ";
    INFO("events: " << seen << " returncode " << t->get_returncode().value_or(-999));
    std::lock_guard<journal> guard{*log};
    INFO("stderr: " << log->err);
    CHECK(log->out == "yes\n/tmp\nnohome\n");
  });
}

SCENARIO("200 short-lived children leave no fd and no zombie behind") {
  with_runtime([&](runtime& rt) {
    for (int i = 0; i < 200; ++i) {
      auto log = std::make_shared<plog>();
      auto t = rt.subprocess_exec(precording(log), {"true"});
      REQUIRE(t);
      REQUIRE(log->wait_for("connection_lost"));
      REQUIRE(t->get_returncode() == 0);
    }
  });
  CHECK(zombies() == 0);
}

SCENARIO("a runtime destroyed with a child running kills and reaps it") {
  auto log = std::make_shared<plog>();
  int pid = -1;
  with_runtime([&](runtime& rt) {
    auto t = rt.subprocess_exec(precording(log), {"sleep", "30"});
    REQUIRE(t);
    REQUIRE(log->wait_for("connection_made"));
    pid = t->get_pid();
  });
  CHECK(log->wait_for("connection_lost", 1s));
  CHECK(::kill(pid, 0) != 0); // gone, and reaped
  CHECK(zombies() == 0);
}

SCENARIO("a child that closes its stdout early goes on to the end") {
  auto log = std::make_shared<plog>();
  with_runtime([&](runtime& rt) {
    auto t = rt.subprocess_shell(precording(log),
                                 "echo first; exec >&-; sleep 0.5; "
                                 "echo later >&2; exit 4");
    REQUIRE(t);
    REQUIRE(log->wait_for("connection_lost"));
    auto ev = log->events();
    auto stdout_lost = std::find(ev.begin(), ev.end(), "pipe_connection_lost 1");
    auto exited = std::find(ev.begin(), ev.end(), "process_exited");
    REQUIRE(stdout_lost != ev.end());
    REQUIRE(exited != ev.end());
    CHECK(stdout_lost < exited);
    std::lock_guard<journal> guard{*log};
    CHECK(log->out == "first\n");
    CHECK(log->err == "later\n");
    CHECK(t->get_returncode() == 4);
  });
}

SCENARIO("a child flooding stdout to a protocol that does not keep up is "
         "held back by the read credit") {
  with_runtime(
    [&](runtime& rt) {
      // A behaviour that counts and never gives credit back.
      auto received = std::make_shared<std::atomic<size_t>>(0);
      auto lost = std::make_shared<std::atomic<bool>>(false);
      auto factory = [&rt, received, lost] {
        return rt.spawn_on_loop([=](caf::event_based_actor* self)
                                  -> caf::behavior {
          return {
            [=](connection_made&) {},
            [=](pipe_data_received& msg) { *received += msg.data.size(); },
            [=](pipe_connection_lost&) {},
            [=](process_exited) {},
            [=](connection_lost&) {
              *lost = true;
              self->quit();
            },
          };
        });
      };
      auto t = rt.subprocess_exec(factory, {"yes"});
      REQUIRE(t);
      REQUIRE(eventually([&] { return *received >= 64 * 1024; }));
      std::this_thread::sleep_for(300ms);
      auto held = received->load();
      // The credit is 64 KiB here; one read may cross it.
      CHECK(held <= 64 * 1024 + 64 * 1024);
      std::this_thread::sleep_for(200ms);
      CHECK(received->load() == held); // `yes` is blocked, not buffered
      t->close();
      REQUIRE(eventually([&] { return lost->load(); }));
      CHECK(t->get_returncode() == -SIGKILL);
    },
    nullptr, runtime_options{.read_credit = 64 * 1024});
  CHECK(zombies() == 0);
}

SCENARIO("a child that does not read its stdin pauses the protocol") {
  auto log = std::make_shared<plog>();
  with_runtime([&](runtime& rt) {
    auto t = rt.subprocess_exec(precording(log), {"sleep", "30"});
    REQUIRE(t);
    REQUIRE(log->wait_for("connection_made"));
    auto in = t->get_pipe_transport(0);
    REQUIRE(in);
    // A pipe holds 64 KiB; the rest waits in the transport, over the high
    // watermark: the subprocess protocol hears pause_writing.
    CHECK(in.write(bytes(1024 * 1024, 'x')) == caf::none);
    REQUIRE(log->wait_for("pause_writing"));
    CHECK(in.get_write_buffer_size() > 64 * 1024);
    t->close();
    REQUIRE(log->wait_for("connection_lost"));
    CHECK(t->get_returncode() == -SIGKILL);
  });
}

namespace {

// Fields 5 and 6 of /proc/PID/stat: the process group and the session.
std::pair<long, long> group_and_session(int pid) {
  std::ifstream f{"/proc/" + std::to_string(pid) + "/stat"};
  std::string line;
  std::getline(f, line);
  std::istringstream rest{line.substr(line.rfind(')') + 2)};
  std::string state;
  long ppid = 0;
  long pgrp = -1;
  long session = -1;
  rest >> state >> ppid >> pgrp >> session;
  return {pgrp, session};
}

bool process_gone(int pid) {
  std::ifstream f{"/proc/" + std::to_string(pid) + "/stat"};
  std::string line;
  if (!std::getline(f, line))
    return true;
  return line.substr(line.rfind(')') + 2, 1) == "Z";
}

} // namespace

SCENARIO("start_new_session, process_group and pass_fds shape the child "
         "(asyncio's options)") {
  auto log = std::make_shared<plog>();
  with_runtime([&](runtime& rt) {
    std::vector<std::string> sleeper{"sleep", "30"};
    SECTION("start_new_session: its own session and group") {
      subprocess_options opts;
      opts.start_new_session = true;
      auto t = rt.subprocess_exec(precording(log), sleeper, opts);
      REQUIRE(t);
      auto [pgrp, session] = group_and_session(t->get_pid());
      CHECK(pgrp == t->get_pid());
      CHECK(session == t->get_pid());
      CHECK_FALSE(t->terminate(signal_target::group));
      REQUIRE(log->wait_for("connection_lost"));
      CHECK(t->get_returncode() == -SIGTERM);
    }
    SECTION("process_group 0: a group of its own in our session") {
      subprocess_options opts;
      opts.process_group = 0;
      auto t = rt.subprocess_exec(precording(log), sleeper, opts);
      REQUIRE(t);
      auto [pgrp, session] = group_and_session(t->get_pid());
      CHECK(pgrp == t->get_pid());
      CHECK(session == ::getsid(0));
      t->kill();
      REQUIRE(log->wait_for("connection_lost"));
    }
    SECTION("without either, the group is ours: signalling it is refused") {
      auto t = rt.subprocess_exec(precording(log), sleeper);
      REQUIRE(t);
      CHECK(group_and_session(t->get_pid()).first == ::getpgid(0));
      CHECK(code_of(t->terminate(signal_target::group))
            == errc::invalid_argument);
      t->kill();
      REQUIRE(log->wait_for("connection_lost"));
    }
    SECTION("the group's signal reaches a grandchild after the child left") {
      subprocess_options opts;
      opts.process_group = 0;
      auto t = rt.subprocess_exec(precording(log),
                                  {"sh", "-c", "sleep 30 & echo $!"}, opts);
      REQUIRE(t);
      // The shell exits at once; the grandchild holds its stdout.
      int grandchild = 0;
      REQUIRE(eventually([&] {
        std::lock_guard<journal> guard{*log};
        if (log->out.find('\n') == std::string::npos)
          return false;
        grandchild = std::stoi(log->out);
        return true;
      }));
      REQUIRE(eventually([&] { return t->get_returncode().has_value(); }));
      CHECK(code_of(t->send_signal(SIGTERM)) == errc::no_such_process);
      CHECK_FALSE(log->wait_for("connection_lost", 300ms));
      CHECK_FALSE(t->kill(signal_target::group));
      REQUIRE(log->wait_for("connection_lost"));
      CHECK(eventually([&] { return process_gone(grandchild); }));
    }
    SECTION("pass_fds: the child writes to a descriptor it was given") {
      int fds[2];
      REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
      subprocess_options opts;
      opts.pass_fds = {fds[1]};
      auto t = rt.subprocess_exec(
        precording(log),
        {"sh", "-c", "echo passed >&" + std::to_string(fds[1])}, opts);
      REQUIRE(t);
      ::close(fds[1]);
      char buf[16] = {};
      CHECK(::read(fds[0], buf, sizeof(buf)) == 7);
      CHECK(std::string{buf} == "passed\n");
      ::close(fds[0]);
      REQUIRE(log->wait_for("connection_lost"));
      CHECK(t->get_returncode() == 0);
    }
    SECTION("wrong options are errors that name them") {
      subprocess_options both;
      both.start_new_session = true;
      both.process_group = 0;
      auto a = rt.subprocess_exec(precording(log), {"true"}, both);
      REQUIRE_FALSE(a);
      CHECK(code_of(a.error()) == errc::invalid_argument);
      subprocess_options negative;
      negative.process_group = -1;
      auto b = rt.subprocess_exec(precording(log), {"true"}, negative);
      REQUIRE_FALSE(b);
      CHECK_THAT(describe(b.error()), Catch::Contains("process_group"));
      subprocess_options closed;
      closed.pass_fds = {1 << 20};
      auto c = rt.subprocess_exec(precording(log), {"true"}, closed);
      REQUIRE_FALSE(c);
      CHECK_THAT(describe(c.error()), Catch::Contains("pass_fds"));
    }
  });
}
