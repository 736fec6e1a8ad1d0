#pragma once

// TLS over any stream transport (TCP, Unix, or TLS itself), on OpenSSL 3
// with the ciphertext in memory: asyncio's SSLContext, ssl= arguments and
// start_tls.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/expected.hpp>
#include <caf/settings.hpp>

#include "tact/export.hpp"
#include "tact/runtime/bytes.hpp"
#include "tact/runtime/transport.hpp"

// OpenSSL's context type, for `tls_context::native_handle`.
struct ssl_ctx_st;

namespace tact {

/// A TLS protocol version.
enum class tls_version : uint8_t { tls1_2, tls1_3 };

/// How a client context checks servers. Secure unless said otherwise: the
/// chain must lead to a trusted CA and the certificate must name the host.
struct tls_client_options {
  /// PEM file of the CAs to trust; empty: the system's store (and
  /// `ca_path` if given).
  std::string ca_file;
  /// Directory of hashed CA certificates (`openssl rehash`).
  std::string ca_path;
  /// A client certificate and its key (PEM), for servers that ask.
  std::string cert_file;
  std::string key_file;
  /// ALPN protocols to offer, most preferred first (`"h2"`, `"http/1.1"`).
  std::vector<std::string> alpn;
  tls_version min_version = tls_version::tls1_2;
  std::optional<tls_version> max_version;
  /// The TLS 1.2 cipher suites, as an OpenSSL cipher list. Empty: ECDHE key
  /// exchange with AEAD ciphers only (AES-GCM, ChaCha20-Poly1305), the
  /// "intermediate" profile; no CBC, no static RSA. TLS 1.3 suites are
  /// OpenSSL's. Widen it only for old peers that need it.
  std::string tls12_ciphers;
  /// Accept any certificate from any server: no chain check, no name
  /// check. Only for tests against throwaway certificates; anyone on the
  /// path can read and change the traffic.
  bool insecure_skip_verify = false;
};

/// What a server context presents and asks for.
struct tls_server_options {
  /// The server's certificate chain (PEM, leaf first) and its private key.
  std::string cert_file;
  std::string key_file;
  /// When set, every client must present a certificate that chains to one
  /// of the CAs in this PEM file; the handshake fails otherwise.
  std::string client_ca_file;
  /// ALPN protocols the server speaks, most preferred first.
  std::vector<std::string> alpn;
  tls_version min_version = tls_version::tls1_2;
  std::optional<tls_version> max_version;
  /// The TLS 1.2 cipher suites, as an OpenSSL cipher list. Empty: ECDHE key
  /// exchange with AEAD ciphers only (AES-GCM, ChaCha20-Poly1305), the
  /// "intermediate" profile; no CBC, no static RSA. TLS 1.3 suites are
  /// OpenSSL's. Widen it only for old peers that need it.
  std::string tls12_ciphers;
};

/// asyncio's `ssl.SSLContext`: settings and certificates shared by many
/// connections. Cheap to copy (copies share one OpenSSL context).
/// Thread safety: may be used by any number of connections at once.
class TACT_EXPORT tls_context {
public:
  tls_context() = default;

  /// A client context. Errors: unreadable CA or certificate files, a key
  /// that does not match its certificate.
  static caf::expected<tls_context> client(tls_client_options opts = {});

  /// A server context. Errors: no certificate or key, unreadable files, a
  /// key that does not match the certificate.
  static caf::expected<tls_context> server(tls_server_options opts);

  [[nodiscard]] bool server_side() const noexcept;

  /// Whether the peer's certificate is checked (clients: unless
  /// `insecure_skip_verify`; servers: with `client_ca_file`).
  [[nodiscard]] bool verifies_peer() const noexcept;

  /// The extra info `sslcontext`: `{server_side, verify_peer,
  /// check_hostname, minimum_version, alpn}`.
  [[nodiscard]] const caf::settings& describe() const noexcept;

  /// OpenSSL's `SSL_CTX`, for settings tact does not cover. Change it
  /// before the first connection uses the context.
  [[nodiscard]] ssl_ctx_st* native_handle() const noexcept;

  [[nodiscard]] explicit operator bool() const noexcept {
    return static_cast<bool>(impl_);
  }

  struct impl;

private:
  std::shared_ptr<impl> impl_;
};

/// Per-connection TLS settings: asyncio's `server_side`, `server_hostname`,
/// `ssl_handshake_timeout` and `ssl_shutdown_timeout`.
struct tls_options {
  /// Whether this end is the TLS server (start_tls only; the factory
  /// methods know it).
  bool server_side = false;
  /// Clients: the name sent as SNI and checked against the certificate.
  /// `create_connection` uses the host it connects to when empty; a
  /// client that verifies needs one.
  std::string server_hostname;
  /// From the first byte to the handshake's end; then the connection is
  /// refused with `errc::timed_out`.
  std::chrono::milliseconds handshake_timeout = std::chrono::seconds{60};
  /// From `close()` to the peer's close_notify or FIN; then
  /// `connection_lost(errc::timed_out)`.
  std::chrono::milliseconds shutdown_timeout = std::chrono::seconds{30};
  /// start_tls only: bytes the protocol already read from the plain
  /// transport that belong to the TLS stream (a ClientHello that came in
  /// the same read as the `STARTTLS` line). They are not lost.
  bytes unread;
};

/// asyncio's `loop.start_tls`: upgrades the live stream transport `t`
/// (TCP, Unix, or TLS itself) to TLS and returns the new transport at once.
/// The TLS layer becomes `t`'s protocol with nothing lost on the way (see
/// `transport::set_protocol`); `protocol` keeps getting deliveries, now
/// decrypted, once the handshake is done, and no `connection_made`. Write
/// to the returned transport from now on; writes before the handshake ends
/// wait for it. A failed handshake ends the connection with
/// `connection_lost(error)` to `protocol`. Callable from any thread,
/// including a protocol's own callback (pass `self()`).
///
/// Errors (returned): `t` is not a live local stream transport, a timeout
/// of zero or less, a client that verifies without a `server_hostname`, a
/// context for the wrong side.
TACT_EXPORT caf::expected<transport>
start_tls(const transport& t, caf::actor protocol, const tls_context& ctx,
          tls_options opts = {});

/// `start_tls` that also says when the handshake has ended (asyncio's
/// `await loop.start_tls(...)`): `done` gets the new transport once it is
/// done, before `protocol` gets the first decrypted bytes, or the
/// handshake's error (`protocol` then gets `connection_lost` with it too).
/// `done` runs on the loop, and only when a transport is returned.
TACT_EXPORT caf::expected<transport>
start_tls(const transport& t, caf::actor protocol, const tls_context& ctx,
          tls_options opts,
          std::function<void(caf::expected<transport>)> done);

} // namespace tact
