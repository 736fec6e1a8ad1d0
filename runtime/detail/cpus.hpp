#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "tact/export.hpp"

namespace tact::detail {

/// The CPUs this process may use: those of its affinity mask, capped by
/// its cgroup's CPU quota (cgroup v2 `cpu.max`, or v1's CFS quota and
/// period), rounded up; at least 1. What `runtime_options::loops = 0`
/// will mean.
TACT_EXPORT size_t available_cpus();

/// A quota in CPUs from the text of a cgroup v2 `cpu.max` ("150000
/// 100000" is 1.5); none for "max" or text that does not parse.
TACT_EXPORT std::optional<double> parse_cpu_max(std::string_view text);

/// The same from cgroup v1's `cpu.cfs_quota_us` and `cpu.cfs_period_us`
/// (a quota of -1 is none).
TACT_EXPORT std::optional<double> parse_cfs_quota(std::string_view quota,
                                                  std::string_view period);

/// This process's cgroup v2 path from the text of `/proc/self/cgroup`
/// (its "0::" line); none on a v1-only system.
TACT_EXPORT std::optional<std::string>
cgroup2_path(std::string_view proc_self_cgroup);

/// `affinity` CPUs capped by `quota` (rounded up), at least 1.
TACT_EXPORT size_t cpus_within(size_t affinity, std::optional<double> quota);

} // namespace tact::detail
