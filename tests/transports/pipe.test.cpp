// asyncio's contract for the pipe transports (connect_read_pipe,
// connect_write_pipe), with
// real pipes (pipe2) whose other end the test holds.

#include <catch2/catch.hpp>

#include <thread>

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <unistd.h>

#include "support/harness.hpp"
#include "tact/runtime/messages.hpp"

using namespace tact;
using namespace tact::test;

namespace {

// A pipe; the test keeps the end the transport does not get.
struct test_pipe {
  int read_fd = -1;
  int write_fd = -1;

  test_pipe() {
    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    read_fd = fds[0];
    write_fd = fds[1];
  }

  ~test_pipe() {
    close_read();
    close_write();
  }

  void close_read() {
    if (read_fd >= 0)
      ::close(read_fd);
    read_fd = -1;
  }

  void close_write() {
    if (write_fd >= 0)
      ::close(write_fd);
    write_fd = -1;
  }

  // Hands the read end to a transport (which then owns it).
  int take_read() {
    auto fd = read_fd;
    read_fd = -1;
    return fd;
  }

  int take_write() {
    auto fd = write_fd;
    write_fd = -1;
    return fd;
  }

  void write_all(const std::string& data) {
    REQUIRE(::write(write_fd, data.data(), data.size())
            == static_cast<ssize_t>(data.size()));
  }

  // Reads until EOF or `timeout` without data.
  std::string read_all(bool* eof = nullptr,
                       std::chrono::milliseconds timeout = 5s) {
    std::string result;
    char buf[65536];
    for (;;) {
      pollfd p{read_fd, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0)
        break;
      auto n = ::read(read_fd, buf, sizeof(buf));
      if (n <= 0) {
        if (eof != nullptr)
          *eof = n == 0;
        return result;
      }
      result.append(buf, static_cast<size_t>(n));
    }
    if (eof != nullptr)
      *eof = false;
    return result;
  }
};

} // namespace

SCENARIO("a read pipe delivers data, then eof_received and connection_lost") {
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    test_pipe p;
    auto t = rt.connect_read_pipe(recording(j, [](recorder& r) {
      r.keep_open = true; // ignored: a read pipe ends at EOF
    }), p.take_read());
    REQUIRE(t);
    REQUIRE(j->wait_for("connection_made"));
    p.write_all("hello ");
    p.write_all("pipe");
    REQUIRE(j->wait([](journal& jr) { return jr.data_size_unlocked() == 10; }));
    p.close_write();
    REQUIRE(j->wait_for("connection_lost"));
    CHECK(j->data() == "hello pipe");
    CHECK(j->lost_reason() == caf::none);
    auto ev = j->events();
    REQUIRE(ev.size() >= 4);
    CHECK(ev.front() == "connection_made");
    CHECK(ev[ev.size() - 2] == "eof_received");
    CHECK(ev.back() == "connection_lost");
    CHECK(j->count("connection_lost") == 1);
  });
}

SCENARIO("a read pipe has extra info `pipe`, no write and no write_eof") {
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    test_pipe p;
    auto fd = p.take_read();
    auto t = rt.connect_read_pipe(recording(j), fd);
    REQUIRE(t);
    auto info = t->get_extra_info("pipe");
    REQUIRE(info);
    CHECK(caf::get<int64_t>(*info) == fd);
    CHECK_FALSE(t->get_extra_info("peername"));
    CHECK(code_of(t->write(to_bytes("x"))) == errc::not_supported);
    CHECK_FALSE(t->can_write_eof());
    CHECK(code_of(t->write_eof()) == errc::not_supported);
    t->close();
    t->close();
    CHECK(t->is_closing());
    REQUIRE(j->wait_for("connection_lost"));
    CHECK(j->count("connection_lost") == 1);
  });
}

