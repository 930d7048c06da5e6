// The control plane's host CA and its mutual-TLS identity towards host agents.
//
// Contract:
//  - load_or_create_host_ca(): WRENN_CA_CERT + WRENN_CA_KEY (CpConfig::ca_cert_pem /
//    ca_key_pem, PEM text) when configured — used as given, nothing stored. Otherwise the CA
//    kept in cp_secrets row "host_ca": JSON {"cert_pem", "key_sealed"} where key_sealed is
//    base64 of crypto::seal(encryption key, PKCS#8 PEM, aad "host_ca"); the private key is
//    never stored in plain text. On first start a new CA ("Wrenn host CA", P-256, 10 years)
//    is inserted if absent and the row re-read, so replicas starting together end up with
//    the one CA that won the insert.
//    Errors: Error(invalid_argument) when only one of the two settings is given or they do
//    not load; Error(data_loss) when the stored key does not open with the configured
//    encryption key (WRENN_ENCRYPTION_KEY changed); SqlError from the database.
//  - HostTls: what host routes and the host directory need from the CA. Issues agent server
//    certificates (CN = host id, IP SAN = the agent's IP, serverAuth, kHostCertValidity)
//    and holds the control plane's own client certificate (CN "wrenn-cp", clientAuth,
//    kCpCertValidity, in memory only). client_context() reissues that certificate when it
//    is older than kCpCertRenewAfter, so a long-running process never presents an expired
//    one. Thread-safe.
#pragma once

#include <boost/asio/ssl/context.hpp>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>

#include "crypto/aead.h"
#include "crypto/ca.h"
#include "pg/pool.h"
#include "server_context.h"

namespace wrenn::cp::auth {

inline constexpr const char* kCpClientCommonName = "wrenn-cp";
inline constexpr std::chrono::seconds kHostCertValidity = std::chrono::hours(24 * 365);
inline constexpr std::chrono::seconds kCpCertValidity = std::chrono::hours(24 * 7);
inline constexpr std::chrono::seconds kCpCertRenewAfter = std::chrono::hours(24);

crypto::CertificateAuthority load_or_create_host_ca(pg::Pool& db, const crypto::AeadKey& key,
                                                    const CpConfig& config);

class HostTls {
 public:
  explicit HostTls(crypto::CertificateAuthority ca);

  std::string ca_cert_pem() const { return ca_pem_; }
  // A server certificate for the agent of host_id reachable at ip (an IP literal).
  crypto::IssuedCert issue_host_cert(const std::string& host_id, const std::string& ip) const;
  // The control plane's client TLS context (crypto::make_mtls_client_context), renewed as
  // described above. Connections keep the context they were made with.
  std::shared_ptr<boost::asio::ssl::context> client_context();

 private:
  crypto::CertificateAuthority ca_;
  std::string ca_pem_;
  std::mutex mu_;
  std::shared_ptr<boost::asio::ssl::context> client_ctx_;
  std::chrono::steady_clock::time_point issued_{};
};

}  // namespace wrenn::cp::auth
