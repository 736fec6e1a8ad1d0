#include "tact/runtime/detail/match.hpp"

#include <cstring>
#include <mutex>
#include <vector>

namespace tact::detail {

namespace {

std::mutex registry_mtx;
std::vector<const std::type_info*> registry;

} // namespace

thread_local type_cache_entry type_cache[type_cache_size];

const std::type_info* register_type(const std::type_info* ti) {
  std::lock_guard<std::mutex> guard{registry_mtx};
  for (auto* known : registry)
    if (known == ti || std::strcmp(known->name(), ti->name()) == 0)
      return known;
  registry.push_back(ti);
  return ti;
}

} // namespace tact::detail
