#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <caf/actor.hpp>
#include <caf/actor_addr.hpp>
#include <caf/actor_cast.hpp>
#include <caf/config_value.hpp>
#include <caf/mailbox_element.hpp>
#include <caf/settings.hpp>

#include "tact/actors/fwd.hpp"
#include "tact/runtime/bytes.hpp"
#include "tact/runtime/fwd.hpp"
#include "tact/runtime/endpoint.hpp"
#include "tact/runtime/transport.hpp"
#include "tact/runtime/detail/spin_lock.hpp"

namespace tact::detail {

class transport_core;
class protocol_core;

/// What a transport carries: a byte stream (both ways, or one way for the
/// ends of a pipe) or datagrams.
enum class transport_kind : uint8_t {
  stream,
  datagram,
  read_pipe,
  write_pipe,
  subprocess,
  /// A TLS layer over another stream transport.
  tls,
  /// A framing layer over a stream transport: one delivery per frame.
  frames,
};

struct subprocess_state;

/// One end of a connection as the extra info shows it, kept compact: the
/// `caf::config_value` form is made only when asked for.
struct address_info {
  std::array<uint8_t, 16> ip{};
  uint32_t flowinfo = 0;
  uint32_t scope_id = 0;
  uint16_t port = 0;
  /// 0 (none), 4 (IPv4), 6 (IPv6) or 1 (Unix).
  uint8_t family = 0;
  /// Unix socket path; null for an unnamed end (most client ends).
  std::unique_ptr<const std::string> path;
};

/// The address as asyncio's extra info shows it: `[host, port]` for IPv4,
/// `[host, port, flowinfo, scope_id]` for IPv6, the path for Unix sockets.
[[nodiscard]] caf::config_value to_config_value(const address_info& addr);

/// The address as a datagram protocol sees it.
[[nodiscard]] endpoint to_endpoint(const address_info& addr);

/// State a transport shares with the handles its protocols hold, so that
/// asyncio's synchronous queries (`is_closing`, `get_write_buffer_size`, ...)
/// need no round trip. It lives inside the transport actor, which handles
/// keep alive. The transport is the only writer of the transport-side
/// fields; handles write the fields that mirror their own calls.
struct transport_state {
  transport_state(transport_core& owner, transport_kind k, uint64_t credit)
    : core(&owner), kind(k),
      can_write_eof(k == transport_kind::stream
                    || k == transport_kind::write_pipe),
      read_credit(credit) {
    // nop
  }

  transport_core* core;
  const transport_kind kind;
  const bool can_write_eof;
  // Constant once the protocol has the handle: a layer made by the
  // transport below takes that transport's credit before it makes its
  // protocol.
  uint64_t read_credit;

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
  std::atomic<uint32_t> dropped_writes{0};

  // Datagrams read and dropped because the protocol held the whole read
  // credit (datagram transports only).
  std::atomic<uint64_t> dropped_datagrams{0};

  // The child, for a subprocess transport (else null).
  subprocess_state* sub = nullptr;

  // For a layer (TLS): the state of the transport below, which the layer
  // keeps alive; its write buffer and extra info count as the layer's.
  transport_state* below = nullptr;

  // A layer's own extra info: `fixed` from the start (sslcontext), `late`
  // published once (after the handshake). Owned by the layer.
  const caf::settings* fixed_extra = nullptr;
  std::atomic<const caf::settings*> late_extra{nullptr};

  // Extra info, fixed when the connection is made.
  int fd = -1;
  const char* family = "";
  address_info local;
  address_info peer;

  // The protocol deliveries go to; kept after the loss so that a protocol
  // replaced by set_protocol can tell it was replaced. A weak reference:
  // the transport holds its protocol strongly while it lives, and a strong
  // one here would tie transport and protocol in a cycle (a subprocess
  // transport is its pipes' protocol and holds them).
  spin_lock protocol_lock;
  caf::actor_addr protocol;
  // Bumped by every set_protocol, so a protocol can tell cheaply whether
  // it is still the one deliveries are meant for.
  std::atomic<uint32_t> protocol_epoch{0};

  /// Counts a write that came after closing; warns once, at the fifth
  /// (asyncio warns at every one from the fifth on).
  void count_dropped_write();

  [[nodiscard]] caf::actor current_protocol() {
    protocol_lock.lock();
    auto result = caf::actor_cast<caf::actor>(protocol);
    protocol_lock.unlock();
    return result;
  }

  /// The current protocol's address, even once it has terminated.
  [[nodiscard]] caf::actor_addr current_protocol_addr() {
    protocol_lock.lock();
    auto result = protocol;
    protocol_lock.unlock();
    return result;
  }

  void set_protocol(const caf::actor& p) {
    auto addr = p ? p.address() : caf::actor_addr{};
    protocol_lock.lock();
    protocol.swap(addr);
    protocol_epoch.fetch_add(1, std::memory_order_release);
    protocol_lock.unlock();
  }
};

} // namespace tact::detail

namespace tact::detail {

/// What a subprocess transport shares with its handles.
struct subprocess_state {
  int pid = -1;
  // Owned by the transport actor, which handles keep alive; signals go
  // through it, so they can never reach a recycled pid.
  int pidfd = -1;
  // The child's process group when it has one of its own (set before any
  // handle exists), else -1; `group_gone` once a signal found it empty
  // (its number may then be reused: it is never signalled again).
  int pgid = -1;
  std::atomic<bool> group_gone{false};
  std::atomic<bool> exited{false};
  std::atomic<int> returncode{0};
  // stdin, stdout, stderr: empty where the stream is not a pipe. Set
  // before any handle exists; kept, closed, after the end.
  transport pipes[3];
};

} // namespace tact::detail
