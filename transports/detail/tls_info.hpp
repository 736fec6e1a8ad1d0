// The extra info of a TLS connection once its handshake is done.
#pragma once

#include <string>

#include <openssl/types.h>

#include <caf/settings.hpp>

namespace tact::detail {

/// `peercert` (Python's getpeercert(): empty unless the certificate was
/// verified), `cipher` ([name, version, bits]) and `ssl_object` (version,
/// server_side, server_hostname, alpn_protocol, session_reused).
caf::settings connection_info(SSL* ssl, bool verifies_peer, bool server_side,
                              const std::string& server_hostname);

} // namespace tact::detail
