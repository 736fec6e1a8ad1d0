// The CPU count that runtime_options::loops = 0 will use: the cgroup
// files' formats, and the count on this machine against the kernel's own
// view of the affinity mask (nproc).

#include <catch2/catch.hpp>

#include <sched.h>

#include <cstdio>
#include <string>

#include "tact/runtime/detail/cpus.hpp"

using namespace tact::detail;

TEST_CASE("cgroup v2 cpu.max gives a quota in CPUs, or none") {
  CHECK(parse_cpu_max("150000 100000\n") == 1.5);
  CHECK(parse_cpu_max("200000 100000") == 2.0);
  CHECK_FALSE(parse_cpu_max("max 100000\n"));
  CHECK_FALSE(parse_cpu_max(""));
  CHECK_FALSE(parse_cpu_max("abc 100000"));
  CHECK_FALSE(parse_cpu_max("100000"));
  CHECK_FALSE(parse_cpu_max("0 100000"));
}

TEST_CASE("cgroup v1's CFS quota and period give a quota, -1 none") {
  CHECK(parse_cfs_quota("50000\n", "100000\n") == 0.5);
  CHECK_FALSE(parse_cfs_quota("-1\n", "100000\n"));
  CHECK_FALSE(parse_cfs_quota("x", "100000"));
}

TEST_CASE("the cgroup v2 path is the 0:: line of /proc/self/cgroup") {
  CHECK(cgroup2_path("0::/user.slice/session-1.scope\n")
        == std::string{"/user.slice/session-1.scope"});
  CHECK(cgroup2_path("12:cpu,cpuacct:/docker/abc\n0::/\n")
        == std::string{"/"});
  CHECK_FALSE(cgroup2_path("12:cpu,cpuacct:/docker/abc\n"));
  CHECK_FALSE(cgroup2_path(""));
}

TEST_CASE("a quota caps the affinity count, rounded up, at least 1") {
  CHECK(cpus_within(8, 1.5) == 2);
  CHECK(cpus_within(8, std::nullopt) == 8);
  CHECK(cpus_within(2, 16.0) == 2);
  CHECK(cpus_within(4, 0.1) == 1);
  CHECK(cpus_within(0, std::nullopt) == 1);
}

TEST_CASE("on this machine: nproc's count, capped by the cgroup's quota") {
  // nproc counts the affinity mask (and, in coreutils 9, the quota too):
  // tact's count is never above it and never 0.
  auto* p = ::popen("nproc", "r");
  REQUIRE(p != nullptr);
  char buf[32] = {};
  auto got = std::fgets(buf, sizeof(buf), p);
  ::pclose(p);
  REQUIRE(got != nullptr);
  auto nproc = std::stoul(buf);
  auto n = available_cpus();
  CHECK(n >= 1);
  CHECK(n <= nproc);
}

TEST_CASE("a thread held to one CPU counts one") {
  cpu_set_t before;
  REQUIRE(::sched_getaffinity(0, sizeof(before), &before) == 0);
  int first = 0;
  while (!CPU_ISSET(first, &before))
    ++first;
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(first, &one);
  REQUIRE(::sched_setaffinity(0, sizeof(one), &one) == 0);
  auto n = available_cpus();
  ::sched_setaffinity(0, sizeof(before), &before);
  CHECK(n == 1);
}