SCENARIO("pipe transports take pipes, sockets and character devices only") {
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    // A regular file is refused, and stays the caller's.
    char path[] = "/tmp/tact-pipe-XXXXXX";
    int file = ::mkstemp(path);
    REQUIRE(file >= 0);
    ::unlink(path);
    CHECK(code_of(rt.connect_read_pipe(recording(j), file).error())
          == errc::invalid_argument);
    CHECK(code_of(rt.connect_write_pipe(recording(j), file).error())
          == errc::invalid_argument);
    CHECK(::close(file) == 0);
    // A character device: the master side of a pseudo-terminal.
    int master = ::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    REQUIRE(master >= 0);
    REQUIRE(::grantpt(master) == 0);
    REQUIRE(::unlockpt(master) == 0);
    int slave = ::open(::ptsname(master), O_RDWR | O_NOCTTY | O_CLOEXEC);
    REQUIRE(slave >= 0);
    auto t = rt.connect_read_pipe(recording(j), master);
    REQUIRE(t);
    REQUIRE(::write(slave, "tty", 3) == 3);
    REQUIRE(j->wait([](journal& jr) { return jr.data_size_unlocked() >= 3; }));
    CHECK(j->data().substr(0, 3) == "tty");
    t->close();
    REQUIRE(j->wait_for("connection_lost"));
    ::close(slave);
    // A character device epoll cannot watch (/dev/null) is an error reply,
    // and no protocol is made.
    auto jn = std::make_shared<journal>();
    int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    REQUIRE(null >= 0);
    auto n = rt.connect_read_pipe(recording(jn), null);
    REQUIRE_FALSE(n);
    CHECK(code_of(n.error()) == errc::permission_denied);
    CHECK(::close(null) == 0);
    std::this_thread::sleep_for(50ms);
    CHECK(jn->events().empty());
    // A socket.
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    auto j2 = std::make_shared<journal>();
    auto s = rt.connect_read_pipe(recording(j2), sv[0]);
    REQUIRE(s);
    REQUIRE(::write(sv[1], "sock", 4) == 4);
    REQUIRE(j2->wait([](journal& jr) { return jr.data_size_unlocked() == 4; }));
    ::close(sv[1]);
    REQUIRE(j2->wait_for("connection_lost"));
    CHECK(j2->data() == "sock");
  });
}

SCENARIO("a read pipe paused in connection_made reads nothing until resumed") {
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    test_pipe p;
    p.write_all("early");
    auto t = rt.connect_read_pipe(recording(j, [](recorder& r) {
      r.on_made = [](transport& tr) { tr.pause_reading(); };
    }), p.take_read());
    REQUIRE(t);
    REQUIRE(j->wait_for("connection_made"));
    CHECK_FALSE(j->wait_for("data_received", 1, 200ms));
    t->resume_reading();
    t->resume_reading();
    REQUIRE(j->wait_for("data_received"));
    CHECK(j->data() == "early");
    t->close();
    REQUIRE(j->wait_for("connection_lost"));
  });
}

SCENARIO("a read pipe's protocol callback that throws ends it") {
  auto j = std::make_shared<journal>();
  std::vector<std::string> warnings;
  with_runtime(
    [&](runtime& rt) {
      test_pipe p;
      auto t = rt.connect_read_pipe(recording(j, [](recorder& r) {
        r.on_data = [](transport&, const bytes&) {
          throw std::runtime_error("bad input");
        };
      }), p.take_read());
      REQUIRE(t);
      p.write_all("x");
      REQUIRE(j->wait_for("connection_lost"));
      CHECK(code_of(j->lost_reason()) == errc::protocol_failed);
    },
    &warnings);
  CHECK(warnings.size() == 1);
}

SCENARIO("a write pipe writes; close() drains then ends, like write_eof()") {
  auto use_eof = GENERATE(false, true);
  INFO((use_eof ? "write_eof" : "close"));
  auto j = std::make_shared<journal>();
  auto payload = big(1024 * 1024);
  with_runtime([&](runtime& rt) {
    test_pipe p;
    auto wfd = p.take_write();
    auto t = rt.connect_write_pipe(recording(j), wfd);
    REQUIRE(t);
    REQUIRE(j->wait_for("connection_made"));
    CHECK(t->can_write_eof());
    CHECK(caf::get<int64_t>(*t->get_extra_info("pipe")) == wfd);
    CHECK(t->write(to_bytes(payload)) == caf::none);
    if (use_eof)
      CHECK(t->write_eof() == caf::none);
    else
      t->close();
    // Either way the transport is closing (asyncio: write_eof is close).
    CHECK(t->is_closing());
    // A write after close is dropped and counted.
    if (!use_eof) {
      CHECK(t->write(to_bytes("late")) == caf::none);
      CHECK(t->dropped_writes() == 1);
    }
    bool eof = false;
    auto got = p.read_all(&eof);
    CHECK(eof);
    CHECK(got.size() == payload.size());
    CHECK(got == payload);
    REQUIRE(j->wait_for("connection_lost"));
    CHECK(j->lost_reason() == caf::none);
    // The 1 MiB went over the high watermark once, and the protocol was
    // resumed once the buffer was empty.
    CHECK(j->count("pause_writing") == 1);
    CHECK(j->count("resume_writing") == 1);
  });
}

