// A closed-loop TLS load client (OpenSSL, non-blocking, one epoll). Each of
// --conns slots runs one of three workloads, every echoed byte checked:
//
//   steady  a kept connection sends --size bytes and reads their echo,
//           again and again: requests per second, server CPU per request;
//   churn   a new connection per message, with a full handshake each, ended
//           with close_notify: connections per second, CPU per connection;
//   resume  as churn, each connection resuming the slot's last session
//           (a TLS 1.3 ticket): the same figures, and how many resumed.
//
// Prints key=value pairs; given --server-pid, the CPU time that process
// spent over the measured window (from /proc, as the plain clients do).
//
//   tls_load --url tcp://127.0.0.1:PORT [--mode steady|churn|resume]
//            [--conns 100] [--size 1024] [--warmup 1] [--duration 5]
//            [--server-pid PID]

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <sys/epoll.h>
#include <sys/resource.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "bench_common.hpp"

namespace {


enum class mode { steady, churn, resume };

struct options {
  std::string url;
  mode what = mode::steady;
  int conns = 100;
  size_t size = 1024;
  double warmup = 1;
  double duration = 5;
  int server_pid = 0;
};

[[noreturn]] void usage() {
  std::fprintf(stderr,
               "usage: tls_load --url tcp://HOST:PORT [--mode "
               "steady|churn|resume] [--conns N] [--size M] [--warmup S] "
               "[--duration S] [--server-pid PID]\n");
  std::exit(2);
}

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    std::string v = argv[i + 1];
    if (k == "--url")
      o.url = v;
    else if (k == "--mode")
      o.what = v == "steady"  ? mode::steady
               : v == "churn" ? mode::churn
               : v == "resume" ? mode::resume
                               : (usage(), mode::steady);
    else if (k == "--conns")
      o.conns = std::stoi(v);
    else if (k == "--size")
      o.size = std::stoul(v);
    else if (k == "--warmup")
      o.warmup = std::stod(v);
    else if (k == "--duration")
      o.duration = std::stod(v);
    else if (k == "--server-pid")
      o.server_pid = std::stoi(v);
    else
      usage();
  }
  if (o.url.rfind("tcp://", 0) != 0 || o.conns < 1 || o.size < 1)
    usage();
  return o;
}

sockaddr_in address_of(const std::string& url) {
  auto rest = url.substr(6);
  auto colon = rest.rfind(':');
  sockaddr_in in{};
  in.sin_family = AF_INET;
  if (colon == std::string::npos
      || inet_pton(AF_INET, rest.substr(0, colon).c_str(), &in.sin_addr) != 1)
    bench::die("bad url");
  in.sin_port = htons(static_cast<uint16_t>(std::atoi(rest.c_str() + colon + 1)));
  return in;
}

[[noreturn]] void die_ssl(const char* what) {
  char buf[256];
  std::fprintf(stderr, "%s: %s\n", what,
               ERR_error_string(ERR_get_error(), buf));
  std::exit(1);
}

struct slot {
  uint32_t id = 0;
  int fd = -1;
  SSL* ssl = nullptr;
  SSL_SESSION* session = nullptr; // resume: the last one of this slot
  bool handshaken = false;
  uint64_t serial = 0; // which message of this slot, for the pattern
  size_t sent = 0;
  size_t received = 0;
};

} // namespace

