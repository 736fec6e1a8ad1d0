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

#include "tact/runtime/bytes.hpp"
#include "tact/runtime/endpoint.hpp"
#include "tact/runtime/transport.hpp"
#include "tact/runtime/detail/light_actor.hpp"

namespace tact {
class transport;
class protocol_factory;
struct handover_stash;
} // namespace tact

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

/// A tiny spin lock for the rarely written protocol handle.
class spin_lock {
public:
  void lock() noexcept {
    while (flag_.test_and_set(std::memory_order_acquire)) {
      // spin
    }
  }
  void unlock() noexcept { flag_.clear(std::memory_order_release); }

private:
  std::atomic_flag flag_ = ATOMIC_FLAG_INIT;
};

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
  // stdin, stdout, stderr: empty where the stream is not a pipe.
  transport pipes[3];
};

/// A transport actor as its handles see it — the shared state, and the one
/// command that handles may run by a direct call when they are on the
/// transport's loop and its mailbox is empty (see `light_actor::run_now`) —
/// and what every transport does with its protocol: deliveries, monitoring,
/// and `set_protocol` without losing a delivery.
///
/// Switching protocols: when `set_protocol(next)` reaches the transport, it
/// asks the protocol it is leaving for a `handover` and holds every delivery
/// (and stops reading) until the answer comes. The old protocol answers with
/// the deliveries it received after the switch was asked for and did not
/// handle (the class adapter does this itself); they go to `next` first,
/// then what the transport held. Later switches wait their turn, so bytes
/// reach each protocol in order, once.
class transport_core : public light_actor {
public:
  transport_core(caf::actor_config& cfg, multiplexer& mux, transport_kind kind,
                 uint64_t read_credit, caf::actor protocol = {});

  /// Queues or sends `data`, as `op::write` would. Runs inside `run_now`.
  virtual void direct_write(bytes& data) = 0;

  /// `op::close` and `op::write_eof` from a handle on this loop, by a direct
  /// call inside `run_now`. By default handled as the message would be,
  /// without the mailbox.
  virtual void direct_close();
  virtual void direct_write_eof();

  [[nodiscard]] transport_state& state() noexcept { return state_; }

  /// asyncio's `get_extra_info(name)`; any thread. A socket's addresses
  /// and descriptor, a pipe's descriptor, a child's pid; a layer adds its
  /// own keys to those of the transport below.
  [[nodiscard]] virtual std::optional<caf::config_value>
  extra_info(std::string_view name) const;

  /// The names `extra_info` may know, for `transport::extra_info()`.
  [[nodiscard]] virtual std::vector<std::string_view> extra_info_names() const;

  /// A handle on this transport for its protocol.
  [[nodiscard]] transport make_handle();

protected:
  // -- the protocol ------------------------------------------------------------

  /// Sends `msg` to the protocol; held while a switch is under way.
  void deliver(caf::message msg);

  /// Hands `data` to the protocol, charged to the read credit: by a direct
  /// call to a class protocol on this loop with nothing queued, else as
  /// `data_received` (held during a switch). Nothing without a protocol.
  void deliver_data(bytes& data);

  /// Asks the protocol about EOF (`eof_received`); held likewise.
  void request_eof();

  /// `request_eof`, or the protocol's answer at once by a direct call (a
  /// protocol core on this loop with nothing queued): true when
  /// `keep_open` holds that answer, false when it comes later
  /// (`is_eof_answer`).
  bool ask_eof(bool& keep_open);

  /// Whether `id` answers the current `eof_received` request.
  [[nodiscard]] bool is_eof_answer(uint64_t id) const noexcept {
    return id != 0 && id == eof_request_;
  }

  /// Handles `op::set_protocol`, the answer to a handover and the protocol's
  /// down message; false for any other message.
  bool handle_protocol_message(caf::mailbox_element& x,
                               caf::type_erased_tuple& msg);

  /// Monitors the protocol unless it is the class adapter made for this
  /// connection (`installed` false), which ends through this transport.
  void watch_protocol(bool installed);

  void unwatch_protocol();

  /// Sends `connection_lost` to the protocol and quits (unless `quit_now`
  /// is false: the caller quits later); while a switch is under way, once
  /// the old protocol has handed over.
  void end_protocol(caf::error reason, bool quit_now = true);

