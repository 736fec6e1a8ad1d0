#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include <caf/actor.hpp>
#include <caf/expected.hpp>

#include "tact/actors/protocol.hpp"
#include "tact/runtime/transport.hpp"
#include "tact/transports/tls.hpp"

namespace tact::detail {

class multiplexer;

/// Drains OpenSSL's error queue of this thread into one line.
std::string take_ssl_errors();

/// How a TLS layer starts.
struct tls_setup {
  tls_context ctx;
  tls_options opts;
  /// start_tls: the application protocol, which already has a lifecycle.
  caf::actor app;
  /// Otherwise the application protocol is made after the handshake.
  std::optional<protocol_factory> factory;
  /// Called once: with the layer's transport when the handshake is done
  /// (after `connection_made` went to the application), or with the error.
  std::function<void(caf::expected<transport>)> on_ready;
  /// start_tls: the transport below; otherwise it comes with
  /// `connection_made`, the layer being its protocol.
  transport lower;
  uint64_t read_credit = 256 * 1024;
};

/// Spawns a TLS layer on `mux` and returns its handle on the layer.
transport spawn_tls(multiplexer& mux, tls_setup setup);

/// Checks `opts` against `ctx` for a connection on the given side.
caf::error check_tls_options(const tls_context& ctx, const tls_options& opts,
                             bool server_side);

/// When the protocol of transport `hdl` is a layer over it (TLS,
/// framing), that layer, recursively; else `hdl` itself. Any thread (it
/// reads the transports' shared state only).
caf::actor top_layer(const caf::actor& hdl);

} // namespace tact::detail