int main(int argc, char** argv) {
  auto o = parse(argc, argv);
  rlimit lim{};
  getrlimit(RLIMIT_NOFILE, &lim);
  lim.rlim_cur = lim.rlim_max;
  setrlimit(RLIMIT_NOFILE, &lim);
  auto addr = address_of(o.url);
  auto* ctx = SSL_CTX_new(TLS_client_method());
  if (ctx == nullptr)
    die_ssl("SSL_CTX_new");
  // A benchmark, not a client to trust: the server's certificate is not
  // checked.
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT);
  int ep = epoll_create1(0);
  std::vector<slot> slots(static_cast<size_t>(o.conns));
  std::vector<char> out(o.size);
  std::vector<char> in(64 * 1024);
  uint64_t done = 0; // requests (steady) or connections (churn, resume)
  uint64_t resumed = 0;
  uint64_t errors = 0;
  auto byte_at = [](const slot& s, size_t i) {
    return bench::pattern(s.id, s.serial * 7919 + i);
  };
  auto watch = [&](slot& s, uint32_t events, int op) {
    epoll_event ev{};
    ev.events = events;
    ev.data.ptr = &s;
    epoll_ctl(ep, op, s.fd, &ev);
  };
  auto open = [&](slot& s) {
    s.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s.fd < 0)
      bench::die("socket");
    int one = 1;
    setsockopt(s.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (::connect(s.fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0
        && errno != EINPROGRESS)
      bench::die("connect");
    s.ssl = SSL_new(ctx);
    SSL_set_fd(s.ssl, s.fd);
    SSL_set_connect_state(s.ssl);
    if (o.what == mode::resume && s.session != nullptr)
      SSL_set_session(s.ssl, s.session);
    s.handshaken = false;
    s.sent = 0;
    s.received = 0;
    watch(s, EPOLLOUT, EPOLL_CTL_ADD);
  };
  auto close_slot = [&](slot& s) {
    if (o.what == mode::resume) {
      if (SSL_session_reused(s.ssl))
        ++resumed;
      // Read after the echo, so the server's tickets have come.
      if (auto* next = SSL_get1_session(s.ssl)) {
        if (s.session != nullptr)
          SSL_SESSION_free(s.session);
        s.session = next;
      }
    }
    SSL_shutdown(s.ssl); // close_notify, without waiting for the peer's
    SSL_free(s.ssl);
    s.ssl = nullptr;
    ::close(s.fd);
    s.fd = -1;
  };
  // Moves slot `s` as far as it goes; false if it failed.
  auto step = [&](slot& s) -> bool {
    for (;;) {
      if (!s.handshaken) {
        auto rc = SSL_do_handshake(s.ssl);
        if (rc != 1) {
          auto err = SSL_get_error(s.ssl, rc);
          if (err == SSL_ERROR_WANT_READ) {
            watch(s, EPOLLIN, EPOLL_CTL_MOD);
            return true;
          }
          if (err == SSL_ERROR_WANT_WRITE) {
            watch(s, EPOLLOUT, EPOLL_CTL_MOD);
            return true;
          }
          return false;
        }
        s.handshaken = true;
      }
      if (s.sent < o.size) {
        for (size_t i = s.sent; i < o.size; ++i)
          out[i - s.sent] = byte_at(s, i);
        auto rc = SSL_write(s.ssl, out.data(), static_cast<int>(o.size - s.sent));
        if (rc <= 0) {
          auto err = SSL_get_error(s.ssl, rc);
          if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ) {
            watch(s, err == SSL_ERROR_WANT_WRITE ? EPOLLOUT : EPOLLIN,
                  EPOLL_CTL_MOD);
            return true;
          }
          return false;
        }
        s.sent += static_cast<size_t>(rc);
        continue;
      }
      auto rc = SSL_read(s.ssl, in.data(), static_cast<int>(in.size()));
      if (rc <= 0) {
        auto err = SSL_get_error(s.ssl, rc);
        if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
          watch(s, err == SSL_ERROR_WANT_READ ? EPOLLIN : EPOLLOUT,
                EPOLL_CTL_MOD);
          return true;
        }
        return false;
      }
      for (int k = 0; k < rc; ++k)
        if (in[static_cast<size_t>(k)]
            != byte_at(s, s.received + static_cast<size_t>(k)))
          ++errors;
      s.received += static_cast<size_t>(rc);
      if (s.received < o.size)
        continue;
      ++done;
      ++s.serial;
      if (o.what == mode::steady) {
        s.sent = 0;
        s.received = 0;
        continue;
      }
      close_slot(s);
      open(s);
      return true;
    }
  };
  for (size_t i = 0; i < slots.size(); ++i) {
    slots[i].id = static_cast<uint32_t>(i);
    open(slots[i]);
  }
  bench::window win{o.warmup, o.duration, o.server_pid};
  epoll_event events[512];
  for (bool started = false; win.running(started);) {
    if (started) {
      done = 0;
      resumed = 0;
    }
    int n = epoll_wait(ep, events, 512, 100);
    for (int i = 0; i < n; ++i) {
      auto& s = *static_cast<slot*>(events[i].data.ptr);
      if (!step(s)) {
        std::fprintf(stderr, "TLS connection of slot %u failed: %s\n", s.id,
                     ERR_error_string(ERR_get_error(), nullptr));
        return 1;
      }
    }
  }
  auto elapsed = win.elapsed();
  auto cpu = win.server_cpu();
  auto per = done > 0 && o.server_pid > 0
               ? cpu * 1e6 / static_cast<double>(done)
               : 0.0;
  const char* name = o.what == mode::steady  ? "steady"
                     : o.what == mode::churn ? "churn"
                                             : "resume";
  if (o.what == mode::steady)
    std::printf("mode=%s conns=%d size=%zu requests=%llu rps=%.0f "
                "mib_per_s=%.1f cpu_us_per_req=%.3f errors=%llu\n",
                name, o.conns, o.size, static_cast<unsigned long long>(done),
                static_cast<double>(done) / elapsed,
                static_cast<double>(done) * static_cast<double>(o.size)
                  / elapsed / (1024.0 * 1024.0),
                per, static_cast<unsigned long long>(errors));
  else
    std::printf("mode=%s conns=%d size=%zu connections=%llu cps=%.0f "
                "cpu_us_per_conn=%.3f resumed=%llu errors=%llu\n",
                name, o.conns, o.size, static_cast<unsigned long long>(done),
                static_cast<double>(done) / elapsed, per,
                static_cast<unsigned long long>(resumed),
                static_cast<unsigned long long>(errors));
  for (auto& s : slots) {
    if (s.ssl != nullptr)
      SSL_free(s.ssl);
    if (s.session != nullptr)
      SSL_SESSION_free(s.session);
    if (s.fd >= 0)
      ::close(s.fd);
  }
  SSL_CTX_free(ctx);
  return errors == 0 ? 0 : 1;
}
