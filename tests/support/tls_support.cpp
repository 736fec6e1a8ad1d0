#include "support/tls_support.hpp"

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "tact/runtime/errc.hpp"

extern char** environ;

namespace tact::test {

namespace {

EVP_PKEY* new_key() {
  auto* key = EVP_EC_gen("P-256");
  if (key == nullptr)
    throw std::runtime_error("EVP_EC_gen failed");
  return key;
}

void add_ext(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  auto* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  if (ext == nullptr)
    throw std::runtime_error("X509V3_EXT_conf_nid failed");
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
}

// A certificate for `key` named `cn`, valid from `from` to `to` seconds
// from now, signed by `issuer` (self-signed when null).
X509* new_cert(EVP_PKEY* key, const char* cn, X509* issuer,
               EVP_PKEY* issuer_key, long from, long to, bool ca,
               const char* san) {
  static long serial = 1000;
  auto* x = X509_new();
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), ++serial);
  X509_gmtime_adj(X509_getm_notBefore(x), from);
  X509_gmtime_adj(X509_getm_notAfter(x), to);
  X509_set_pubkey(x, key);
  auto* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("tact tests"),
                             -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(cn), -1, -1,
                             0);
  X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name);
  auto* signer = issuer ? issuer : x;
  add_ext(x, signer, NID_basic_constraints, ca ? "critical,CA:TRUE" : "CA:FALSE");
  if (ca)
    add_ext(x, signer, NID_key_usage, "critical,keyCertSign,cRLSign");
  if (san != nullptr)
    add_ext(x, signer, NID_subject_alt_name, san);
  X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256());
  return x;
}

void write_pem(const std::string& path, X509* cert, EVP_PKEY* key) {
  auto* f = std::fopen(path.c_str(), "w");
  if (f == nullptr)
    throw std::runtime_error("cannot write " + path);
  if (cert != nullptr)
    PEM_write_X509(f, cert);
  if (key != nullptr)
    PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr);
  std::fclose(f);
}

} // namespace

test_pki::test_pki() {
  char tmpl[] = "/tmp/tact-pki-XXXXXX";
  dir = mkdtemp(tmpl);
  constexpr long day = 86400;
  auto* ca_key = new_key();
  auto* ca = new_cert(ca_key, "tact test CA", nullptr, nullptr, -day, 30 * day,
                      true, nullptr);
  ca_cert = dir + "/ca.pem";
  write_pem(ca_cert, ca, nullptr);
  auto leaf = [&](const char* name, X509* issuer, EVP_PKEY* issuer_key,
                  long from, long to, const char* san, std::string& cert_path,
                  std::string& key_path) {
    auto* k = new_key();
    auto* c = new_cert(k, name, issuer, issuer_key, from, to, false, san);
    cert_path = dir + "/" + name + ".pem";
    key_path = dir + "/" + name + ".key";
    write_pem(cert_path, c, nullptr);
    write_pem(key_path, nullptr, k);
    X509_free(c);
    EVP_PKEY_free(k);
  };
  const char* san = "DNS:localhost,IP:127.0.0.1";
  leaf("localhost", ca, ca_key, -day, 30 * day, san, cert, key);
  leaf("expired", ca, ca_key, -30 * day, -day, san, expired_cert, expired_key);
  leaf("selfsigned", nullptr, nullptr, -day, 30 * day, san, self_signed_cert,
       self_signed_key);
  leaf("client", ca, ca_key, -day, 30 * day, "DNS:client", client_cert,
       client_key);
  X509_free(ca);
  EVP_PKEY_free(ca_key);
}

