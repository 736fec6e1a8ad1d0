// loop.sendfile: a regular file's range sent on a transport, in order with
// the writes around it, counted in the write buffer, over sendfile(2) on
// TCP, Unix sockets and write pipes and in chunks over TLS. The peer is a
// plain blocking socket (or an OpenSSL endpoint, or the pipe's read end)
// that checks every byte.

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <random>
#include <string>
#include <thread>

#include <caf/scoped_actor.hpp>

#include "support/any_kind.hpp"
#include "support/harness.hpp"
#include "support/tls_support.hpp"
#include "tact/runtime/messages.hpp"
#include "tact/transports/framing.hpp"

using namespace tact;
using namespace tact::test;

namespace {

// A temporary regular file with random contents; removed with the object.
struct temp_file {
  explicit temp_file(size_t size) {
    char name[] = "/tmp/tact-sendfile-XXXXXX";
    fd = ::mkstemp(name);
    REQUIRE(fd >= 0);
    ::unlink(name);
    std::mt19937_64 gen{size};
    contents.resize(size);
    for (auto& c : contents)
      c = static_cast<char>(gen());
    size_t done = 0;
    while (done < size) {
      auto n = ::write(fd, contents.data() + done, size - done);
      REQUIRE(n > 0);
      done += static_cast<size_t>(n);
    }
  }

  ~temp_file() {
    ::close(fd);
  }

  temp_file(const temp_file&) = delete;
  temp_file& operator=(const temp_file&) = delete;

  int fd = -1;
  std::string contents;
};

constexpr size_t file_size = 8 * 1024 * 1024 + 123;

} // namespace

SCENARIO("sendfile sends a file's range between the writes around it") {
  auto k = any_kind();
  INFO("transport: " << name_of(k));
  temp_file file{file_size};
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    raw_listener l{k};
    auto [t, p] = l.connect(rt, recording(j));
    REQUIRE(t);
    REQUIRE(j->wait_for("connection_made"));
    const uint64_t offset = 1000;
    const uint64_t count = file_size - 5000;
    std::string expected = "before\n" + file.contents.substr(offset, count)
                           + "between\n" + file.contents + "after\n";
    std::string got;
    std::thread reader{[&, &p = p] { got = p.recv_n(expected.size(), 20s); }};
    REQUIRE_FALSE(t->write("before\n"));
    auto sent = rt.sendfile(*t, file.fd, offset, count);
    REQUIRE(sent);
    CHECK(*sent == count);
    REQUIRE_FALSE(t->write("between\n"));
    // The transport's own form, without waiting; the whole file.
    REQUIRE_FALSE(t->sendfile(file.fd));
    REQUIRE_FALSE(t->write("after\n"));
    reader.join();
    CHECK(got.size() == expected.size());
    CHECK(got == expected);
    t->close();
    REQUIRE(j->wait_for("connection_lost"));
    CHECK_FALSE(j->lost_reason());
  });
}

SCENARIO("a file's range counts in the write buffer: the protocol pauses "
         "while it waits and close() flushes it") {
  auto k = any_kind();
  INFO("transport: " << name_of(k));
  temp_file file{file_size};
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    raw_listener l{k};
    auto [t, p] = l.connect(rt, recording(j));
    REQUIRE(t);
    REQUIRE(j->wait_for("connection_made"));
    // The peer does not read: the kernel takes a few MiB at most.
    REQUIRE_FALSE(t->sendfile(file.fd));
    REQUIRE(j->wait_for("pause_writing"));
    CHECK(t->get_write_buffer_size() > 0);
    CHECK(t->get_write_buffer_size() <= file_size);
    REQUIRE_FALSE(t->write("tail"));
    t->close();
    CHECK(t->is_closing());
    // Closing waits for the file and the write after it.
    CHECK(j->count("connection_lost") == 0);
    bool eof = false;
    auto got = p.recv_all(&eof, 20s);
    CHECK(eof);
    CHECK(got.size() == file_size + 4);
    CHECK((got == file.contents + "tail"));
    REQUIRE(j->wait_for("connection_lost"));
    CHECK_FALSE(j->lost_reason());
    CHECK(j->count("resume_writing") == 1);
    CHECK(t->get_write_buffer_size() == 0);
  });
}

