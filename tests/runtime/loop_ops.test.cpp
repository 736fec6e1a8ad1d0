// The loop's operations without blocking: connect (TCP, Unix, TLS through
// the same path), spawn_process, and name resolution on the loop (c-ares
// against a DNS responder run by the test). Actors ask `runtime::loop()`
// and are answered; no thread is taken per operation, which the tests
// check by sampling the process's thread count while they run.

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstring>
#include <mutex>
#include <future>
#include <stdexcept>
#include <thread>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <caf/event_based_actor.hpp>
#include <caf/scoped_actor.hpp>

#include "support/harness.hpp"
#include "tact/runtime/errc.hpp"

using namespace tact;
using namespace tact::test;
using namespace std::chrono_literals;

namespace {

// The highest thread count seen while it runs.
class thread_peak {
public:
  thread_peak() : thread_([this] {
      while (!stop_) {
        auto n = thread_count();
        auto seen = peak_.load();
        while (n > seen && !peak_.compare_exchange_weak(seen, n)) {
        }
        std::this_thread::sleep_for(1ms);
      }
    }) {
    // Counted as soon as it runs.
    eventually([this] { return peak_.load() > 0; });
  }

  ~thread_peak() {
    stop_ = true;
    thread_.join();
  }

  [[nodiscard]] size_t peak() const {
    return peak_.load();
  }

  void reset() {
    peak_ = thread_count();
  }

private:
  std::atomic<bool> stop_{false};
  std::atomic<size_t> peak_{0};
  std::thread thread_;
};

// Asks the loop from a thread of the test's own (a scoped actor).
template <class T = transport>
caf::expected<T> ask(runtime& rt, caf::message msg,
                     std::chrono::milliseconds timeout = 10s) {
  caf::scoped_actor self{rt.system()};
  caf::expected<T> result{caf::error{}};
  self->request(rt.loop(), timeout, std::move(msg))
    .receive([&](T& t) { result = t; },
             [&](caf::error& err) { result = std::move(err); });
  return result;
}

protocol_factory quiet() {
  return [] { return std::make_unique<protocol>(); };
}

protocol_factory quiet_child() {
  return [] { return std::make_unique<subprocess_protocol>(); };
}

// A server in a child process that accepts and holds every connection,
// so that this process has one descriptor per connection only.
class holding_server {
public:
  holding_server() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr))
            == 0);
    REQUIRE(::listen(fd_, 4096) == 0);
    socklen_t len = sizeof(addr);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port = ntohs(addr.sin_port);
    pid_ = ::fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      // Accepts until killed; async-signal-safe calls only.
      for (;;) {
        auto c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (c < 0 && errno != EINTR && errno != ECONNABORTED)
          ::pause();
      }
    }
    ::close(fd_);
  }

  ~holding_server() {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }

  uint16_t port = 0;

private:
  int fd_ = -1;
  pid_t pid_ = -1;
};

// A DNS server on 127.0.0.1 for the resolver's tests: answers every A
// question with 127.0.0.1 and every AAAA question with ::1 (names starting
// with "dual") or nothing, counting the questions; or answers nothing at
// all (`mute`), as an unreachable server.
class dns_responder {
public:
  explicit dns_responder(bool mute = false) : mute_(mute) {
    fd_ = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr))
            == 0);
    socklen_t len = sizeof(addr);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port = ntohs(addr.sin_port);
    ::pipe2(stop_, O_CLOEXEC);
    thread_ = std::thread([this] { run(); });
  }

  ~dns_responder() {
    char one = 1;
    [[maybe_unused]] auto n = ::write(stop_[1], &one, 1);
    thread_.join();
    ::close(fd_);
    ::close(stop_[0]);
    ::close(stop_[1]);
  }

  [[nodiscard]] std::string server() const {
    return "127.0.0.1:" + std::to_string(port);
  }

  std::atomic<size_t> questions{0};
  uint16_t port = 0;

