#pragma once

// TLS test support: certificates made with the OpenSSL API in a temporary
// directory (no key is ever committed), a blocking OpenSSL peer on a
// plain socket, and a child process with its output readable line by line
// (for `openssl s_client` and `openssl s_server`).

#include <chrono>
#include <string>
#include <vector>

#include <openssl/ssl.h>

#include "tact/transports/tls.hpp"

namespace tact::test {

using namespace std::chrono_literals;

/// A throwaway PKI: a CA, a server certificate for `localhost` and
/// 127.0.0.1 signed by it, an expired one, a self-signed one, and a client
/// certificate. Removed with the object.
struct test_pki {
  test_pki();
  ~test_pki();
  test_pki(const test_pki&) = delete;
  test_pki& operator=(const test_pki&) = delete;

  std::string dir;
  std::string ca_cert;
  std::string cert;
  std::string key;
  std::string expired_cert;
  std::string expired_key;
  std::string self_signed_cert;
  std::string self_signed_key;
  std::string client_cert;
  std::string client_key;
};

/// tact's contexts for `pki`: a server with its certificate for
/// localhost, and a client that trusts its CA and verifies.
struct tls_contexts {
  explicit tls_contexts(const test_pki& pki);
  tls_context server;
  tls_context client;
};

/// A blocking OpenSSL endpoint on a connected socket (owned), for tests
/// that need a TLS peer doing exactly what they say. Every call gives up
/// after the socket's 10-second timeouts.
class tls_peer {
public:
  /// `ctx` is borrowed; `server` picks the handshake side; a client sends
  /// `sni` if not empty.
  tls_peer(int fd, SSL_CTX* ctx, bool server, const std::string& sni = {});
  ~tls_peer();
  tls_peer(const tls_peer&) = delete;
  tls_peer& operator=(const tls_peer&) = delete;

  /// Runs the handshake; false (and `error()` says why) on failure.
  bool handshake();
  void write_all(const std::string& data);
  /// Reads exactly `n` bytes, or less at close_notify, EOF or an error.
  std::string read_n(size_t n);
  /// Reads until close_notify or EOF; `clean` tells whether close_notify.
  std::string read_all(bool* clean = nullptr);
  /// Sends close_notify (SSL_shutdown once).
  void send_close_notify();
  /// Closes the socket's write side without close_notify.
  void shutdown_write();

  [[nodiscard]] int fd() const noexcept { return fd_; }
  [[nodiscard]] const std::string& error() const noexcept { return error_; }
  [[nodiscard]] SSL* native() const noexcept { return ssl_; }

private:
  int fd_;
  SSL* ssl_;
  bool server_;
  std::string error_;
};

/// A child process whose stdin is a pipe and whose stdout and stderr come
/// back merged; killed and reaped on destruction.
class child {
public:
  explicit child(const std::vector<std::string>& argv);
  ~child();
  child(const child&) = delete;
  child& operator=(const child&) = delete;

  /// Waits for a line of output containing `needle`; false on EOF or
  /// timeout. Everything read so far is in `output()`.
  bool wait_for(const std::string& needle, std::chrono::milliseconds timeout = 10s);
  void send(const std::string& data);
  void close_stdin();
  /// Waits for the child to exit; its status or -1 on timeout.
  int wait(std::chrono::milliseconds timeout = 10s);

  [[nodiscard]] const std::string& output() const noexcept { return out_; }

  [[nodiscard]] int pid() const noexcept { return pid_; }

private:
  int pid_ = -1;
  int in_ = -1;
  int out_fd_ = -1;
  std::string out_;
};

/// A TCP port that was free a moment ago on 127.0.0.1.
uint16_t free_port();

} // namespace tact::test
