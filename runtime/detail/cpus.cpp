// How many CPUs the process may use: the affinity mask first, then the
// cgroup's quota (a container given 1.5 CPUs of 8 gets 2).

#include "tact/runtime/detail/cpus.hpp"

#include <sched.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <sstream>

namespace tact::detail {

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty()
         && (s.back() == ' ' || s.back() == '\n' || s.back() == '\t'))
    s.remove_suffix(1);
  return s;
}

std::optional<long long> to_number(std::string_view s) {
  s = trim(s);
  long long value = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc{} || end != s.data() + s.size())
    return std::nullopt;
  return value;
}

std::optional<double> quota_of(long long quota, long long period) {
  if (quota <= 0 || period <= 0)
    return std::nullopt;
  return static_cast<double>(quota) / static_cast<double>(period);
}

std::optional<std::string> read_file(const std::string& path) {
  std::ifstream in{path};
  if (!in)
    return std::nullopt;
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

} // namespace

std::optional<double> parse_cpu_max(std::string_view text) {
  text = trim(text);
  auto space = text.find(' ');
  if (space == std::string_view::npos)
    return std::nullopt;
  auto quota = text.substr(0, space);
  if (quota == "max")
    return std::nullopt;
  auto q = to_number(quota);
  auto p = to_number(text.substr(space + 1));
  if (!q || !p)
    return std::nullopt;
  return quota_of(*q, *p);
}

std::optional<double> parse_cfs_quota(std::string_view quota,
                                      std::string_view period) {
  auto q = to_number(quota);
  auto p = to_number(period);
  if (!q || !p)
    return std::nullopt;
  return quota_of(*q, *p);
}

std::optional<std::string> cgroup2_path(std::string_view text) {
  while (!text.empty()) {
    auto eol = text.find('\n');
    auto line = text.substr(0, eol);
    if (line.substr(0, 3) == "0::")
      return std::string{trim(line.substr(3))};
    if (eol == std::string_view::npos)
      break;
    text.remove_prefix(eol + 1);
  }
  return std::nullopt;
}

size_t cpus_within(size_t affinity, std::optional<double> quota) {
  auto n = std::max<size_t>(affinity, 1);
  if (quota && *quota > 0)
    n = std::min(n, static_cast<size_t>(std::ceil(*quota)));
  return std::max<size_t>(n, 1);
}

size_t available_cpus() {
  size_t affinity = 1;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof(set), &set) == 0)
    affinity = static_cast<size_t>(CPU_COUNT(&set));
  std::optional<double> quota;
  if (auto self = read_file("/proc/self/cgroup")) {
    if (auto path = cgroup2_path(*self)) {
      // The quota that binds may be set on the group or on any parent.
      std::string dir = "/sys/fs/cgroup" + (*path == "/" ? "" : *path);
      for (;;) {
        if (auto max = read_file(dir + "/cpu.max"))
          if (auto q = parse_cpu_max(*max); q && (!quota || *q < *quota))
            quota = q;
        auto slash = dir.rfind('/');
        if (dir == "/sys/fs/cgroup" || slash == std::string::npos)
          break;
        dir.erase(slash);
      }
    }
  }
  if (!quota) {
    auto q = read_file("/sys/fs/cgroup/cpu/cpu.cfs_quota_us");
    auto p = read_file("/sys/fs/cgroup/cpu/cpu.cfs_period_us");
    if (q && p)
      quota = parse_cfs_quota(*q, *p);
  }
  return cpus_within(affinity, quota);
}

} // namespace tact::detail