private:
  void run() {
    pollfd fds[2] = {{fd_, POLLIN, 0}, {stop_[0], POLLIN, 0}};
    unsigned char buf[512];
    for (;;) {
      ::poll(fds, 2, -1);
      if (fds[1].revents != 0)
        return;
      sockaddr_storage from{};
      socklen_t len = sizeof(from);
      auto n = ::recvfrom(fd_, buf, sizeof(buf), 0,
                          reinterpret_cast<sockaddr*>(&from), &len);
      if (n < 12 || mute_)
        continue;
      ++questions;
      // The question: labels up to the empty one, then type and class.
      size_t i = 12;
      while (i < static_cast<size_t>(n) && buf[i] != 0)
        i += buf[i] + 1u;
      if (i + 5 > static_cast<size_t>(n))
        continue;
      bool dual = buf[12] >= 4 && std::memcmp(buf + 13, "dual", 4) == 0;
      auto qtype = static_cast<unsigned>(buf[i + 1] << 8 | buf[i + 2]);
      size_t end = i + 5;
      std::vector<unsigned char> out(buf, buf + end);
      out[2] = 0x81; // a response, recursion desired
      out[3] = 0x80; // recursion available, no error
      out[6] = out[7] = 0; // answers, set below
      out[8] = out[9] = out[10] = out[11] = 0;
      auto answer = [&](unsigned type, const unsigned char* data,
                        size_t size) {
        out[7] = 1;
        unsigned char rr[] = {0xC0, 0x0C, 0, static_cast<unsigned char>(type),
                              0, 1, 0, 0, 0, 60, 0,
                              static_cast<unsigned char>(size)};
        out.insert(out.end(), rr, rr + sizeof(rr));
        out.insert(out.end(), data, data + size);
      };
      if (qtype == 1) {
        unsigned char v4[] = {127, 0, 0, 1};
        answer(1, v4, 4);
      } else if (qtype == 28 && dual) {
        unsigned char v6[16] = {};
        v6[15] = 1;
        answer(28, v6, 16);
      }
      ::sendto(fd_, out.data(), out.size(), 0,
               reinterpret_cast<sockaddr*>(&from), len);
    }
  }

  bool mute_;
  int fd_ = -1;
  int stop_[2] = {-1, -1};
  std::thread thread_;
};

// A listener whose accept queue is full: what connects to it waits
// without an answer, as from a host that drops SYNs.
class black_hole {
public:
  explicit black_hole(int family) {
    fd_ = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_storage addr{};
    socklen_t len;
    if (family == AF_INET) {
      auto* a = reinterpret_cast<sockaddr_in*>(&addr);
      a->sin_family = AF_INET;
      a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      len = sizeof(sockaddr_in);
    } else {
      auto* a = reinterpret_cast<sockaddr_in6*>(&addr);
      a->sin6_family = AF_INET6;
      a->sin6_addr = in6addr_loopback;
      len = sizeof(sockaddr_in6);
    }
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), len) == 0);
    REQUIRE(::listen(fd_, 0) == 0);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port = ntohs(family == AF_INET
                   ? reinterpret_cast<sockaddr_in*>(&addr)->sin_port
                   : reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port);
    // One connection fills a queue of 0 (the kernel allows one more).
    for (int i = 0; i < 2; ++i) {
      auto c = ::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                        0);
      ::connect(c, reinterpret_cast<sockaddr*>(&addr), len);
      fillers_.push_back(c);
    }
    std::this_thread::sleep_for(50ms);
  }

  ~black_hole() {
    for (auto c : fillers_)
      ::close(c);
    ::close(fd_);
  }

  uint16_t port = 0;

private:
  int fd_ = -1;
  std::vector<int> fillers_;
};

} // namespace

