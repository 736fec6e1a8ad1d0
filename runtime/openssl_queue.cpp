// OpenSSL asks every caller to empty the thread's error queue before a
// TLS I/O call: SSL_get_error() reads that queue first, so an error left
// over from another connection turns this call's harmless WANT_READ into
// SSL_ERROR_SSL. CAF 0.17's openssl module (Debian's build, with logging
// compiled out) never empties it. All its connections share the
// middleman's thread, so one connection's error is inherited by the
// next. The error might be a peer that closed mid-handshake, or a
// stranger's garbage. The next healthy link that waits for data is then
// closed, and its node's actors are reported unreachable. kv_cluster's
// links fell over within a second of starting.
//
// These four definitions take the place of OpenSSL's in this process.
// They empty the queue, then call OpenSSL's own. Every caller keeps
// OpenSSL's behaviour. A queue emptied before a call is what OpenSSL
// documents as required. tests/runtime/cluster_tls.test.cpp shows links
// that survive closed neighbours and strangers.

#include <dlfcn.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define TACT_OPENSSL_EXPORT __attribute__((visibility("default")))

namespace {

template <class F>
F next_definition(const char* name) {
  return reinterpret_cast<F>(::dlsym(RTLD_NEXT, name));
}

} // namespace

extern "C" {

TACT_OPENSSL_EXPORT int SSL_read(SSL* ssl, void* buf, int num) {
  static auto real = next_definition<int (*)(SSL*, void*, int)>("SSL_read");
  ERR_clear_error();
  return real(ssl, buf, num);
}

TACT_OPENSSL_EXPORT int SSL_write(SSL* ssl, const void* buf, int num) {
  static auto real
    = next_definition<int (*)(SSL*, const void*, int)>("SSL_write");
  ERR_clear_error();
  return real(ssl, buf, num);
}

TACT_OPENSSL_EXPORT int SSL_accept(SSL* ssl) {
  static auto real = next_definition<int (*)(SSL*)>("SSL_accept");
  ERR_clear_error();
  return real(ssl);
}

TACT_OPENSSL_EXPORT int SSL_connect(SSL* ssl) {
  static auto real = next_definition<int (*)(SSL*)>("SSL_connect");
  ERR_clear_error();
  return real(ssl);
}

} // extern "C"
