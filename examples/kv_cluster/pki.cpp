// The cluster's own CA, made at the launcher's start: a P-256 CA and one
// certificate per node, signed by it, in a directory only this user can
// read. The CA's key signs nothing else and goes with the directory.

#include "pki.hpp"

#include <cstdio>
#include <memory>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

namespace kv {

namespace {

using key_ptr = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;
using cert_ptr = std::unique_ptr<X509, decltype(&X509_free)>;

key_ptr new_key() {
  return key_ptr{EVP_EC_gen("P-256"), EVP_PKEY_free};
}

bool add_ext(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  auto* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  if (ext == nullptr)
    return false;
  auto ok = X509_add_ext(cert, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  return ok;
}

// A certificate for `key` named `cn`, valid from a day ago for `days`,
// signed by `issuer` with `issuer_key` (itself when null: the CA).
cert_ptr make_cert(EVP_PKEY* key, const std::string& cn, X509* issuer,
                   EVP_PKEY* issuer_key, long days) {
  cert_ptr cert{X509_new(), X509_free};
  if (!cert)
    return cert;
  auto* x = cert.get();
  X509_set_version(x, 2);
  unsigned char serial[16];
  RAND_bytes(serial, sizeof(serial));
  serial[0] &= 0x7f;
  auto* bn = BN_bin2bn(serial, sizeof(serial), nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
  BN_free(bn);
  X509_gmtime_adj(X509_getm_notBefore(x), -86400);
  X509_gmtime_adj(X509_getm_notAfter(x), days * 86400);
  X509_set_pubkey(x, key);
  auto* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(
                               "kv_cluster"),
                             -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(
                               cn.c_str()),
                             -1, -1, 0);
  auto* signer = issuer != nullptr ? issuer : x;
  X509_set_issuer_name(x, X509_get_subject_name(signer));
  bool ok = true;
  if (issuer == nullptr) {
    ok = add_ext(x, signer, NID_basic_constraints, "critical,CA:TRUE,pathlen:0")
         && add_ext(x, signer, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    // Each node is a TLS server to some links and a client to others.
    ok = add_ext(x, signer, NID_basic_constraints, "critical,CA:FALSE")
         && add_ext(x, signer, NID_key_usage,
                    "critical,digitalSignature")
         && add_ext(x, signer, NID_ext_key_usage, "serverAuth,clientAuth");
  }
  ok = ok && add_ext(x, signer, NID_subject_key_identifier, "hash");
  if (issuer != nullptr)
    ok = ok && add_ext(x, signer, NID_authority_key_identifier, "keyid");
  if (!ok || X509_sign(x, issuer_key != nullptr ? issuer_key : key,
                       EVP_sha256()) == 0)
    cert.reset();
  return cert;
}

bool write_key(const std::string& path, EVP_PKEY* key) {
  auto fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
                   0600);
  if (fd < 0)
    return false;
  auto* f = ::fdopen(fd, "w");
  if (f == nullptr) {
    ::close(fd);
    return false;
  }
  auto ok = PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr,
                                 nullptr) == 1;
  return std::fclose(f) == 0 && ok;
}

bool write_cert(const std::string& path, X509* cert) {
  auto fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
                   0644);
  if (fd < 0)
    return false;
  auto* f = ::fdopen(fd, "w");
  if (f == nullptr) {
    ::close(fd);
    return false;
  }
  auto ok = PEM_write_X509(f, cert) == 1;
  return std::fclose(f) == 0 && ok;
}

} // namespace

std::optional<cluster_pki> make_cluster_pki(const std::vector<std::string>& names,
                                            std::string& error) {
  const char* tmp = std::getenv("TMPDIR");
  std::string templ = std::string{tmp != nullptr && *tmp ? tmp : "/tmp"}
                      + "/kv_cluster-pki-XXXXXX";
  if (::mkdtemp(templ.data()) == nullptr) {
    error = "cannot make a directory for the cluster's certificates";
    return std::nullopt;
  }
  cluster_pki pki;
  pki.dir = templ;
  pki.ca_file = pki.dir + "/ca.pem";
  auto ca_key = new_key();
  if (!ca_key) {
    error = "cannot make the CA's key";
    remove_cluster_pki(pki);
    return std::nullopt;
  }
  auto ca = make_cert(ca_key.get(), "kv_cluster CA", nullptr, nullptr, 30);
  if (!ca || !write_cert(pki.ca_file, ca.get())) {
    error = "cannot make the CA's certificate";
    remove_cluster_pki(pki);
    return std::nullopt;
  }
  for (auto& name : names) {
    auto key = new_key();
    auto cert = key ? make_cert(key.get(), "kv_cluster " + name, ca.get(),
                                ca_key.get(), 30)
                    : cert_ptr{nullptr, X509_free};
    node_identity id{name, pki.dir + "/" + name + ".pem",
                     pki.dir + "/" + name + ".key"};
    if (!cert || !write_cert(id.cert_file, cert.get())
        || !write_key(id.key_file, key.get())) {
      error = "cannot make the certificate of " + name;
      remove_cluster_pki(pki);
      return std::nullopt;
    }
    pki.nodes.push_back(std::move(id));
  }
  return pki;
}

void remove_cluster_pki(const cluster_pki& pki) {
  if (pki.dir.empty())
    return;
  for (auto& n : pki.nodes) {
    ::unlink(n.cert_file.c_str());
    ::unlink(n.key_file.c_str());
  }
  ::unlink(pki.ca_file.c_str());
  ::rmdir(pki.dir.c_str());
}

} // namespace kv