  /// A switch is under way: deliveries are held, reading should stop.
  [[nodiscard]] bool switching() const noexcept { return handover_id_ != 0; }

  /// Charges `n` delivered bytes to the read credit.
  void charge_credit(size_t n) {
    auto before = state_.unconsumed.fetch_add(n);
    if (before + n >= state_.read_credit)
      arm_credit_wakeup();
  }

  /// Makes the protocol with `factory` (a layer's: TLS, framing), installs
  /// it and sends it `connection_made`; returns that request's id, or 0
  /// (with a warning if the factory threw) when no protocol was made.
  uint64_t install_protocol(protocol_factory& factory);

  /// Whether `answer`, to `connection_made`, lets reading start: an empty
  /// message, or a behaviour without a handler for it.
  [[nodiscard]] static bool made_ok(const caf::type_erased_tuple& answer);

  /// A layer's handling of its protocol's read commands (`pause_reading`,
  /// `resume_reading`, `consumed`): updates `paused` (ignored once
  /// `closing`) and the shared state. True if `msg` was one; the caller
  /// then delivers what it can.
  bool read_command(caf::type_erased_tuple& msg, bool& paused, bool closing);

  /// `op::set_write_buffer_limits`: stores the limits unless a local handle
  /// did already; false for any other message.
  bool limits_command(const caf::type_erased_tuple& msg);

  /// Gives `n` bytes back to the read credit (`op::consumed`).
  void give_back_credit(uint64_t n);

  /// The credit protocol with the givers (`transport::consumed`): while
  /// the protocol holds the whole credit, `credit_blocked` is set, and the
  /// giver that clears it sends a wake-up (`op::consumed{0}`). Sets or
  /// clears it from the credit now, without losing a giver in between.
  void arm_credit_wakeup();

  /// The protocol is gone (down): end the connection.
  virtual void on_protocol_down() = 0;

  /// A switch finished; reading may resume.
  virtual void on_switched() {
    // nop
  }

  transport_state state_;
  caf::actor protocol_;
  // protocol_ as a class adapter on this loop, for direct delivery.
  protocol_core* fast_ = nullptr;

private:
  struct next_protocol {
    caf::actor actor;
    bytes unread;
  };

  // Handles `msg` now, as if it had come through the mailbox.
  void handle_now(caf::message msg);

  // deliver_data's message: a protocol elsewhere, busy, or with messages
  // queued ahead.
  void deliver_data_message(bytes& data);

  void begin_switch();
  void finish_switch(handover_stash* stash);
  void redeliver(caf::message msg);

  // Switches asked for and not begun, oldest first.
  std::vector<next_protocol> switches_;
  // Deliveries held during a switch.
  std::vector<caf::message> held_;
  caf::error deferred_loss_;
  uint64_t handover_id_ = 0;
  uint64_t eof_request_ = 0;
  bool monitored_ = false;
  bool loss_deferred_ = false;
  bool quit_deferred_ = true;
  bool ended_ = false;
};

/// A protocol actor that its transport may hand bytes by a direct call on
/// their shared loop (the class adapter), saving a message per read.
class protocol_core : public light_actor {
public:
  using light_actor::light_actor;

  /// Handles `data_received` from `from`. Runs inside `run_now`.
  virtual void direct_data(bytes& data, transport_core& from) = 0;

  /// Handles `eof_received` from `from` if it can now, with its answer in
  /// `keep_open`; false: the request goes by message. Runs inside
  /// `run_now`.
  virtual bool direct_eof(transport_core& from, bool& keep_open) {
    return false;
  }

  /// Handles `connection_lost` from `from` if it can now (taking
  /// `reason`); false: it goes by message, `reason` untouched. Runs inside
  /// `run_now`.
  virtual bool direct_lost(caf::error& reason, transport_core& from) {
    return false;
  }
};

// Inline: it runs once per read.
inline void transport_core::deliver_data(bytes& data) {
  if (!protocol_)
    return;
  charge_credit(data.size());
  // A class protocol on this loop with nothing queued takes the bytes by a
  // direct call: same order as the mailbox, no message. It may write back
  // from inside (direct_write).
  if (fast_ != nullptr && fast_->run_now([&] { fast_->direct_data(data, *this); }))
    return;
  deliver_data_message(data);
}

} // namespace tact::detail
