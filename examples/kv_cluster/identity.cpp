// Which shard a node is, proved by its certificate (see identity.hpp).

#include "identity.hpp"

#include <algorithm>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

namespace kv {

namespace {

using x509_ptr = std::unique_ptr<X509, decltype(&X509_free)>;

std::string openssl_reason() {
  auto code = ERR_get_error();
  ERR_clear_error();
  if (code == 0)
    return "unknown reason";
  char buf[256];
  ERR_error_string_n(code, buf, sizeof(buf));
  return buf;
}

bool read_file(const std::string& path, std::string& out) {
  auto* f = std::fopen(path.c_str(), "rb");
  if (!f)
    return false;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0)
    out.append(buf, n);
  std::fclose(f);
  return true;
}

x509_ptr parse_cert(const std::string& pem) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio{
    BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), BIO_free};
  return x509_ptr{bio ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)
                      : nullptr,
                  X509_free};
}

// SHA-256 except for the keys that hash by themselves.
const EVP_MD* digest_for(EVP_PKEY* key) {
  auto id = EVP_PKEY_get_id(key);
  return id == EVP_PKEY_ED25519 || id == EVP_PKEY_ED448 ? nullptr
                                                        : EVP_sha256();
}

// Whether `cert` names shard `shard`.
bool names_shard(X509* cert, uint32_t shard) {
  auto name = "shard-" + std::to_string(shard);
  // Every common name, compared with its length (a NUL inside a name does
  // not cut it short).
  auto* subject = X509_get_subject_name(cert);
  for (int at = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
       at >= 0; at = X509_NAME_get_index_by_NID(subject, NID_commonName, at)) {
    auto* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, at));
    std::string cn{reinterpret_cast<const char*>(ASN1_STRING_get0_data(data)),
                   static_cast<size_t>(ASN1_STRING_length(data))};
    if (cn == "kv_cluster " + name)
      return true;
  }
  auto* alts = static_cast<GENERAL_NAMES*>(
    X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  bool found = false;
  for (int i = 0; alts && i < sk_GENERAL_NAME_num(alts) && !found; ++i) {
    auto* gn = sk_GENERAL_NAME_value(alts, i);
    if (gn->type != GEN_URI)
      continue;
    auto* uri = gn->d.uniformResourceIdentifier;
    std::string text{reinterpret_cast<const char*>(ASN1_STRING_get0_data(uri)),
                     static_cast<size_t>(ASN1_STRING_length(uri))};
    found = text == "kv-cluster:" + name;
  }
  GENERAL_NAMES_free(alts);
  return found;
}

std::string subject_of(X509* cert) {
  char cn[256] = {0};
  if (X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName,
                                cn, sizeof(cn))
      <= 0)
    return "(no common name)";
  return std::string{"'"} + cn + "'";
}

caf::error refused(const std::string& why) {
  return caf::make_error(caf::sec::invalid_argument, why);
}

} // namespace

std::string claim_text(uint32_t shard, const std::string& purpose) {
  return "kv_cluster: shard-" + std::to_string(shard) + " " + purpose + "\n";
}

// -- credentials -----------------------------------------------------------------------

std::unique_ptr<credentials>
credentials::load(const std::string& cert_file, const std::string& key_file,
                  std::string& error) {
  std::unique_ptr<credentials> out{new credentials};
  if (!read_file(cert_file, out->cert_pem_) || !parse_cert(out->cert_pem_)) {
    error = "cannot read a certificate from " + cert_file;
    return nullptr;
  }
  auto* f = std::fopen(key_file.c_str(), "rb");
  if (f) {
    out->key_.reset(PEM_read_PrivateKey(f, nullptr, nullptr, nullptr));
    std::fclose(f);
  }
  if (!out->key_) {
    error = "cannot read a key from " + key_file + ": " + openssl_reason();
    return nullptr;
  }
  return out;
}

