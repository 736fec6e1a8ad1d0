// The extra info of a TLS connection, as Python's ssl module shows it:
// getpeercert()'s fields, cipher(), and what the SSL object tells.

#include "tact/transports/detail/tls_info.hpp"

#include <functional>
#include <string>

#include <arpa/inet.h>

#include <openssl/bio.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

namespace tact::detail {

namespace {

std::string bio_text(const std::function<void(BIO*)>& print) {
  auto* bio = BIO_new(BIO_s_mem());
  print(bio);
  char* data = nullptr;
  auto len = BIO_get_mem_data(bio, &data);
  std::string result(data, static_cast<size_t>(len));
  BIO_free(bio);
  return result;
}

// A name as Python's getpeercert() shows it, flattened: [[key, value], ...].
caf::config_value name_list(const X509_NAME* name) {
  caf::config_value::list result;
  for (int i = 0; i < X509_NAME_entry_count(name); ++i) {
    auto* entry = X509_NAME_get_entry(name, i);
    auto nid = OBJ_obj2nid(X509_NAME_ENTRY_get_object(entry));
    unsigned char* utf8 = nullptr;
    auto len = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(entry));
    if (len < 0)
      continue;
    caf::config_value::list pair;
    pair.emplace_back(std::string{nid != NID_undef ? OBJ_nid2ln(nid) : "?"});
    pair.emplace_back(std::string(reinterpret_cast<char*>(utf8),
                                  static_cast<size_t>(len)));
    OPENSSL_free(utf8);
    result.emplace_back(std::move(pair));
  }
  return caf::config_value{std::move(result)};
}

caf::config_value alt_names(X509* cert) {
  caf::config_value::list result;
  auto* names = static_cast<GENERAL_NAMES*>(
    X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (names == nullptr)
    return caf::config_value{std::move(result)};
  for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
    auto* gen = sk_GENERAL_NAME_value(names, i);
    caf::config_value::list pair;
    if (gen->type == GEN_DNS) {
      auto* s = gen->d.dNSName;
      pair.emplace_back(std::string{"DNS"});
      pair.emplace_back(std::string(
        reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
        static_cast<size_t>(ASN1_STRING_length(s))));
    } else if (gen->type == GEN_IPADD) {
      auto* s = gen->d.iPAddress;
      char text[INET6_ADDRSTRLEN] = {};
      auto len = ASN1_STRING_length(s);
      inet_ntop(len == 4 ? AF_INET : AF_INET6, ASN1_STRING_get0_data(s), text,
                sizeof(text));
      pair.emplace_back(std::string{"IP Address"});
      pair.emplace_back(std::string{text});
    } else {
      continue;
    }
    result.emplace_back(std::move(pair));
  }
  GENERAL_NAMES_free(names);
  return caf::config_value{std::move(result)};
}

// Python's getpeercert(): the fields of a verified certificate.
caf::settings cert_info(X509* cert) {
  caf::settings result;
  result["subject"] = name_list(X509_get_subject_name(cert));
  result["issuer"] = name_list(X509_get_issuer_name(cert));
  result["version"] = static_cast<int64_t>(X509_get_version(cert) + 1);
  result["serialNumber"] = bio_text([&](BIO* b) {
    i2a_ASN1_INTEGER(b, X509_get0_serialNumber(cert));
  });
  result["notBefore"] = bio_text([&](BIO* b) {
    ASN1_TIME_print(b, X509_get0_notBefore(cert));
  });
  result["notAfter"] = bio_text([&](BIO* b) {
    ASN1_TIME_print(b, X509_get0_notAfter(cert));
  });
  result["subjectAltName"] = alt_names(cert);
  return result;
}

} // namespace

caf::settings connection_info(SSL* ssl, bool verifies_peer, bool server_side,
                              const std::string& server_hostname) {
  caf::settings info;
  if (auto* cert = SSL_get1_peer_certificate(ssl)) {
    // As Python: a certificate that was not verified shows as empty.
    info["peercert"] = SSL_get_verify_result(ssl) == X509_V_OK && verifies_peer
                         ? caf::config_value{cert_info(cert)}
                         : caf::config_value{caf::settings{}};
    X509_free(cert);
  }
  auto* cipher = SSL_get_current_cipher(ssl);
  caf::config_value::list c;
  c.emplace_back(std::string{SSL_CIPHER_get_name(cipher)});
  c.emplace_back(std::string{SSL_get_version(ssl)});
  c.emplace_back(static_cast<int64_t>(SSL_CIPHER_get_bits(cipher, nullptr)));
  info["cipher"] = std::move(c);
  caf::settings obj;
  obj["version"] = std::string{SSL_get_version(ssl)};
  obj["server_side"] = server_side;
  obj["server_hostname"] = server_hostname;
  const unsigned char* alpn = nullptr;
  unsigned alpn_len = 0;
  SSL_get0_alpn_selected(ssl, &alpn, &alpn_len);
  obj["alpn_protocol"] = std::string(reinterpret_cast<const char*>(alpn),
                                     alpn_len);
  obj["session_reused"] = SSL_session_reused(ssl) == 1;
  info["ssl_object"] = std::move(obj);
  return info;
}

} // namespace tact::detail
