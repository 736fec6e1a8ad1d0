// tls_context: an OpenSSL SSL_CTX with secure defaults.

#include "tact/transports/tls.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "tact/runtime/errc.hpp"
#include "tact/transports/detail/tls.hpp"

namespace tact {

struct tls_context::impl {
  SSL_CTX* ctx = nullptr;
  bool server = false;
  bool verify = false;
  // ALPN protocols in wire format (length-prefixed), for the server's
  // selection callback.
  std::vector<unsigned char> alpn;
  caf::settings description;

  ~impl() {
    SSL_CTX_free(ctx);
  }
};

namespace {

int openssl_version(tls_version v) {
  return v == tls_version::tls1_3 ? TLS1_3_VERSION : TLS1_2_VERSION;
}

const char* version_name(tls_version v) {
  return v == tls_version::tls1_3 ? "TLSv1.3" : "TLSv1.2";
}

caf::error context_error(const std::string& what) {
  return make_error(errc::invalid_argument,
                    what + ": " + detail::take_ssl_errors());
}

// ALPN's wire format: each name prefixed by its length.
caf::expected<std::vector<unsigned char>>
alpn_wire(const std::vector<std::string>& names) {
  std::vector<unsigned char> result;
  for (auto& name : names) {
    if (name.empty() || name.size() > 255)
      return make_error(errc::invalid_argument,
                        "an ALPN protocol name must have 1 to 255 bytes");
    result.push_back(static_cast<unsigned char>(name.size()));
    result.insert(result.end(), name.begin(), name.end());
  }
  return result;
}

// The server picks its most preferred protocol that the client offers; no
// overlap means no ALPN, as Python's ssl module does.
int select_alpn(SSL*, const unsigned char** out, unsigned char* outlen,
                const unsigned char* in, unsigned int inlen, void* arg) {
  auto* self = static_cast<tls_context::impl*>(arg);
  unsigned char* selected = nullptr;
  if (SSL_select_next_proto(&selected, outlen, self->alpn.data(),
                            static_cast<unsigned>(self->alpn.size()), in, inlen)
      != OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_NOACK;
  *out = selected;
  return SSL_TLSEXT_ERR_OK;
}

// TLS 1.2 with forward secrecy and authenticated encryption only: ECDHE,
// then AES-GCM or ChaCha20-Poly1305 (no CBC suite, so nothing for LUCKY13;
// no static RSA key exchange).
const std::string default_tls12_ciphers
  = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

// What both sides share: versions, TLS 1.2 suites, no renegotiation, no
// compression, buffers released while idle.
caf::error common_setup(tls_context::impl& x, tls_version min,
                        std::optional<tls_version> max,
                        const std::vector<std::string>& alpn,
                        const std::string& tls12_ciphers) {
  if (max && openssl_version(*max) < openssl_version(min))
    return make_error(errc::invalid_argument,
                      "max_version is below min_version");
  SSL_CTX_set_min_proto_version(x.ctx, openssl_version(min));
  if (max)
    SSL_CTX_set_max_proto_version(x.ctx, openssl_version(*max));
  SSL_CTX_set_options(x.ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  SSL_CTX_set_mode(x.ctx, SSL_MODE_RELEASE_BUFFERS);
  const auto& ciphers = tls12_ciphers.empty() ? default_tls12_ciphers
                                              : tls12_ciphers;
  if (SSL_CTX_set_cipher_list(x.ctx, ciphers.c_str()) != 1) {
    ERR_clear_error();
    return make_error(errc::invalid_argument,
                      "tls12_ciphers: no cipher suite in '" + ciphers + "'");
  }
  x.description["tls12_ciphers"] = ciphers;
  auto wire = alpn_wire(alpn);
  if (!wire)
    return std::move(wire.error());
  x.alpn = std::move(*wire);
  x.description["minimum_version"] = std::string{version_name(min)};
  caf::config_value::list names;
  for (auto& name : alpn)
    names.emplace_back(name);
  x.description["alpn"] = std::move(names);
  return caf::none;
}

caf::error load_pair(SSL_CTX* ctx, const std::string& cert,
                     const std::string& key) {
  if (SSL_CTX_use_certificate_chain_file(ctx, cert.c_str()) != 1)
    return context_error("cannot load the certificate chain '" + cert + "'");
  if (SSL_CTX_use_PrivateKey_file(ctx, key.c_str(), SSL_FILETYPE_PEM) != 1)
    return context_error("cannot load the private key '" + key + "'");
  if (SSL_CTX_check_private_key(ctx) != 1)
    return context_error("the key '" + key + "' does not match the "
                         "certificate '" + cert + "'");
  return caf::none;
}

} // namespace

caf::expected<tls_context> tls_context::client(tls_client_options opts) {
  auto x = std::make_shared<impl>();
  x->ctx = SSL_CTX_new(TLS_client_method());
  if (x->ctx == nullptr)
    return context_error("SSL_CTX_new");
  if (auto err = common_setup(*x, opts.min_version, opts.max_version,
                              opts.alpn, opts.tls12_ciphers))
    return err;
  x->verify = !opts.insecure_skip_verify;
  if (x->verify) {
    SSL_CTX_set_verify(x->ctx, SSL_VERIFY_PEER, nullptr);
    if (!opts.ca_file.empty() || !opts.ca_path.empty()) {
      if (SSL_CTX_load_verify_locations(
            x->ctx, opts.ca_file.empty() ? nullptr : opts.ca_file.c_str(),
            opts.ca_path.empty() ? nullptr : opts.ca_path.c_str())
          != 1)
        return context_error("cannot load the CAs '" + opts.ca_file
                             + opts.ca_path + "'");
    } else if (SSL_CTX_set_default_verify_paths(x->ctx) != 1) {
      return context_error("cannot load the system's CA store");
    }
  } else {
    SSL_CTX_set_verify(x->ctx, SSL_VERIFY_NONE, nullptr);
  }
  if (!x->alpn.empty()
      && SSL_CTX_set_alpn_protos(x->ctx, x->alpn.data(),
                                 static_cast<unsigned>(x->alpn.size()))
           != 0)
    return context_error("cannot set ALPN");
  if (!opts.cert_file.empty() || !opts.key_file.empty())
    if (auto err = load_pair(x->ctx, opts.cert_file, opts.key_file))
      return err;
  x->description["server_side"] = false;
  x->description["verify_peer"] = x->verify;
  x->description["check_hostname"] = x->verify;
  tls_context result;
  result.impl_ = std::move(x);
  return result;
}

caf::expected<tls_context> tls_context::server(tls_server_options opts) {
  if (opts.cert_file.empty() || opts.key_file.empty())
    return make_error(errc::invalid_argument,
                      "a server context needs cert_file and key_file");
  auto x = std::make_shared<impl>();
  x->server = true;
  x->ctx = SSL_CTX_new(TLS_server_method());
  if (x->ctx == nullptr)
    return context_error("SSL_CTX_new");
  if (auto err = common_setup(*x, opts.min_version, opts.max_version,
                              opts.alpn, opts.tls12_ciphers))
    return err;
  if (auto err = load_pair(x->ctx, opts.cert_file, opts.key_file))
    return err;
  if (!opts.client_ca_file.empty()) {
    if (SSL_CTX_load_verify_locations(x->ctx, opts.client_ca_file.c_str(),
                                      nullptr)
        != 1)
      return context_error("cannot load the client CAs '"
                           + opts.client_ca_file + "'");
    if (auto* names = SSL_load_client_CA_file(opts.client_ca_file.c_str()))
      SSL_CTX_set_client_CA_list(x->ctx, names);
    SSL_CTX_set_verify(x->ctx,
                       SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                       nullptr);
    x->verify = true;
  } else {
    SSL_CTX_set_verify(x->ctx, SSL_VERIFY_NONE, nullptr);
  }
  if (!x->alpn.empty())
    SSL_CTX_set_alpn_select_cb(x->ctx, select_alpn, x.get());
  // Needed for session resumption when clients are verified.
  static constexpr unsigned char sid_ctx[] = "tact";
  SSL_CTX_set_session_id_context(x->ctx, sid_ctx, sizeof(sid_ctx) - 1);
  x->description["server_side"] = true;
  x->description["verify_peer"] = x->verify;
  x->description["check_hostname"] = false;
  tls_context result;
  result.impl_ = std::move(x);
  return result;
}

bool tls_context::server_side() const noexcept {
  return impl_ && impl_->server;
}

bool tls_context::verifies_peer() const noexcept {
  return impl_ && impl_->verify;
}

const caf::settings& tls_context::describe() const noexcept {
  static const caf::settings none;
  return impl_ ? impl_->description : none;
}

ssl_ctx_st* tls_context::native_handle() const noexcept {
  return impl_ ? impl_->ctx : nullptr;
}

namespace detail {

std::string take_ssl_errors() {
  std::string result;
  while (auto code = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(code, buf, sizeof(buf));
    // Keep the reason: "error:0A000086:SSL routines::certificate verify
    // failed" -> "certificate verify failed".
    std::string text{buf};
    if (auto pos = text.rfind(':'); pos != std::string::npos)
      text = text.substr(pos + 1);
    if (!result.empty())
      result += "; ";
    result += text;
  }
  return result.empty() ? std::string{"unknown TLS error"} : result;
}

} // namespace detail

} // namespace tact
