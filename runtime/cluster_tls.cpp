// The cluster's trust settings: checked with OpenSSL before CAF's openssl
// module gets them (the module throws from its I/O thread on a file it
// cannot load), and TLS 1.3 as the floor of the links.

#include "tact/runtime/detail/cluster_tls.hpp"

#include <mutex>
#include <string>

#include <openssl/conf.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include "tact/runtime/errc.hpp"

namespace tact::detail {

namespace {

std::string ssl_errors() {
  std::string result;
  while (auto code = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(code, buf, sizeof(buf));
    if (!result.empty())
      result += "; ";
    result += buf;
  }
  return result;
}

caf::error refuse(const std::string& what) {
  auto why = ssl_errors();
  return make_error(errc::invalid_argument,
                    "cluster_tls: " + what + (why.empty() ? "" : ": " + why));
}

int passphrase_cb(char* buf, int size, int, void* user) {
  auto* pass = static_cast<const std::string*>(user);
  auto n = std::min<size_t>(pass->size(), static_cast<size_t>(size));
  pass->copy(buf, n);
  return static_cast<int>(n);
}

} // namespace

caf::error check_cluster_tls(const cluster_tls_options& opts) {
  if (opts.ca_file.empty() || opts.cert_file.empty() || opts.key_file.empty())
    return make_error(errc::invalid_argument,
                      "cluster_tls needs ca_file, cert_file and key_file");
  ERR_clear_error();
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx{
    SSL_CTX_new(TLS_method()), SSL_CTX_free};
  if (!ctx)
    return refuse("no OpenSSL context");
  auto pass = opts.key_passphrase;
  SSL_CTX_set_default_passwd_cb(ctx.get(), passphrase_cb);
  SSL_CTX_set_default_passwd_cb_userdata(ctx.get(), &pass);
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), opts.cert_file.c_str())
      != 1)
    return refuse("cannot load the certificate " + opts.cert_file);
  if (SSL_CTX_use_PrivateKey_file(ctx.get(), opts.key_file.c_str(),
                                  SSL_FILETYPE_PEM)
      != 1)
    return refuse("cannot load the key " + opts.key_file);
  if (SSL_CTX_check_private_key(ctx.get()) != 1)
    return refuse("the key " + opts.key_file + " does not match "
                  + opts.cert_file);
  if (SSL_CTX_load_verify_locations(ctx.get(), opts.ca_file.c_str(), nullptr)
      != 1)
    return refuse("cannot load the CA " + opts.ca_file);
  // A node whose own certificate the CA did not sign could reach no one.
  std::unique_ptr<X509_STORE_CTX, decltype(&X509_STORE_CTX_free)> check{
    X509_STORE_CTX_new(), X509_STORE_CTX_free};
  STACK_OF(X509)* chain = nullptr;
  SSL_CTX_get0_chain_certs(ctx.get(), &chain);
  if (!check
      || X509_STORE_CTX_init(check.get(), SSL_CTX_get_cert_store(ctx.get()),
                             SSL_CTX_get0_certificate(ctx.get()), chain)
           != 1)
    return refuse("cannot check the certificate");
  if (X509_verify_cert(check.get()) != 1)
    return make_error(
      errc::invalid_argument,
      "cluster_tls: " + opts.cert_file + " is not signed by " + opts.ca_file
        + ": "
        + X509_verify_cert_error_string(
          X509_STORE_CTX_get_error(check.get())));
  return caf::none;
}

caf::error raise_default_tls_floor() {
  static std::once_flag once;
  static caf::error result;
  std::call_once(once, [] {
    // The process's OpenSSL defaults (the `system_default` section, as
    // Debian's openssl.cnf sets it, with TLS 1.3 as the floor). Contexts
    // that set their own minimum (tact's tls_context does) keep it.
    static const char text[] = "tact_openssl_conf = tact_conf\n"
                               "[tact_conf]\n"
                               "ssl_conf = tact_ssl\n"
                               "[tact_ssl]\n"
                               "system_default = tact_system_default\n"
                               "[tact_system_default]\n"
                               "MinProtocol = TLSv1.3\n"
                               "CipherString = DEFAULT:@SECLEVEL=2\n";
    // No cleanup at exit: CAF runs its TLS middleman on a detached thread
    // that ends (and runs OpenSSL's thread-exit handler, which takes
    // OpenSSL's global locks) after the actor system stopped waiting for
    // it; an atexit OPENSSL_cleanup frees those locks under it. Only the
    // first initialisation in a process decides this.
    OPENSSL_init_ssl(OPENSSL_INIT_NO_ATEXIT, nullptr);
    ERR_clear_error();
    auto* conf = NCONF_new(nullptr);
    auto* bio = BIO_new_mem_buf(text, sizeof(text) - 1);
    long line = 0;
    if (conf == nullptr || bio == nullptr || NCONF_load_bio(conf, bio, &line) != 1
        || CONF_modules_load(conf, "tact_openssl_conf", 0) != 1)
      result = refuse("cannot raise OpenSSL's default floor to TLS 1.3");
    BIO_free(bio);
    NCONF_free(conf);
  });
  return result;
}

} // namespace tact::detail