SCENARIO("a behaviour connects through the loop and is answered after "
         "connection_made") {
  auto k = GENERATE(kind::tcp, kind::unix_socket);
  with_runtime([&](runtime& rt) {
    auto server_log = std::make_shared<journal>();
    auto l = listen(rt, k, recording(server_log));
    auto client_log = std::make_shared<journal>();
    std::atomic<bool> made_first{false};
    std::atomic<bool> answered{false};
    loop_ops::connect req{recording(client_log)};
    if (k == kind::tcp) {
      req.host = "127.0.0.1";
      req.port = l.port;
    } else {
      req.path = l.unix_path;
    }
    auto asker = rt.spawn_on_loop([&](caf::event_based_actor* self) {
      self->request(rt.loop(), caf::infinite, req)
        .then(
          [&, self](transport& t) {
            made_first = client_log->count("connection_made") == 1;
            t.write(to_bytes("from a behaviour"));
            answered = true;
            self->quit();
          },
          [&, self](caf::error&) { self->quit(); });
      return caf::behavior{[](int) {}};
    });
    REQUIRE(eventually([&] { return answered.load(); }));
    CHECK(made_first);
    REQUIRE(server_log->wait(
      [](journal& j) { return j.data_size_unlocked() >= 16; }));
    CHECK(server_log->data() == "from a behaviour");
    l.srv.close();
  });
}

SCENARIO("a failed connect is an error reply and makes no protocol") {
  with_runtime([&](runtime& rt) {
    // A port nothing listens on: bind one and close it.
    auto fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    socklen_t len = sizeof(addr);
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    ::close(fd);
    auto log = std::make_shared<journal>();
    auto t = ask(rt, caf::make_message(loop_ops::connect{
                       recording(log), "127.0.0.1", ntohs(addr.sin_port)}));
    REQUIRE_FALSE(t);
    CHECK(t.error() == make_error(errc::connection_refused));
    auto u = ask(rt, caf::make_message(loop_ops::connect{
                       recording(log), "", 0, "/nonexistent/tact.sock"}));
    REQUIRE_FALSE(u);
    CHECK(u.error() == make_error(errc::no_such_file));
    CHECK(log->count("connection_made") == 0);
  });
}

SCENARIO("connect_timeout ends a connect that gets no answer") {
  with_runtime([&](runtime& rt) {
    black_hole hole{AF_INET};
    loop_ops::connect req{quiet(), "127.0.0.1", hole.port};
    req.options.connect_timeout = 300ms;
    auto start = std::chrono::steady_clock::now();
    auto t = ask(rt, caf::make_message(req));
    auto took = std::chrono::steady_clock::now() - start;
    REQUIRE_FALSE(t);
    CHECK(t.error() == make_error(errc::timed_out));
    CHECK(took >= 290ms);
    CHECK(took < 3s);
  });
}

SCENARIO("a behaviour opens 10,000 connections and starts 200 processes "
         "without taking a thread for any") {
  holding_server server;
  thread_peak peak;
  with_runtime([&](runtime& rt) {
    // The loop actor, the spawning thread and anything else started
    // lazily exist before counting.
    REQUIRE(ask(rt, caf::make_message(
                      loop_ops::connect{quiet(), "127.0.0.1", server.port})));
    REQUIRE(ask(rt, caf::make_message(
                      loop_ops::spawn_process{quiet_child(), {"true"}})));
    auto before = thread_count();
    peak.reset();
    constexpr int connections = 10000;
    constexpr int processes = 200;
    constexpr int window = 200;
    std::atomic<int> connected{0};
    std::atomic<int> started{0};
    std::atomic<int> failed{0};
    std::vector<transport> open;
    std::mutex open_mtx;
    // Runs on the loop only: asks for the next connection or process.
    int asked = 0;
    std::function<void()> next;
    auto driver = rt.spawn_on_loop([&](caf::event_based_actor* self) {
      next = [&, self] {
        if (asked >= connections + processes)
          return;
        auto i = asked++;
        auto is_child = i >= connections;
        auto on_answer = [&, is_child](transport& t) {
          {
            std::lock_guard<std::mutex> guard{open_mtx};
            open.push_back(t);
          }
          ++(is_child ? started : connected);
          next();
        };
        auto on_error = [&](caf::error&) {
          ++failed;
          next();
        };
        if (i < connections)
          self->request(rt.loop(), caf::infinite,
                        loop_ops::connect{quiet(), "127.0.0.1", server.port})
            .then(on_answer, on_error);
        else
          self->request(rt.loop(), caf::infinite,
                        loop_ops::spawn_process{quiet_child(), {"true"}})
            .then(on_answer, on_error);
      };
      for (int i = 0; i < window; ++i)
        next();
      return caf::behavior{[](int) {}};
    });
    REQUIRE(eventually(
      [&] { return connected + started + failed == connections + processes; },
      120s));
    CHECK(failed == 0);
    CHECK(connected == connections);
    CHECK(started == processes);
    INFO("threads before " << before << ", at most " << peak.peak()
                           << " while connecting");
    CHECK(peak.peak() <= before + 2);
    caf::anon_send_exit(driver, caf::exit_reason::user_shutdown);
    std::lock_guard<std::mutex> guard{open_mtx};
    for (auto& t : open)
      t.abort();
  });
}

