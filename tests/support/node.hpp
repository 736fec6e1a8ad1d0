#pragma once

// What the distribution tests and their second node (node_main.cpp) share.

#include <cstdlib>
#include <string>

#include <caf/atom.hpp>

namespace tact::test {

/// Asks the published maker for a new protocol actor.
using make_atom = caf::atom_constant<caf::atom("make")>;

/// Call before starting a second node. Under ThreadSanitizer that node
/// reports races inside CAF's serialization of strings and its openssl
/// module: libcaf is not instrumented, so TSan cannot see the
/// synchronisation of its mailboxes (the same false positives that
/// tests/sanitizers/tsan.supp names for this process). Such a report must
/// not kill the node in the middle of a scenario; it is printed, and the
/// node carries on. This process keeps halt_on_error. Does nothing in
/// other builds; true once done.
inline bool node_reports_do_not_halt() {
#if defined(__SANITIZE_THREAD__)
  static const bool once = [] {
    std::string opts = std::getenv("TSAN_OPTIONS") ? std::getenv("TSAN_OPTIONS")
                                                   : "";
    opts += ":halt_on_error=0:exitcode=0";
    return setenv("TSAN_OPTIONS", opts.c_str(), 1) == 0;
  }();
  return once;
#else
  return true;
#endif
}

/// Whether `output` (a second node's) holds a ThreadSanitizer report whose
/// stacks of the racing accesses name tact's code (where the threads were
/// created does not count: every thread starts from main).
inline bool tsan_report_names_tact(const std::string& output) {
  size_t at = 0;
  while ((at = output.find("WARNING: ThreadSanitizer", at))
         != std::string::npos) {
    auto end = output.find("==================", at);
    auto report = output.substr(at, end == std::string::npos ? end : end - at);
    auto created = report.find("Thread T");
    if (report.substr(0, created).find("tact::") != std::string::npos)
      return true;
    at = end == std::string::npos ? output.size() : end;
  }
  return false;
}

} // namespace tact::test
