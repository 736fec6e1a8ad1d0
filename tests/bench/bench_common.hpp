// Helpers shared by the benchmark clients: connecting to a URL, reading a
// server process's CPU time and memory, and a byte pattern to verify echoes.
#pragma once

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <string>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace bench {

// Connects a blocking socket to tcp://HOST:PORT (IPv4) or unix://PATH.
inline int connect_url(const std::string& url) {
  int fd = -1;
  if (url.rfind("unix://", 0) == 0) {
    sockaddr_un un{};
    un.sun_family = AF_UNIX;
    std::strncpy(un.sun_path, url.c_str() + 7, sizeof(un.sun_path) - 1);
    fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&un), sizeof(un)) != 0) {
      ::close(fd);
      return -1;
    }
    return fd;
  }
  if (url.rfind("tcp://", 0) != 0)
    return -1;
  auto rest = url.substr(6);
  auto colon = rest.rfind(':');
  if (colon == std::string::npos)
    return -1;
  sockaddr_in in{};
  in.sin_family = AF_INET;
  in.sin_port = htons(static_cast<uint16_t>(std::atoi(rest.c_str() + colon + 1)));
  if (inet_pton(AF_INET, rest.substr(0, colon).c_str(), &in.sin_addr) != 1)
    return -1;
  fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&in), sizeof(in)) != 0) {
    ::close(fd);
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

// CPU time of every thread of process `pid`, in nanoseconds, from
// /proc/PID/task/*/schedstat (exact), or from /proc/PID/stat in clock ticks
// when schedstat is not there.
inline double cpu_seconds(int pid) {
  if (pid <= 0)
    return 0;
  auto dir_name = "/proc/" + std::to_string(pid) + "/task";
  uint64_t total_ns = 0;
  bool any = false;
  if (auto* dir = opendir(dir_name.c_str())) {
    while (auto* e = readdir(dir)) {
      if (e->d_name[0] == '.')
        continue;
      auto path = dir_name + "/" + e->d_name + "/schedstat";
      if (auto* f = std::fopen(path.c_str(), "r")) {
        unsigned long long ns = 0;
        if (std::fscanf(f, "%llu", &ns) == 1) {
          total_ns += ns;
          any = true;
        }
        std::fclose(f);
      }
    }
    closedir(dir);
  }
  if (any)
    return static_cast<double>(total_ns) / 1e9;
  auto path = "/proc/" + std::to_string(pid) + "/stat";
  auto* f = std::fopen(path.c_str(), "r");
  if (f == nullptr)
    return 0;
  char buf[4096];
  auto n = std::fread(buf, 1, sizeof(buf) - 1, f);
  std::fclose(f);
  buf[n] = '\0';
  // Fields after the command name (which may hold spaces): utime is the
  // 14th field, stime the 15th.
  auto* p = std::strrchr(buf, ')');
  if (p == nullptr)
    return 0;
  unsigned long long utime = 0;
  unsigned long long stime = 0;
  std::sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
              &utime, &stime);
  return static_cast<double>(utime + stime)
         / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// Resident set size of process `pid` in KiB (VmRSS).
inline long rss_kib(int pid) {
  auto path = "/proc/" + std::to_string(pid) + "/status";
  auto* f = std::fopen(path.c_str(), "r");
  if (f == nullptr)
    return -1;
  char line[256];
  long kib = -1;
  while (std::fgets(line, sizeof(line), f))
    if (std::sscanf(line, "VmRSS: %ld kB", &kib) == 1)
      break;
  std::fclose(f);
  return kib;
}

// The byte at offset `i` of connection `conn`'s stream: every echoed byte
// is checked against it.
inline char pattern(uint32_t conn, uint64_t i) {
  return static_cast<char>((i * 131 + conn * 7919 + (i >> 11)) & 0xff);
}

// The measured window of a closed-loop client: `warmup` seconds, then
// `duration` seconds over which the server process's CPU time is taken.
class window {
public:
  using clock_type = std::chrono::steady_clock;

  window(double warmup, double duration, int server_pid)
    : pid_(server_pid), start_(clock_type::now()) {
    warm_end_ = start_ + std::chrono::duration_cast<clock_type::duration>(
                           std::chrono::duration<double>(warmup));
    end_ = warm_end_ + std::chrono::duration_cast<clock_type::duration>(
                         std::chrono::duration<double>(duration));
  }

  // False once the window is over; `started` is set (once) when the
  // measured part begins, for the caller to reset its counters.
  bool running(bool& started) {
    auto now = clock_type::now();
    started = false;
    if (!measuring_ && now >= warm_end_) {
      measuring_ = true;
      started = true;
      start_ = now;
      cpu_start_ = cpu_seconds(pid_);
    }
    return now < end_;
  }

  // Seconds measured, and the server's CPU seconds in them, so far.
  [[nodiscard]] double elapsed() const {
    return std::chrono::duration<double>(clock_type::now() - start_).count();
  }

  [[nodiscard]] double server_cpu() const {
    return cpu_seconds(pid_) - cpu_start_;
  }

private:
  int pid_;
  bool measuring_ = false;
  double cpu_start_ = 0;
  clock_type::time_point start_;
  clock_type::time_point warm_end_;
  clock_type::time_point end_;
};

[[noreturn]] inline void die(const char* what) {
  std::fprintf(stderr, "%s: %s\n", what, std::strerror(errno));
  std::exit(1);
}

} // namespace bench