SCENARIO("names are resolved on the loop: 1,000 lookups at once, no thread "
         "each, answers cached") {
  dns_responder dns;
  runtime_options opts;
  opts.resolver.servers = {dns.server()};
  thread_peak peak;
  with_runtime(
    [&](runtime& rt) {
      auto log = std::make_shared<journal>();
      auto l = listen(rt, kind::tcp, recording(log));
      REQUIRE(ask(rt, caf::make_message(
                        loop_ops::connect{quiet(), "warm.tact.test", l.port})));
      auto before = thread_count();
      peak.reset();
      constexpr int names = 1000;
      std::atomic<int> ok{0};
      std::atomic<int> failed{0};
      std::vector<transport> open;
      std::mutex open_mtx;
      // Each loop has its resolver and its cache: both rounds on one loop.
      auto round = [&] {
        auto driver = rt.spawn_on_loop(0, [&](caf::event_based_actor* self) {
          for (int i = 0; i < names; ++i)
            self
              ->request(rt.loop(), caf::infinite,
                        loop_ops::connect{quiet(),
                                          "h" + std::to_string(i)
                                            + ".tact.test",
                                          l.port})
              .then(
                [&](transport& t) {
                  std::lock_guard<std::mutex> guard{open_mtx};
                  open.push_back(t);
                  ++ok;
                },
                [&](caf::error& err) {
                  if (failed++ == 0)
                    WARN("first failure: " << to_string(err));
                });
          return caf::behavior{[](int) {}};
        });
        REQUIRE(eventually([&] { return ok + failed == names; }, 60s));
        caf::anon_send_exit(driver, caf::exit_reason::user_shutdown);
      };
      round();
      CHECK(failed == 0);
      CHECK(ok == names);
      INFO("threads before " << before << ", at most " << peak.peak());
      CHECK(peak.peak() <= before + 2);
      // A and AAAA for each name, once.
      auto asked = dns.questions.load();
      CHECK(asked >= names);
      // Again: every answer comes from the cache.
      ok = 0;
      round();
      CHECK(ok == names);
      CHECK(dns.questions.load() == asked);
      std::lock_guard<std::mutex> guard{open_mtx};
      for (auto& t : open)
        t.abort();
      l.srv.close();
    },
    nullptr, opts);
}

SCENARIO("a name no server answers for fails with a clear error in time") {
  dns_responder mute{true};
  runtime_options opts;
  opts.resolver.servers = {mute.server()};
  opts.resolver.timeout = 200ms;
  opts.resolver.tries = 1;
  with_runtime(
    [&](runtime& rt) {
      auto start = std::chrono::steady_clock::now();
      auto t = ask(rt, caf::make_message(
                         loop_ops::connect{quiet(), "lost.tact.test", 80}));
      auto took = std::chrono::steady_clock::now() - start;
      REQUIRE_FALSE(t);
      CHECK(t.error() == make_error(errc::name_resolution_failed));
      auto text = to_string(t.error());
      INFO(text);
      CHECK(text.find("lost.tact.test") != std::string::npos);
      CHECK(text.find("no name server answered") != std::string::npos);
      CHECK(took < 3s);
      // The blocking form says the same.
      auto b = rt.create_connection(quiet(), "lost.tact.test", 80);
      REQUIRE_FALSE(b);
      CHECK(b.error() == make_error(errc::name_resolution_failed));
    },
    nullptr, opts);
}

