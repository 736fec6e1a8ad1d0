#pragma once

#include <caf/error.hpp>

#include "tact/runtime/runtime.hpp"

namespace tact::detail {

/// Loads `opts`' files as CAF's openssl module would and checks that the
/// key matches the certificate and that the CA signed it; the first
/// problem as `errc::invalid_argument`, else none.
[[nodiscard]] caf::error check_cluster_tls(const cluster_tls_options& opts);

/// Makes TLS 1.3 the floor of every OpenSSL context this process creates
/// from now on without a minimum of its own (CAF's openssl module sets
/// none). Once per process; an error if OpenSSL refused the setting.
[[nodiscard]] caf::error raise_default_tls_floor();

} // namespace tact::detail