SCENARIO("sendfile refuses what it cannot send, with the reason") {
  temp_file file{4096};
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    raw_listener l{kind::tcp};
    auto [t, p] = l.connect(rt, recording(j));
    REQUIRE(t);
    REQUIRE(j->wait_for("connection_made"));
    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    CHECK(code_of(t->sendfile(fds[0])) == errc::invalid_argument);
    CHECK(code_of(rt.sendfile(*t, fds[0]).error()) == errc::invalid_argument);
    ::close(fds[0]);
    ::close(fds[1]);
    CHECK(code_of(t->sendfile(-1)) == errc::invalid_argument);
    CHECK(code_of(t->sendfile(file.fd, 4097)) == errc::invalid_argument);
    CHECK(code_of(t->sendfile(file.fd, 4000, 97)) == errc::invalid_argument);
    // An empty range at the end is fine and sends nothing.
    auto none = rt.sendfile(*t, file.fd, 4096);
    REQUIRE(none);
    CHECK(*none == 0);
    CHECK(code_of(transport{}.sendfile(file.fd)) == errc::not_connected);
    REQUIRE_FALSE(t->write_eof());
    CHECK(code_of(t->sendfile(file.fd)) == errc::write_after_eof);
    t->abort();
    REQUIRE(j->wait_for("connection_lost"));
  });
}

SCENARIO("sendfile is refused on datagrams and frames") {
  temp_file file{4096};
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    datagram_options opts;
    opts.local_addr = endpoint::inet("127.0.0.1", 0);
    auto udp = rt.create_datagram_endpoint(
      [] { return std::make_unique<datagram_protocol>(); }, opts);
    REQUIRE(udp);
    CHECK(code_of(udp->sendfile(file.fd)) == errc::not_supported);
    CHECK(code_of(rt.sendfile(*udp, file.fd).error()) == errc::not_supported);
    udp->close();
    auto fj = std::make_shared<journal>();
    auto f = framed(line_framing{}, recording(fj));
    REQUIRE(f);
    raw_listener l{kind::tcp};
    auto [t, p] = l.connect(rt, *f);
    REQUIRE(t);
    REQUIRE(fj->wait_for("connection_made"));
    auto framed_t = fj->handle();
    CHECK(code_of(framed_t.sendfile(file.fd)) == errc::not_supported);
    // A request that skips the handle's check is answered the same way.
    auto msg = make_sendfile(file.fd);
    REQUIRE(msg);
    caf::scoped_actor self{rt.system()};
    caf::error answer;
    self->request(framed_t.actor(), caf::infinite, std::move(*msg))
      .receive([](uint64_t) {}, [&](caf::error& err) { answer = err; });
    CHECK(code_of(answer) == errc::not_supported);
    framed_t.close();
    REQUIRE(fj->wait_for("connection_lost"));
  });
}

SCENARIO("a peer that resets during a file ends the connection and the "
         "sendfile with an error") {
  auto k = any_kind();
  INFO("transport: " << name_of(k));
  temp_file file{file_size};
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    raw_listener l{k};
    auto [t, p] = l.connect(rt, recording(j));
    REQUIRE(t);
    REQUIRE(j->wait_for("connection_made"));
    std::thread resetter{[&, &p = p] {
      p.recv_n(64 * 1024, 10s);
      p.reset();
    }};
    auto sent = rt.sendfile(*t, file.fd);
    resetter.join();
    REQUIRE_FALSE(sent);
    REQUIRE(j->wait_for("connection_lost"));
    auto code = code_of(j->lost_reason());
    CHECK((code == errc::connection_reset || code == errc::broken_pipe));
    // After the loss: dropped, and the blocking form fails.
    CHECK_FALSE(t->sendfile(file.fd));
    CHECK_FALSE(rt.sendfile(*t, file.fd));
  });
}

SCENARIO("a file that shrinks under its range ends the range early; the "
         "connection goes on") {
  temp_file file{file_size};
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    raw_listener l{kind::tcp};
    auto [t, p] = l.connect(rt, recording(j));
    REQUIRE(t);
    REQUIRE(j->wait_for("connection_made"));
    // Queued behind a write the peer does not read yet.
    REQUIRE_FALSE(t->write(big(4 * 1024 * 1024)));
    auto msg = make_sendfile(file.fd);
    REQUIRE(msg);
    REQUIRE(::ftruncate(file.fd, 100) == 0);
    std::string got;
    std::thread reader{[&, &p = p] {
      got = p.recv_n(4 * 1024 * 1024 + 100 + 4, 20s);
    }};
    caf::scoped_actor self{rt.system()};
    uint64_t answer = 0;
    caf::error failure;
    self->request(t->actor(), caf::infinite, std::move(*msg))
      .receive([&](uint64_t n) { answer = n; },
               [&](caf::error& err) { failure = err; });
    REQUIRE_FALSE(t->write("next"));
    reader.join();
    CHECK_FALSE(failure);
    CHECK(answer == 100);
    CHECK(got.size() == 4 * 1024 * 1024 + 104);
    CHECK(got.substr(4 * 1024 * 1024) == file.contents.substr(0, 100) + "next");
    // The transport takes "next" out of its count just after the kernel
    // took it (a thread adding up never sees bytes missing): the peer may
    // read them an instant before.
    CHECK(eventually([&t = t] { return t->get_write_buffer_size() == 0; }));
    t->close();
    REQUIRE(j->wait_for("connection_lost"));
    CHECK_FALSE(j->lost_reason());
  });
}

