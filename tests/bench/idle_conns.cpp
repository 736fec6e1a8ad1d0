// Memory per idle connection: opens N connections to an echo server, makes
// each one echo a byte (so the server has set it up completely), then holds
// them idle and reports the server's RSS growth per connection.
//
//   idle_conns --url tcp://127.0.0.1:PORT --server-pid PID [--conns 10000]

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include <sys/resource.h>

#include "bench_common.hpp"

int main(int argc, char** argv) {
  std::string url;
  int server_pid = 0;
  int count = 10000;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    if (k == "--url")
      url = argv[i + 1];
    else if (k == "--server-pid")
      server_pid = std::stoi(argv[i + 1]);
    else if (k == "--conns")
      count = std::stoi(argv[i + 1]);
  }
  if (url.empty() || server_pid <= 0) {
    std::fprintf(stderr, "usage: idle_conns --url URL --server-pid PID "
                         "[--conns N]\n");
    return 2;
  }
  rlimit lim{};
  getrlimit(RLIMIT_NOFILE, &lim);
  lim.rlim_cur = lim.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &lim) != 0
      || lim.rlim_cur < static_cast<rlim_t>(count) + 64) {
    std::fprintf(stderr, "RLIMIT_NOFILE too low for %d connections\n", count);
    return 1;
  }
  // Warm the server up with one connection, so that lazily allocated
  // buffers are not counted as per-connection cost.
  {
    int fd = bench::connect_url(url);
    char b = 'w';
    if (fd < 0 || ::send(fd, &b, 1, 0) != 1 || ::recv(fd, &b, 1, 0) != 1)
      bench::die("warm-up");
    ::close(fd);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds{200});
  auto before = bench::rss_kib(server_pid);
  std::vector<int> fds;
  fds.reserve(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i) {
    int fd = bench::connect_url(url);
    if (fd < 0)
      bench::die("connect");
    char b = static_cast<char>(i);
    if (::send(fd, &b, 1, 0) != 1)
      bench::die("send");
    char r = 0;
    if (::recv(fd, &r, 1, 0) != 1 || r != b)
      bench::die("echo");
    fds.push_back(fd);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds{500});
  auto after = bench::rss_kib(server_pid);
  std::printf("conns=%d rss_before_kib=%ld rss_after_kib=%ld "
              "bytes_per_conn=%.0f\n",
              count, before, after,
              static_cast<double>(after - before) * 1024.0 / count);
  for (auto fd : fds)
    ::close(fd);
  return 0;
}
