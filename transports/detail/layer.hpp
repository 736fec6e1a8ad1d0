#pragma once

// A transport that sits on another stream transport (TLS, framing): to the
// transport below it is the protocol, to the protocol above it is a
// transport. What every such layer does the same way lives here, once: the
// transport below and its messages, the commands of the protocol above,
// the reading switches and the read credit, the answer to connection_made,
// exits and the protocol's end. A layer says what its bytes mean through a
// handful of hooks.

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include <caf/actor.hpp>
#include <caf/mailbox_element.hpp>

#include "tact/runtime/detail/transport_core.hpp"
#include "tact/runtime/messages.hpp"
#include "tact/runtime/transport.hpp"
#include "tact/transports/detail/fifo.hpp"

namespace tact::detail {

class layer : public transport_core {
public:
  layer(caf::actor_config& cfg, multiplexer& mux, transport_kind kind,
        uint64_t read_credit, caf::actor app, transport lower);

  void direct_write(bytes& data) final {
    write_in_order(data);
  }

  /// The transport below's (a layer adds its own keys by overriding).
  [[nodiscard]] std::optional<caf::config_value>
  extra_info(std::string_view name) const override;

  [[nodiscard]] std::vector<std::string_view>
  extra_info_names() const override;

protected:
  void on_start() final;

  void on_message(caf::mailbox_element& x) final;

  void on_exit(caf::error reason) final;

  void on_protocol_down() final;

  void on_switched() final;

  // -- hooks: starting ---------------------------------------------------------

  /// Runs first in `on_start`; false if the layer ended there.
  virtual bool on_layer_start() {
    return true;
  }

  /// The transport below is known (given, or from its connection_made).
  virtual void begin() = 0;

  /// The protocol above answered connection_made: reading may start.
  virtual void on_app_ready() = 0;

  // -- hooks: the transport below --------------------------------------------

  /// Bytes from below; their credit is given back already.
  virtual void on_lower_data(bytes& data) = 0;

  /// EOF from below (answered with keep-open: the layer closes it itself).
  virtual void on_lower_eof() = 0;

  /// The transport below paused (true) or resumed (false) this layer's
  /// writes.
  virtual void on_lower_pause(bool paused) = 0;

  /// The transport below ended (its connection_lost, or its down message).
  virtual void on_lower_lost(caf::error reason) = 0;

  /// The transport below goes to another protocol: what the layer hands it.
  virtual handover_stash on_lower_handover() {
    return {};
  }

  // -- hooks: the protocol above ----------------------------------------------

  /// A write of the protocol above (not yet counted as dropped).
  virtual void on_write(bytes& data) = 0;

  virtual void on_write_eof() {
    // nop: where the layer cannot write EOF, the handle says so first
  }

  virtual void on_close() = 0;

  /// Reading may have become possible (a switch, credit given back).
  virtual void on_read_change() = 0;

  /// New watermarks are in the shared state.
  virtual void on_limits() {
    // nop
  }

  /// The protocol's answer to `eof_received`.
  virtual void on_eof_answer(bool keep_open) {
    // nop
  }

  [[nodiscard]] virtual size_t buffer_size() const = 0;

  /// Any other message (a timer); false if unknown.
  virtual bool on_layer_message(caf::type_erased_tuple& msg) {
    return false;
  }

  /// Ends the connection, aborting the transport below.
  virtual void abort_layer(caf::error reason) = 0;

  // -- hooks: files (sendfile's fallback) --------------------------------------

  /// Whether `op::sendfile` is carried by reading the file and writing its
  /// bytes in chunks (TLS); a layer whose writes are frames refuses it.
  [[nodiscard]] virtual bool carries_files() const noexcept {
    return false;
  }

  /// Whether the next chunk of a file must wait; the layer calls
  /// `files_may_go_on()` once it need not.
  [[nodiscard]] virtual bool file_chunks_wait() const noexcept {
    return false;
  }

  // -- for layers ----------------------------------------------------------------

  /// Whether the protocol above takes deliveries now. The shared flags
  /// too: a protocol that pauses or closes inside data_received gets no
  /// further delivery from the loop that runs it.
  [[nodiscard]] bool app_reading() const noexcept;

  /// Marks the layer lost and closing (here and in the shared state) and
  /// untracks it; answers the files still queued with an error; true the
  /// first time.
  bool mark_lost();

  /// Writing file chunks may go on (`file_chunks_wait()` turned false).
  void files_may_go_on();

  transport lower_;
  uint64_t made_request_ = 0;
  bool read_started_ = false;
  bool user_paused_ = false;
  bool closing_ = false;
  bool lost_ = false;
  // The transport below ended or went to another protocol.
  bool lower_gone_ = false;
  // Why the transport below ended, when it failed while the layer still
  // held bytes for the protocol above: reported once they are delivered.
  caf::error lower_failure_;

private:
  // A write queued behind a file, or a file (`op::sendfile`) and who asked.
  struct queued {
    bytes data;
    op::sendfile file;
    uint64_t sent = 0;
    pending_reply asker;
  };

  bool from_below(caf::mailbox_element& x, caf::type_erased_tuple& msg);

  // A write of the protocol above, after the files queued before it.
  void write_in_order(bytes& data);

  void on_sendfile(caf::mailbox_element& x, op::sendfile& req);

  // Writes the next queued chunk (one file chunk per turn, so other
  // messages, the transport below's pause among them, come in between).
  void pump_files();

  void schedule_pump();

  // Answers the file at the head with its bytes sent, or `err`.
  void finish_file(caf::error err = {});

  // What waits behind a file: files and writes in order. Their unsent
  // bytes count as in flight (part of the write buffer).
  fifo<queued> queue_;
  bool pump_scheduled_ = false;
  // close() came while files were queued: it runs after them.
  bool close_after_files_ = false;
};

} // namespace tact::detail
