// Bulk client for echo servers: one connection streams a fixed amount while
// reading the echo back at the same time; every byte is checked.
//
//   echo_bulk --url tcp://127.0.0.1:PORT [--bytes 1073741824] [--server-pid PID]
//
// Prints GB/s (each way) and, given --server-pid, server CPU seconds per GB.

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <fcntl.h>
#include <poll.h>

#include "bench_common.hpp"

int main(int argc, char** argv) {
  std::string url;
  uint64_t total = 1ull << 30;
  int server_pid = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    if (k == "--url")
      url = argv[i + 1];
    else if (k == "--bytes")
      total = std::stoull(argv[i + 1]);
    else if (k == "--server-pid")
      server_pid = std::stoi(argv[i + 1]);
  }
  if (url.empty()) {
    std::fprintf(stderr, "usage: echo_bulk --url URL [--bytes N] "
                         "[--server-pid PID]\n");
    return 2;
  }
  int fd = bench::connect_url(url);
  if (fd < 0)
    bench::die("connect");
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  // The pattern repeats every 64 KiB + 1 byte so that a chunk boundary never
  // lines up with it: a misplaced chunk is caught.
  constexpr size_t period = 65537;
  std::vector<char> pattern(period * 2);
  for (size_t i = 0; i < pattern.size(); ++i)
    pattern[i] = bench::pattern(1, i % period);
  std::vector<char> in(256 * 1024);
  uint64_t sent = 0;
  uint64_t received = 0;
  uint64_t errors = 0;
  auto cpu0 = bench::cpu_seconds(server_pid);
  auto t0 = std::chrono::steady_clock::now();
  while (received < total) {
    pollfd p{fd, static_cast<short>(POLLIN | (sent < total ? POLLOUT : 0)), 0};
    if (::poll(&p, 1, 10000) <= 0) {
      std::fprintf(stderr, "stalled at %llu/%llu bytes\n",
                   static_cast<unsigned long long>(received),
                   static_cast<unsigned long long>(total));
      return 1;
    }
    if ((p.revents & POLLOUT) && sent < total) {
      auto off = sent % period;
      auto n = std::min<uint64_t>(total - sent, period);
      auto w = ::send(fd, pattern.data() + off, n, MSG_NOSIGNAL);
      if (w > 0)
        sent += static_cast<uint64_t>(w);
      else if (w < 0 && errno != EAGAIN)
        bench::die("send");
    }
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
      auto r = ::recv(fd, in.data(), in.size(), 0);
      if (r == 0) {
        std::fprintf(stderr, "server closed early\n");
        return 1;
      }
      if (r < 0) {
        if (errno != EAGAIN)
          bench::die("recv");
        continue;
      }
      auto off = received % period;
      if (std::memcmp(in.data(), pattern.data() + off,
                      std::min<size_t>(static_cast<size_t>(r), period))
          != 0)
        ++errors;
      // Reads longer than one period are checked period by period.
      for (size_t k = period; k < static_cast<size_t>(r); k += period)
        if (std::memcmp(in.data() + k, pattern.data() + off,
                        std::min<size_t>(static_cast<size_t>(r) - k, period))
            != 0)
          ++errors;
      received += static_cast<uint64_t>(r);
    }
  }
  auto secs
    = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
        .count();
  auto cpu = bench::cpu_seconds(server_pid) - cpu0;
  auto gb = static_cast<double>(total) / 1e9;
  std::printf("bytes=%llu seconds=%.3f gbps=%.3f cpu_s_per_gb=%.3f errors=%llu\n",
              static_cast<unsigned long long>(total), secs, gb / secs,
              server_pid > 0 ? cpu / gb : 0.0,
              static_cast<unsigned long long>(errors));
  ::close(fd);
  return errors == 0 ? 0 : 1;
}
