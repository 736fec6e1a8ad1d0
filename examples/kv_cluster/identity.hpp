#pragma once

// Which shard a node is, proved by its certificate.
//
// CAF's TLS links check that a peer's certificate comes from the cluster's
// CA but do not tell the actors which certificate it was, so any node of
// the cluster could claim any shard id. A node that registers as shard N
// with the directory, or asks a shard for the copies of shard N's writes,
// therefore proves it: it asks the other side for a challenge (fresh
// random bytes), and sends its certificate with a signature, by its key, of
// what it asks and the challenge. The other side checks that the
// certificate comes from the cluster's CA, that it names shard N, and the
// signature.
//
// A certificate names shard N with the common name "kv_cluster shard-N"
// (the launcher's certificates do) or with a subjectAltName URI
// "kv-cluster:shard-N"; one certificate may name several shards (one
// machine's certificate for the shards it runs).

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>

#include <caf/actor_addr.hpp>
#include <caf/error.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/expected.hpp>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "kv.hpp"

namespace kv {

/// What a node shows: its certificate and what its key signs.
class credentials {
public:
  /// Loads a PEM certificate and key; none, and `error` says why, on
  /// failure.
  static std::unique_ptr<credentials>
  load(const std::string& cert_file, const std::string& key_file,
       std::string& error);

  [[nodiscard]] const std::string& cert_pem() const noexcept {
    return cert_pem_;
  }

  /// A signature of `text` (SHA-256, or the key's own scheme for Ed25519).
  [[nodiscard]] std::string sign(const std::string& text) const;

private:
  std::string cert_pem_;
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key_{nullptr,
                                                           EVP_PKEY_free};
};

/// What checks them: the cluster's CA and the challenges given out.
class credential_check {
public:
  static std::unique_ptr<credential_check> load(const std::string& ca_file,
                                                std::string& error);

  /// Fresh random bytes for `who` to sign. An asker may hold 4 at once
  /// (claims made side by side); of all askers, the 1,024 newest count.
  std::string challenge(const caf::actor_addr& who);

  /// Nothing if `cert_pem` comes from the CA, names `shard`, and
  /// `signature` signs `what` followed by one of the challenges given to
  /// `who` (that one is used up); otherwise why not.
  caf::error verify(const caf::actor_addr& who, uint32_t shard,
                    const std::string& what, const std::string& cert_pem,
                    const std::string& signature);

private:
  std::unique_ptr<X509_STORE, decltype(&X509_STORE_free)> store_{
    nullptr, X509_STORE_free};
  std::map<caf::actor_addr, std::deque<std::string>> challenges_;
  std::deque<caf::actor_addr> order_;
};

/// The text that a node signs to be shard `shard` for `purpose`
/// ("register at HOST:PORT", "fetch from shard J").
std::string claim_text(uint32_t shard, const std::string& purpose);

/// Asks `target` for a challenge, then calls `then(cert, signature)` in
/// `self`'s context: the proof that this node is shard `shard` for
/// `purpose` (empty without `creds`: insecure links, nothing to prove);
/// `fail(error)` if no challenge comes.
template <class Then, class Fail>
void prove(caf::event_based_actor* self, const caf::actor& target,
           const credentials* creds, uint32_t shard,
           const std::string& purpose, Then then, Fail fail) {
  self->request(target, std::chrono::seconds{5}, challenge_atom::value)
    .then(
      [=](const std::string& nonce) mutable {
        if (!creds) {
          then(std::string{}, std::string{});
          return;
        }
        then(creds->cert_pem(), creds->sign(claim_text(shard, purpose) + nonce));
      },
      [=](caf::error& err) mutable { fail(err); });
}

} // namespace kv
