// The certificate authority behind mutual TLS between the control plane and host agents
// (reference §8): ECDSA P-256 keys and ECDSA-with-SHA256 signatures throughout.
//
// Errors:
//   Error(invalid_argument, "<what>: <OpenSSL error>") for unusable input: PEM that does
//   not parse, a CA certificate that is not a CA or does not match its key, a key that is
//   not P-256, a wrong or missing passphrase, a bad IssueRequest (empty or over-long common
//   name, unparsable IP address, invalid DNS name, a server certificate without any SAN,
//   non-positive validity).
//   Error(unauthenticated, "certificate verify failed: <reason>") from verify_chain.
//   Error(internal, "<what>: <OpenSSL error>") when OpenSSL fails on valid input.
// Private keys never appear in error messages.
// Thread-safety: a CertificateAuthority is immutable after construction; its const methods
// may be called from any number of threads at once. Free functions are thread-safe.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace wrenn::crypto {

enum class CertUsage {
  kServer,  // extendedKeyUsage serverAuth (host agents)
  kClient,  // extendedKeyUsage clientAuth (the control plane's "wrenn-cp" identity)
  kBoth,
};

struct IssueRequest {
  std::string common_name;            // 1..64 bytes of UTF-8, e.g. "host-…" or "wrenn-cp"
  std::vector<std::string> ip_sans;   // textual IPv4 ("10.0.0.5") or IPv6 ("fd00::1")
  std::vector<std::string> dns_sans;  // LDH names, optionally with a leading "*." label
  CertUsage usage = CertUsage::kServer;
  std::chrono::seconds validity = std::chrono::hours(24 * 7);  // from now (not NotBefore)
};

struct IssuedCert {
  std::string cert_pem;  // the leaf only; ship CertificateAuthority::cert_pem() alongside
  std::string key_pem;   // unencrypted PKCS#8 ("BEGIN PRIVATE KEY")
};

class CertificateAuthority {
 public:
  // A new self-signed CA: fresh P-256 key; subject CN=common_name; 128-bit random serial;
  // valid from one minute ago for 10 years; basicConstraints critical CA:TRUE, pathlen:0
  // (it signs leaf certificates only); keyUsage critical keyCertSign, cRLSign;
  // subjectKeyIdentifier.
  static CertificateAuthority create(std::string_view common_name);

  // An existing CA (e.g. WRENN_CA_CERT / WRENN_CA_KEY). cert_pem: the first certificate in
  // the text is the CA. key_pem: PKCS#8, encrypted PKCS#8 or SEC1 "EC PRIVATE KEY".
  // passphrase: empty for an unencrypted key (an encrypted key then fails instead of
  // prompting on a terminal). Checks: the key is P-256 and matches the certificate, and
  // the certificate has basicConstraints CA:TRUE and (if it has keyUsage) keyCertSign.
  // Validity dates are not checked; see cert_not_after.
  static CertificateAuthority load(std::string_view cert_pem, std::string_view key_pem,
                                   std::string_view passphrase = {});

  // Move-only. A moved-from CertificateAuthority may only be destroyed or assigned to.
  CertificateAuthority(CertificateAuthority&&) noexcept;
  CertificateAuthority& operator=(CertificateAuthority&&) noexcept;
  ~CertificateAuthority();

  std::string cert_pem() const;
  // Unencrypted PKCS#8 PEM.
  std::string key_pem() const;
  // Encrypted PKCS#8 PEM ("BEGIN ENCRYPTED PRIVATE KEY": PBES2, PBKDF2-HMAC-SHA256 with
  // 600000 iterations and a random 16-byte salt, AES-256-CBC), readable by load() and by
  // `openssl pkey`. This is the supported way to keep the CA key encrypted at rest.
  // passphrase must be non-empty.
  std::string key_pem_encrypted(std::string_view passphrase) const;

  // A leaf certificate for a fresh P-256 key: subject CN=common_name, issuer = this CA;
  // NotBefore = now - 1 min, NotAfter = now + validity; random 128-bit serial; v3
  // extensions basicConstraints critical CA:FALSE, keyUsage critical digitalSignature,
  // extendedKeyUsage serverAuth and/or clientAuth per usage, subjectAltName with the IP
  // and DNS entries (omitted when there are none; required for kServer and kBoth),
  // subjectKeyIdentifier, authorityKeyIdentifier. Signed ECDSA-with-SHA256.
  IssuedCert issue(const IssueRequest& request) const;

 private:
  struct Impl;
  explicit CertificateAuthority(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Lowercase hex SHA-256 of the certificate's DER encoding (the hosts.cert_fingerprint
// column). Error(invalid_argument) if cert_pem does not parse.
std::string cert_fingerprint_sha256(std::string_view cert_pem);

// The certificate's NotAfter. Error(invalid_argument) if cert_pem does not parse.
std::chrono::system_clock::time_point cert_not_after(std::string_view cert_pem);

// Verifies cert_pem against the single trust anchor ca_pem at the current time (signature,
// validity period, CA constraints). No purpose or name check. Throws on failure.
void verify_chain(std::string_view ca_pem, std::string_view cert_pem);

}  // namespace wrenn::crypto
