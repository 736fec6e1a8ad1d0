#pragma once

// Which message a handler got, without comparing type names.
//
// `caf::type_erased_tuple::match_elements<T>()` tells a user-defined type by
// `std::type_info` equality, which compares the types' mangled names with
// strcmp whenever the two type_info objects differ (they may come from
// different shared objects): a handler that tries ten candidates pays ten
// string comparisons for each message. `is<T>(msg)` answers the same
// question with a pointer comparison in the usual case, and otherwise with
// a look-up that maps each type_info object to one per type (a small
// per-thread cache in front of a registry compared by name once per
// object).

#include <cstddef>
#include <cstdint>
#include <typeinfo>

#include <caf/atom.hpp>
#include <caf/type_erased_tuple.hpp>
#include <caf/type_nr.hpp>

namespace tact::detail {

/// The registry behind `canonical_type`: compares names, takes a lock.
[[nodiscard]] const std::type_info*
register_type(const std::type_info* ti);

struct type_cache_entry {
  const std::type_info* key;
  const std::type_info* value;
};

// Direct-mapped by the object's address: a handful of message types are in
// use at a time.
inline constexpr size_t type_cache_size = 64;

[[gnu::tls_model("initial-exec")]] extern thread_local type_cache_entry
  type_cache[type_cache_size];

/// One `std::type_info` object per type: the first one seen with the same
/// name as `ti`. Thread-safe.
[[nodiscard]] inline const std::type_info*
canonical_type(const std::type_info* ti) {
  auto& entry = type_cache[(reinterpret_cast<uintptr_t>(ti) >> 4)
                           % type_cache_size];
  if (entry.key == ti)
    return entry.value;
  auto* result = register_type(ti);
  entry = {ti, result};
  return result;
}

/// Whether `msg` is one element of type `T` (as `msg.match_elements<T>()`).
template <class T>
[[nodiscard]] bool is(const caf::type_erased_tuple& msg) {
  if constexpr (caf::is_atom_constant<T>::value) {
    // The value counts too.
    return msg.match_elements<T>();
  } else {
    if (msg.size() != 1)
      return false;
    auto [nr, ti] = msg.type(0);
    constexpr auto want = caf::type_nr<T>::value;
    if constexpr (want != 0) {
      return nr == want;
    } else {
      if (nr != 0 || ti == nullptr)
        return false;
      if (ti == &typeid(T))
        return true;
      static const std::type_info* const mine = canonical_type(&typeid(T));
      return canonical_type(ti) == mine;
    }
  }
}

} // namespace tact::detail