SCENARIO("sendfile into a write pipe") {
  temp_file file{file_size};
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    auto t = rt.connect_write_pipe(recording(j), fds[1]);
    REQUIRE(t);
    std::string got;
    std::thread reader{[&] {
      char buf[65536];
      for (;;) {
        auto n = ::read(fds[0], buf, sizeof(buf));
        if (n <= 0)
          break;
        got.append(buf, static_cast<size_t>(n));
      }
    }};
    auto sent = rt.sendfile(*t, file.fd, 7);
    REQUIRE(sent);
    CHECK(*sent == file_size - 7);
    t->close();
    reader.join();
    ::close(fds[0]);
    CHECK((got == file.contents.substr(7)));
    REQUIRE(j->wait_for("connection_lost"));
  });
}

SCENARIO("sendfile over TLS reads and writes the file in chunks, in order "
         "with the writes") {
  auto k = any_kind();
  INFO("transport: " << name_of(k));
  test_pki pki;
  tls_contexts ctxs{pki};
  temp_file file{file_size};
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    raw_listener l{k};
    auto [plain, p] = l.connect(rt, recording(j));
    REQUIRE(plain);
    REQUIRE(j->wait_for("connection_made"));
    tls_peer srv{p.release(), ctxs.server.native_handle(), true};
    std::string expected = "head" + file.contents.substr(3, file_size - 10)
                           + "tail";
    std::string got;
    std::thread peer_side{[&] {
      if (srv.handshake())
        got = srv.read_n(expected.size());
    }};
    tls_options opts;
    opts.server_hostname = "localhost";
    auto t = start_tls(*plain, plain->get_protocol(), ctxs.client, opts);
    REQUIRE(t);
    REQUIRE_FALSE(t->write("head"));
    auto sent = rt.sendfile(*t, file.fd, 3, file_size - 10);
    REQUIRE(sent);
    CHECK(*sent == file_size - 10);
    REQUIRE_FALSE(t->write("tail"));
    peer_side.join();
    CHECK(got.size() == expected.size());
    CHECK((got == expected));
    srv.send_close_notify();
    t->close();
    REQUIRE(j->wait_for("connection_lost"));
  });
}

SCENARIO("over TLS, close() after a file waits for it") {
  // With a write after the file, and with the file last.
  auto tail = GENERATE(std::string{"tail"}, std::string{});
  test_pki pki;
  tls_contexts ctxs{pki};
  temp_file file{file_size};
  auto j = std::make_shared<journal>();
  with_runtime([&](runtime& rt) {
    raw_listener l{kind::tcp};
    auto [plain, p] = l.connect(rt, recording(j));
    REQUIRE(plain);
    REQUIRE(j->wait_for("connection_made"));
    tls_peer srv{p.release(), ctxs.server.native_handle(), true};
    std::string got;
    bool clean = false;
    std::thread peer_side{[&] {
      if (srv.handshake())
        got = srv.read_all(&clean);
      srv.send_close_notify();
    }};
    tls_options opts;
    opts.server_hostname = "localhost";
    auto t = start_tls(*plain, plain->get_protocol(), ctxs.client, opts);
    REQUIRE(t);
    REQUIRE_FALSE(t->sendfile(file.fd));
    REQUIRE_FALSE(t->write(tail));
    t->close();
    CHECK(t->is_closing());
    // Dropped: it came after close().
    REQUIRE_FALSE(t->write("dropped"));
    peer_side.join();
    CHECK(clean);
    CHECK(got.size() == file_size + tail.size());
    CHECK((got == file.contents + tail));
    REQUIRE(j->wait_for("connection_lost"));
  });
}