SCENARIO("Happy Eyeballs: an address that never answers does not hold the "
         "connect back") {
  dns_responder dns;
  runtime_options opts;
  opts.resolver.servers = {dns.server()};
  with_runtime(
    [&](runtime& rt) {
      // The name has ::1 (a full queue: no answer) and 127.0.0.1, both on
      // one port.
      black_hole hole{AF_INET6};
      auto fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      addr.sin_port = htons(hole.port);
      if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
        ::close(fd);
        WARN("port " << hole.port << " is taken on 127.0.0.1; skipped");
        return;
      }
      ::listen(fd, 16);
      loop_ops::connect req{quiet(), "dual.tact.test", hole.port};
      req.options.connect_timeout = 2s;
      req.options.happy_eyeballs_delay = 100ms;
      auto start = std::chrono::steady_clock::now();
      auto t = ask(rt, caf::make_message(req));
      auto took = std::chrono::steady_clock::now() - start;
      REQUIRE(t);
      CHECK(took >= 90ms);
      CHECK(took < 1500ms);
      t->abort();
      // Without it, the first address (IPv6 first, as sorted) holds the
      // connect until the timeout.
      req.options.happy_eyeballs_delay.reset();
      req.options.connect_timeout = 400ms;
      auto u = ask(rt, caf::make_message(req));
      REQUIRE_FALSE(u);
      CHECK(u.error() == make_error(errc::timed_out));
      ::close(fd);
    },
    nullptr, opts);
}

SCENARIO("a protocol factory that throws is an error reply, on every "
         "asynchronous operation") {
  with_runtime([&](runtime& rt) {
    auto log = std::make_shared<journal>();
    auto l = listen(rt, kind::tcp, recording(log));
    protocol_factory throwing = []() -> std::unique_ptr<protocol> {
      throw std::runtime_error("no protocol today");
    };
    auto t = ask(rt, caf::make_message(
                       loop_ops::connect{throwing, "127.0.0.1", l.port}));
    REQUIRE_FALSE(t);
    CHECK(t.error() == make_error(errc::protocol_failed));
    CHECK(to_string(t.error()).find("no protocol today") != std::string::npos);
    protocol_factory throwing_child
      = []() -> std::unique_ptr<subprocess_protocol> {
      throw std::runtime_error("no child today");
    };
    auto c = ask(rt, caf::make_message(
                       loop_ops::spawn_process{throwing_child, {"sleep", "30"}}));
    REQUIRE_FALSE(c);
    CHECK(c.error() == make_error(errc::protocol_failed));
    // The child was killed and reaped: no zombie is left.
    CHECK(::waitpid(-1, nullptr, WNOHANG) <= 0);
    // The loop carries on.
    REQUIRE(ask(rt, caf::make_message(
                      loop_ops::connect{quiet(), "127.0.0.1", l.port})));
    l.srv.close();
  });
}

SCENARIO("shutdown ends connects under way with closed") {
  black_hole hole{AF_INET};
  auto answered = std::make_shared<std::promise<caf::expected<transport>>>();
  auto result = answered->get_future();
  {
    runtime rt;
    rt.connect(quiet(), "127.0.0.1", hole.port, {},
               [answered](caf::expected<transport> x) {
                 answered->set_value(std::move(x));
               });
    std::this_thread::sleep_for(100ms);
    auto start = std::chrono::steady_clock::now();
    rt.shutdown(std::chrono::milliseconds{0});
    REQUIRE(result.wait_for(2s) == std::future_status::ready);
    CHECK(std::chrono::steady_clock::now() - start < 2s);
  }
  auto x = result.get();
  REQUIRE_FALSE(x);
  CHECK(x.error() == make_error(errc::closed));
}

