// Closed-loop load client for echo servers: N connections, M-byte messages,
// D messages in flight per connection (1 = request/response), a warm-up,
// then a measured run. Every echoed byte is checked.
//
//   echo_load --url tcp://127.0.0.1:PORT --conns 100 --size 1024
//             [--depth 1] [--warmup 1] [--duration 5] [--server-pid PID]
//
// Prints `measuring` and `measured` around the measured window (for a tool
// like perf that counts the server's events in it), then one line of
// key=value pairs: requests/s, latency percentiles and, given --server-pid,
// the server's CPU time per request.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/resource.h>

#include "bench_common.hpp"

namespace {

using clock_type = std::chrono::steady_clock;

struct conn {
  int fd = -1;
  uint32_t id = 0;
  uint64_t sent = 0;     // bytes of the stream sent
  uint64_t received = 0; // bytes of the stream received and checked
  std::vector<clock_type::time_point> started; // per message in flight
  size_t head = 0;
  bool want_out = false;
};

struct options {
  std::string url;
  int conns = 100;
  size_t size = 1024;
  int depth = 1;
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
    else if (k == "--depth")
      o.depth = std::stoi(v);
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
  if (o.url.empty() || o.conns <= 0 || o.size == 0 || o.depth <= 0) {
    std::fprintf(stderr, "usage: echo_load --url URL [--conns N] [--size M] "
                         "[--depth D] [--warmup S] [--duration S] "
                         "[--server-pid PID]\n");
    std::exit(2);
  }
  return o;
}

} // namespace

int main(int argc, char** argv) {
  auto o = parse(argc, argv);
  rlimit lim{};
  getrlimit(RLIMIT_NOFILE, &lim);
  lim.rlim_cur = lim.rlim_max;
  setrlimit(RLIMIT_NOFILE, &lim);
  int ep = epoll_create1(0);
  std::vector<conn> conns(static_cast<size_t>(o.conns));
  std::vector<char> out(o.size * static_cast<size_t>(o.depth));
  std::vector<char> in(256 * 1024);
  for (int i = 0; i < o.conns; ++i) {
    auto& c = conns[static_cast<size_t>(i)];
    c.id = static_cast<uint32_t>(i);
    c.fd = bench::connect_url(o.url);
    if (c.fd < 0)
      bench::die("connect");
    fcntl(c.fd, F_SETFL, fcntl(c.fd, F_GETFL) | O_NONBLOCK);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = &c;
    epoll_ctl(ep, EPOLL_CTL_ADD, c.fd, &ev);
  }
  std::vector<double> latencies;
  latencies.reserve(1 << 22);
  uint64_t requests = 0;
  uint64_t errors = 0;
  bool measuring = false;
  double cpu_start = 0;
  auto t0 = clock_type::now();
  auto measure_start = t0;
  auto warm_end = t0 + std::chrono::duration_cast<clock_type::duration>(
                         std::chrono::duration<double>(o.warmup));
  auto end = warm_end + std::chrono::duration_cast<clock_type::duration>(
                          std::chrono::duration<double>(o.duration));
  // Sends message after message until `depth` are in flight; a message is
  // the next `size` bytes of the connection's pattern.
  auto fill = [&](conn& c) {
    while (c.sent < c.received + o.size * static_cast<uint64_t>(o.depth)) {
      auto in_flight_end = c.received + o.size * static_cast<uint64_t>(o.depth);
      auto n = static_cast<size_t>(in_flight_end - c.sent);
      for (size_t i = 0; i < n; ++i)
        out[i] = bench::pattern(c.id, c.sent + i);
      auto w = ::send(c.fd, out.data(), n, MSG_NOSIGNAL);
      if (w < 0) {
        if (errno == EAGAIN)
          break;
        bench::die("send");
      }
      // Record a start time for each message whose first byte went out.
      auto now = clock_type::now();
      for (auto off = c.sent; off < c.sent + static_cast<uint64_t>(w); ++off)
        if (off % o.size == 0)
          c.started.push_back(now);
      c.sent += static_cast<uint64_t>(w);
    }
    bool pending = c.sent < c.received + o.size * static_cast<uint64_t>(o.depth);
    if (pending != c.want_out) {
      c.want_out = pending;
      epoll_event ev{};
      ev.events = EPOLLIN | (pending ? EPOLLOUT : 0u);
      ev.data.ptr = &c;
      epoll_ctl(ep, EPOLL_CTL_MOD, c.fd, &ev);
    }
  };
  for (auto& c : conns)
    fill(c);
  epoll_event events[512];
  for (;;) {
    auto now = clock_type::now();
    if (!measuring && now >= warm_end) {
      measuring = true;
      measure_start = now;
      cpu_start = bench::cpu_seconds(o.server_pid);
      // Marks the window for tools that count the server's events in it.
      std::printf("measuring\n");
      std::fflush(stdout);
    }
    if (now >= end)
      break;
    int n = epoll_wait(ep, events, 512, 100);
    for (int i = 0; i < n; ++i) {
      auto& c = *static_cast<conn*>(events[i].data.ptr);
      if (events[i].events & EPOLLIN) {
        auto r = ::recv(c.fd, in.data(), in.size(), 0);
        if (r == 0) {
          std::fprintf(stderr, "server closed connection %u\n", c.id);
          return 1;
        }
        if (r < 0) {
          if (errno != EAGAIN)
            bench::die("recv");
        } else {
          for (ssize_t k = 0; k < r; ++k)
            if (in[static_cast<size_t>(k)]
                != bench::pattern(c.id, c.received + static_cast<uint64_t>(k)))
              ++errors;
          auto before = c.received;
          c.received += static_cast<uint64_t>(r);
          auto done_msgs = c.received / o.size - before / o.size;
          auto t = clock_type::now();
          for (uint64_t m = 0; m < done_msgs; ++m) {
            auto start = c.started[c.head++];
            if (measuring) {
              latencies.push_back(
                std::chrono::duration<double, std::micro>(t - start).count());
              ++requests;
            }
          }
          if (c.head > 4096) {
            c.started.erase(c.started.begin(),
                            c.started.begin() + static_cast<long>(c.head));
            c.head = 0;
          }
        }
      }
      fill(c);
    }
  }
  auto elapsed = std::chrono::duration<double>(clock_type::now() - measure_start)
                   .count();
  auto cpu = bench::cpu_seconds(o.server_pid) - cpu_start;
  std::printf("measured\n");
  std::fflush(stdout);
  std::sort(latencies.begin(), latencies.end());
  auto pct = [&](double p) {
    if (latencies.empty())
      return 0.0;
    auto idx = static_cast<size_t>(p * static_cast<double>(latencies.size() - 1));
    return latencies[idx];
  };
  std::printf("conns=%d size=%zu depth=%d requests=%llu rps=%.0f p50_us=%.1f "
              "p99_us=%.1f p999_us=%.1f cpu_us_per_req=%.3f errors=%llu\n",
              o.conns, o.size, o.depth,
              static_cast<unsigned long long>(requests),
              static_cast<double>(requests) / elapsed, pct(0.5), pct(0.99),
              pct(0.999),
              requests > 0 && o.server_pid > 0
                ? cpu * 1e6 / static_cast<double>(requests)
                : 0.0,
              static_cast<unsigned long long>(errors));
  for (auto& c : conns)
    ::close(c.fd);
  return errors == 0 && requests > 0 ? 0 : 1;
}
