#pragma once

#include "tact/runtime/bytes.hpp"
#include "tact/runtime/detail/light_actor.hpp"

namespace tact::detail {

class transport_core;

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

} // namespace tact::detail