std::string credentials::sign(const std::string& text) const {
  // Whatever fails here leaves nothing on this thread's error queue.
  struct clear_errors {
    ~clear_errors() { ERR_clear_error(); }
  } guard;
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx{
    EVP_MD_CTX_new(), EVP_MD_CTX_free};
  size_t len = 0;
  if (!ctx
      || EVP_DigestSignInit(ctx.get(), nullptr, digest_for(key_.get()),
                            nullptr, key_.get())
           != 1
      || EVP_DigestSign(ctx.get(), nullptr, &len,
                        reinterpret_cast<const unsigned char*>(text.data()),
                        text.size())
           != 1)
    return {};
  std::string sig(len, '\0');
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()),
                     &len,
                     reinterpret_cast<const unsigned char*>(text.data()),
                     text.size())
      != 1)
    return {};
  sig.resize(len);
  return sig;
}

// -- credential_check ------------------------------------------------------------------

std::unique_ptr<credential_check>
credential_check::load(const std::string& ca_file, std::string& error) {
  std::unique_ptr<credential_check> out{new credential_check};
  out->store_.reset(X509_STORE_new());
  if (!out->store_ || X509_STORE_load_file(out->store_.get(), ca_file.c_str()) != 1) {
    error = "cannot load the CA from " + ca_file + ": " + openssl_reason();
    return nullptr;
  }
  return out;
}

std::string credential_check::challenge(const caf::actor_addr& who) {
  std::string bytes(32, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(bytes.data()), 32) != 1) {
    ERR_clear_error();
    return {};
  }
  if (challenges_.count(who) == 0) {
    order_.push_back(who);
    if (order_.size() > 1024) {
      challenges_.erase(order_.front());
      order_.pop_front();
    }
  }
  auto& mine = challenges_[who];
  mine.push_back(bytes);
  if (mine.size() > 4)
    mine.pop_front();
  return bytes;
}

caf::error credential_check::verify(const caf::actor_addr& who, uint32_t shard,
                                    const std::string& what,
                                    const std::string& cert_pem,
                                    const std::string& signature) {
  auto i = challenges_.find(who);
  if (i == challenges_.end())
    return refused("no challenge was given to the asker");
  auto cert = parse_cert(cert_pem);
  if (!cert) {
    ERR_clear_error();
    return refused("no certificate with the claim to be shard "
                   + std::to_string(shard));
  }
  std::unique_ptr<X509_STORE_CTX, decltype(&X509_STORE_CTX_free)> ctx{
    X509_STORE_CTX_new(), X509_STORE_CTX_free};
  if (!ctx) {
    ERR_clear_error();
    return refused("out of memory checking a certificate");
  }
  if (X509_STORE_CTX_init(ctx.get(), store_.get(), cert.get(), nullptr) != 1
      || X509_verify_cert(ctx.get()) != 1) {
    std::string why = X509_verify_cert_error_string(
      X509_STORE_CTX_get_error(ctx.get()));
    ERR_clear_error();
    return refused("certificate " + subject_of(cert.get())
                   + " is not from the cluster's CA: " + why);
  }
  if (!names_shard(cert.get(), shard))
    return refused("certificate " + subject_of(cert.get())
                   + " does not name shard " + std::to_string(shard));
  auto* key = X509_get0_pubkey(cert.get());
  // Which of the asker's challenges was signed (claims made side by side
  // each signed their own); that one is used up.
  auto& nonces = i->second;
  for (auto n = nonces.begin(); key != nullptr && n != nonces.end(); ++n) {
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> md{
      EVP_MD_CTX_new(), EVP_MD_CTX_free};
    auto text = what + *n;
    if (md
        && EVP_DigestVerifyInit(md.get(), nullptr, digest_for(key), nullptr,
                                key)
             == 1
        && EVP_DigestVerify(
             md.get(), reinterpret_cast<const unsigned char*>(signature.data()),
             signature.size(),
             reinterpret_cast<const unsigned char*>(text.data()), text.size())
             == 1) {
      nonces.erase(n);
      if (nonces.empty()) {
        challenges_.erase(i);
        order_.erase(std::find(order_.begin(), order_.end(), who));
      }
      return {};
    }
    ERR_clear_error();
  }
  return refused("the signature of " + subject_of(cert.get())
                 + " does not match its claim to be shard "
                 + std::to_string(shard));
}

} // namespace kv
