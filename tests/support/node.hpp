#pragma once

// What the distribution tests and their second node (node_main.cpp) share.

#include <chrono>
#include <cstdlib>
#include <future>
#include <memory>
#include <string>

#include <caf/atom.hpp>
#include <caf/event_based_actor.hpp>

#include "tact/runtime/runtime.hpp"

namespace tact::test {

/// Asks the published maker for a new protocol actor.
using make_atom = caf::atom_constant<caf::atom("make")>;

/// The actor published at `127.0.0.1:port`, asked for by a behaviour on the
/// loop through `loop_ops::remote_actor` (where the blocking call would be
/// `would_deadlock`).
inline caf::expected<caf::actor> find_remote(runtime& rt, uint16_t port) {
  auto done = std::make_shared<std::promise<caf::expected<caf::actor>>>();
  auto result = done->get_future();
  rt.spawn_on_loop([&rt, port, done](caf::event_based_actor* self) {
    self
      ->request(rt.loop(), std::chrono::seconds{30},
                loop_ops::remote_actor{"127.0.0.1", port})
      .then(
        [self, done](caf::actor& a) {
          done->set_value(std::move(a));
          self->quit();
        },
        [self, done](caf::error& err) {
          done->set_value(std::move(err));
          self->quit();
        });
    return caf::behavior{[](int) {}};
  });
  return result.get();
}

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
