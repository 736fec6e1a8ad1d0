#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>

#include <caf/actor.hpp>

namespace tact::detail {

/// State a transport shares with the handles its protocols hold, so that
/// asyncio's synchronous queries (`is_closing`, `get_write_buffer_size`, ...)
/// need no round trip. The transport actor is the only writer of the
/// transport-side fields; handles write the fields that mirror their own
/// calls.
struct transport_state {
  transport_state(bool eof_supported, uint64_t credit)
    : can_write_eof(eof_supported), read_credit(credit) {
    // nop
  }

  const bool can_write_eof;
  const uint64_t read_credit;

  std::atomic<bool> closing{false};
  std::atomic<bool> lost{false};
  std::atomic<bool> eof_written{false};
  std::atomic<bool> reading_paused{false};

  // Write side: bytes sent by handles that the transport has not taken yet,
  // and bytes in the transport's buffer.
  std::atomic<uint64_t> in_flight{0};
  std::atomic<uint64_t> buffered{0};
  std::atomic<uint64_t> high{64 * 1024};
  std::atomic<uint64_t> low{16 * 1024};

  // Read side: bytes delivered and not yet consumed; `credit_blocked` is set
  // by the transport when it stopped reading for lack of credit.
  std::atomic<uint64_t> unconsumed{0};
  std::atomic<bool> credit_blocked{false};

  // Writes dropped because the transport was closing or gone.
  std::atomic<uint64_t> dropped_writes{0};

  // Called once, at the fifth dropped write.
  std::function<void(const std::string&)> warn;

  /// Counts a write that came after closing; warns once, at the fifth
  /// (asyncio warns at every one from the fifth on).
  void count_dropped_write() {
    if (++dropped_writes == 5 && warn)
      warn("writes after the transport was closed are being dropped");
  }

  // The protocol deliveries go to; kept after the loss so that a protocol
  // replaced by set_protocol can tell it was replaced.
  std::mutex protocol_mtx;
  caf::actor protocol;
};

} // namespace tact::detail