test_pki::~test_pki() {
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

// -- tls_peer -------------------------------------------------------------------

tls_peer::tls_peer(int fd, SSL_CTX* ctx, bool server, const std::string& sni)
  : fd_(fd), ssl_(SSL_new(ctx)), server_(server) {
  timeval tv{10, 0};
  setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  SSL_set_fd(ssl_, fd_);
  if (!sni.empty())
    SSL_set_tlsext_host_name(ssl_, sni.c_str());
}

tls_peer::~tls_peer() {
  SSL_free(ssl_);
  ::close(fd_);
}

bool tls_peer::handshake() {
  ERR_clear_error();
  auto rc = server_ ? SSL_accept(ssl_) : SSL_connect(ssl_);
  if (rc == 1)
    return true;
  char buf[256] = "handshake failed";
  if (auto code = ERR_get_error())
    ERR_error_string_n(code, buf, sizeof(buf));
  error_ = buf;
  return false;
}

void tls_peer::write_all(const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    auto n = SSL_write(ssl_, data.data() + done,
                       static_cast<int>(data.size() - done));
    if (n <= 0)
      return;
    done += static_cast<size_t>(n);
  }
}

std::string tls_peer::read_n(size_t n) {
  std::string result;
  char buf[16384];
  while (result.size() < n) {
    auto got = SSL_read(ssl_, buf,
                        static_cast<int>(std::min(sizeof(buf), n - result.size())));
    if (got <= 0)
      break;
    result.append(buf, static_cast<size_t>(got));
  }
  return result;
}

std::string tls_peer::read_all(bool* clean) {
  std::string result;
  char buf[16384];
  for (;;) {
    auto got = SSL_read(ssl_, buf, sizeof(buf));
    if (got > 0) {
      result.append(buf, static_cast<size_t>(got));
      continue;
    }
    if (clean)
      *clean = SSL_get_error(ssl_, got) == SSL_ERROR_ZERO_RETURN;
    return result;
  }
}

void tls_peer::send_close_notify() {
  SSL_shutdown(ssl_);
}

void tls_peer::shutdown_write() {
  ::shutdown(fd_, SHUT_WR);
}

// -- child -------------------------------------------------------------------------

child::child(const std::vector<std::string>& argv) {
  int in[2];
  int out[2];
  if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0)
    throw std::runtime_error("pipe2 failed");
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, out[1], 2);
  std::vector<char*> args;
  for (auto& a : argv)
    args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  auto rc = posix_spawnp(&pid_, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(in[0]);
  ::close(out[1]);
  in_ = in[1];
  out_fd_ = out[0];
  if (rc != 0) {
    pid_ = -1;
    throw std::runtime_error("cannot start " + argv[0]);
  }
}

child::~child() {
  if (in_ >= 0)
    ::close(in_);
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  ::close(out_fd_);
}

bool child::wait_for(const std::string& needle,
                     std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (out_.find(needle) != std::string::npos)
      return true;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0)
      return false;
    pollfd p{out_fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0)
      continue;
    char buf[4096];
    auto n = ::read(out_fd_, buf, sizeof(buf));
    if (n <= 0)
      return out_.find(needle) != std::string::npos;
    out_.append(buf, static_cast<size_t>(n));
  }
}

void child::send(const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    auto n = ::write(in_, data.data() + done, data.size() - done);
    if (n <= 0)
      return;
    done += static_cast<size_t>(n);
  }
}

void child::close_stdin() {
  if (in_ >= 0) {
    ::close(in_);
    in_ = -1;
  }
}

int child::wait(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    auto rc = ::waitpid(pid_, &status, WNOHANG);
    if (rc == pid_) {
      pid_ = -1;
      return status;
    }
    // Keep draining output so the child never blocks on a full pipe.
    wait_for("\x01never", 20ms);
  }
  return -1;
}

uint16_t free_port() {
  auto fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

tls_contexts::tls_contexts(const test_pki& pki) {
  // Outside Catch (the fuzz targets use this file too): throw.
  auto s = tls_context::server({pki.cert, pki.key});
  if (!s)
    throw std::runtime_error("server context: " + describe(s.error()));
  server = *s;
  tls_client_options opts;
  opts.ca_file = pki.ca_cert;
  auto c = tls_context::client(opts);
  if (!c)
    throw std::runtime_error("client context: " + describe(c.error()));
  client = *c;
}

} // namespace tact::test