SCENARIO("a write pipe's abort drops the buffer") {
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    test_pipe p;
    auto t = rt.connect_write_pipe(recording(j), p.take_write());
    REQUIRE(t);
    REQUIRE(j->wait_for("connection_made"));
    CHECK(t->write(to_bytes(big(1024 * 1024))) == caf::none);
    REQUIRE(j->wait_for("pause_writing"));
    t->abort();
    t->abort();
    REQUIRE(j->wait_for("connection_lost"));
    CHECK(j->lost_reason() == caf::none);
    bool eof = false;
    auto got = p.read_all(&eof);
    CHECK(eof);
    CHECK(got.size() < 1024 * 1024);
    CHECK(j->count("connection_lost") == 1);
  });
}

SCENARIO("the read end going away ends a write pipe: broken_pipe only with "
         "data still buffered") {
  auto buffered = GENERATE(false, true);
  INFO((buffered ? "data buffered" : "nothing buffered"));
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    test_pipe p;
    auto t = rt.connect_write_pipe(recording(j), p.take_write());
    REQUIRE(t);
    REQUIRE(j->wait_for("connection_made"));
    if (buffered) {
      CHECK(t->write(to_bytes(big(1024 * 1024))) == caf::none);
      REQUIRE(j->wait_for("pause_writing"));
    }
    p.close_read();
    REQUIRE(j->wait_for("connection_lost"));
    if (buffered)
      CHECK(code_of(j->lost_reason()) == errc::broken_pipe);
    else
      CHECK(j->lost_reason() == caf::none);
    CHECK(t->is_closing());
    CHECK_FALSE(t->get_protocol());
  });
}

SCENARIO("a write to a pipe whose reader is gone is broken_pipe, not SIGPIPE") {
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    test_pipe p;
    auto t = rt.connect_write_pipe(recording(j), p.take_write());
    REQUIRE(t);
    REQUIRE(j->wait_for("connection_made"));
    p.close_read();
    // Whichever comes first, the hang-up or the write, the process lives
    // and the transport reports once.
    (void) t->write(to_bytes("into the void"));
    REQUIRE(j->wait_for("connection_lost"));
    auto code = code_of(j->lost_reason());
    CHECK((code == errc::none || code == errc::broken_pipe));
    CHECK(j->count("connection_lost") == 1);
  });
}

SCENARIO("write pipe limits follow asyncio's rules") {
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    test_pipe p;
    auto t = rt.connect_write_pipe(recording(j), p.take_write());
    REQUIRE(t);
    using limits = std::pair<size_t, size_t>;
    CHECK(t->get_write_buffer_limits() == limits{16384, 65536});
    CHECK_FALSE(t->set_write_buffer_limits(1000));
    CHECK(t->get_write_buffer_limits() == limits{250, 1000});
    CHECK(code_of(t->set_write_buffer_limits(10, 50)) == errc::invalid_argument);
    t->close();
    REQUIRE(j->wait_for("connection_lost"));
  });
}

SCENARIO("set_protocol on a read pipe reroutes; get_protocol is empty after") {
  auto j1 = std::make_shared<journal>();
  auto j2 = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    test_pipe p;
    auto t = rt.connect_read_pipe(recording(j1), p.take_read());
    REQUIRE(t);
    REQUIRE(j1->wait_for("connection_made"));
    auto p2 = protocol_factory{recording(j2)}(rt.mux());
    t->set_protocol(p2);
    CHECK(t->get_protocol() == p2);
    p.write_all("second");
    REQUIRE(j2->wait_for("data_received"));
    p.close_write();
    REQUIRE(j2->wait_for("connection_lost"));
    CHECK(j1->count("data_received") == 0);
    CHECK_FALSE(t->get_protocol());
  });
}

SCENARIO("a FIFO works as a read pipe and as a write pipe") {
  auto j = std::make_shared<journal>();
  auto jw = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    auto path = temp_socket_path() + ".fifo";
    REQUIRE(::mkfifo(path.c_str(), 0600) == 0);
    // Non-blocking opens: the read end first, so the write end opens.
    int rfd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    REQUIRE(rfd >= 0);
    int wfd = ::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    REQUIRE(wfd >= 0);
    auto r = rt.connect_read_pipe(recording(j), rfd);
    REQUIRE(r);
    auto w = rt.connect_write_pipe(recording(jw), wfd);
    REQUIRE(w);
    CHECK(w->write(to_bytes("through a fifo")) == caf::none);
    w->close();
    REQUIRE(j->wait_for("connection_lost"));
    CHECK(j->data() == "through a fifo");
    CHECK(j->count("eof_received") == 1);
    REQUIRE(jw->wait_for("connection_lost"));
    CHECK(jw->lost_reason() == caf::none);
    ::unlink(path.c_str());
  });
}