SCENARIO("a behaviour listens through the loop: names resolved there, "
         "errors answered, no thread per server") {
  dns_responder dns;
  runtime_options opts;
  opts.resolver.servers = {dns.server()};
  thread_peak peak;
  with_runtime(
    [&](runtime& rt) {
      auto log = std::make_shared<journal>();
      // A name only the test's resolver knows (127.0.0.1), a free port.
      auto srv = ask<server>(rt, caf::make_message(loop_ops::listen{
                                   recording(log), "srv.tact.test", 0}));
      REQUIRE(srv);
      CHECK(dns.questions.load() >= 1);
      CHECK(srv->urls()
            == std::vector<std::string>{"tcp://127.0.0.1:"
                                        + std::to_string(srv->port())});
      auto t = ask(rt, caf::make_message(
                         loop_ops::connect{quiet(), "127.0.0.1", srv->port()}));
      REQUIRE(t);
      t->write(to_bytes("through listen"));
      REQUIRE(log->wait(
        [](journal& j) { return j.data_size_unlocked() >= 14; }));
      CHECK(log->data() == "through listen");
      t->abort();
      // The port is taken: bind's error, as an answer.
      auto taken = ask<server>(rt, caf::make_message(loop_ops::listen{
                                     quiet(), "127.0.0.1", srv->port()}));
      REQUIRE_FALSE(taken);
      CHECK(taken.error() == make_error(errc::address_in_use));
      // Bad options and a name nobody knows are answers too.
      loop_ops::listen no_backlog{quiet(), "127.0.0.1", 0};
      no_backlog.options.backlog = 0;
      auto bad = ask<server>(rt, caf::make_message(no_backlog));
      REQUIRE_FALSE(bad);
      CHECK(bad.error() == make_error(errc::invalid_argument));
      // A Unix server.
      auto path = temp_socket_path();
      loop_ops::listen on_path{recording(log)};
      on_path.path = path;
      auto usrv = ask<server>(rt, caf::make_message(on_path));
      REQUIRE(usrv);
      CHECK(usrv->urls() == std::vector<std::string>{"unix://" + path});
      auto u = ask(rt, caf::make_message(
                         loop_ops::connect{quiet(), "", 0, path}));
      REQUIRE(u);
      u->abort();
      usrv->close();
      // 200 servers from one behaviour at once: no thread for any of them.
      auto before = thread_count();
      peak.reset();
      constexpr int servers = 200;
      std::atomic<int> ok{0};
      std::atomic<int> failed{0};
      std::vector<server> open;
      std::mutex open_mtx;
      auto driver = rt.spawn_on_loop([&](caf::event_based_actor* self) {
        for (int i = 0; i < servers; ++i)
          self
            ->request(rt.loop(), caf::infinite,
                      loop_ops::listen{quiet(),
                                       "s" + std::to_string(i) + ".tact.test",
                                       0})
            .then(
              [&](server& s) {
                std::lock_guard<std::mutex> guard{open_mtx};
                open.push_back(s);
                ++ok;
              },
              [&](caf::error& err) {
                if (failed++ == 0)
                  WARN("first failure: " << to_string(err));
              });
        return caf::behavior{[](int) {}};
      });
      REQUIRE(eventually([&] { return ok + failed == servers; }, 60s));
      caf::anon_send_exit(driver, caf::exit_reason::user_shutdown);
      CHECK(ok == servers);
      INFO("threads before " << before << ", at most " << peak.peak());
      CHECK(peak.peak() <= before + 2);
      std::lock_guard<std::mutex> guard{open_mtx};
      for (auto& s : open)
        s.close();
      srv->close();
    },
    nullptr, opts);
}
