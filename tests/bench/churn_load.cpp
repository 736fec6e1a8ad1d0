// A closed-loop load client that churns connections: each of --conns slots
// connects, sends one message of --size bytes, reads its echo back (every
// byte checked), closes, and connects again. Prints key=value pairs:
// connections per second and, given --server-pid, the CPU time that process
// spent per connection over the measured window.
//
//   churn_load --url tcp://127.0.0.1:PORT [--conns 50] [--size 1024]
//              [--warmup 1] [--duration 5] [--server-pid PID]

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/resource.h>

#include "bench_common.hpp"

namespace {


struct options {
  std::string url;
  int conns = 50;
  size_t size = 1024;
  double warmup = 1;
  double duration = 5;
  int server_pid = 0;
};

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    std::string v = argv[i + 1];
    if (k == "--url")
      o.url = v;
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
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      std::exit(2);
    }
  }
  if (o.url.rfind("tcp://", 0) != 0 || o.conns < 1 || o.size < 1) {
    std::fprintf(stderr, "usage: churn_load --url tcp://HOST:PORT [--conns N] "
                         "[--size M] [--warmup S] [--duration S] "
                         "[--server-pid PID]\n");
    std::exit(2);
  }
  return o;
}

struct slot {
  uint32_t id = 0;
  int fd = -1;
  uint64_t serial = 0; // which connection of this slot, for the pattern
  size_t sent = 0;
  size_t received = 0;
};

sockaddr_in address_of(const std::string& url) {
  auto rest = url.substr(6);
  auto colon = rest.rfind(':');
  sockaddr_in in{};
  in.sin_family = AF_INET;
  in.sin_port = htons(static_cast<uint16_t>(std::atoi(rest.c_str() + colon + 1)));
  if (colon == std::string::npos
      || inet_pton(AF_INET, rest.substr(0, colon).c_str(), &in.sin_addr) != 1)
    bench::die("bad url");
  return in;
}

} // namespace

int main(int argc, char** argv) {
  auto o = parse(argc, argv);
  rlimit lim{};
  getrlimit(RLIMIT_NOFILE, &lim);
  lim.rlim_cur = lim.rlim_max;
  setrlimit(RLIMIT_NOFILE, &lim);
  auto addr = address_of(o.url);
  int ep = epoll_create1(0);
  std::vector<slot> slots(static_cast<size_t>(o.conns));
  std::vector<char> out(o.size);
  std::vector<char> in(64 * 1024);
  uint64_t connections = 0;
  uint64_t errors = 0;
  // A message differs per slot and per connection of the slot.
  auto byte_at = [](const slot& s, size_t i) {
    return bench::pattern(s.id, s.serial * 7919 + i);
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
    s.sent = 0;
    s.received = 0;
    epoll_event ev{};
    ev.events = EPOLLOUT;
    ev.data.ptr = &s;
    epoll_ctl(ep, EPOLL_CTL_ADD, s.fd, &ev);
  };
  auto send_rest = [&](slot& s) {
    for (size_t i = s.sent; i < o.size; ++i)
      out[i - s.sent] = byte_at(s, i);
    auto w = ::send(s.fd, out.data(), o.size - s.sent, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EAGAIN)
        return;
      bench::die("send");
    }
    s.sent += static_cast<size_t>(w);
    epoll_event ev{};
    ev.events = s.sent < o.size ? EPOLLIN | EPOLLOUT : EPOLLIN;
    ev.data.ptr = &s;
    epoll_ctl(ep, EPOLL_CTL_MOD, s.fd, &ev);
  };
  for (size_t i = 0; i < slots.size(); ++i) {
    slots[i].id = static_cast<uint32_t>(i);
    open(slots[i]);
  }
  bench::window win{o.warmup, o.duration, o.server_pid};
  epoll_event events[512];
  for (bool started = false; win.running(started);) {
    if (started)
      connections = 0;
    int n = epoll_wait(ep, events, 512, 100);
    for (int i = 0; i < n; ++i) {
      auto& s = *static_cast<slot*>(events[i].data.ptr);
      if (events[i].events & EPOLLERR) {
        std::fprintf(stderr, "connection of slot %u failed\n", s.id);
        return 1;
      }
      if (s.sent < o.size && (events[i].events & EPOLLOUT))
        send_rest(s);
      if (!(events[i].events & (EPOLLIN | EPOLLHUP)))
        continue;
      auto r = ::recv(s.fd, in.data(), in.size(), 0);
      if (r < 0) {
        if (errno == EAGAIN)
          continue;
        bench::die("recv");
      }
      if (r == 0) {
        std::fprintf(stderr, "server closed slot %u before the echo\n", s.id);
        return 1;
      }
      for (ssize_t k = 0; k < r; ++k)
        if (in[static_cast<size_t>(k)]
            != byte_at(s, s.received + static_cast<size_t>(k)))
          ++errors;
      s.received += static_cast<size_t>(r);
      if (s.received >= o.size) {
        ::close(s.fd);
        ++connections;
        ++s.serial;
        open(s);
      }
    }
  }
  auto elapsed = win.elapsed();
  auto cpu = win.server_cpu();
  std::printf("conns=%d size=%zu connections=%llu cps=%.0f "
              "cpu_us_per_conn=%.3f errors=%llu\n",
              o.conns, o.size, static_cast<unsigned long long>(connections),
              static_cast<double>(connections) / elapsed,
              connections > 0 && o.server_pid > 0
                ? cpu * 1e6 / static_cast<double>(connections)
                : 0.0,
              static_cast<unsigned long long>(errors));
  for (auto& s : slots)
    ::close(s.fd);
  return errors == 0 ? 0 : 1;
}
