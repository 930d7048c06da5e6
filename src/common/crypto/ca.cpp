#include "crypto/ca.h"

#include <openssl/ec.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>

#include <algorithm>
#include <climits>
#include <ctime>
#include <mutex>

#include "crypto/encoding.h"
#include "crypto/ossl.h"
#include "crypto/random.h"

namespace wrenn::crypto {

using detail::check;
using detail::openssl_error;

namespace {

constexpr long kBackdateSeconds = 60;
constexpr long kCaValiditySeconds = 10L * 365 * 24 * 3600 + 2L * 24 * 3600;  // 10 y + leap days
constexpr int kKeyEncryptionIterations = 600000;
constexpr std::size_t kMaxCommonName = 64;  // RFC 5280 ub-common-name

// Never prompts: supplies the passphrase in u (a std::string_view*), or fails.
int passphrase_cb(char* buf, int size, int /*rwflag*/, void* u) {
  const auto* pass = static_cast<const std::string_view*>(u);
  if (pass == nullptr || pass->empty() || pass->size() > static_cast<std::size_t>(size)) {
    return -1;
  }
  std::copy(pass->begin(), pass->end(), buf);
  return static_cast<int>(pass->size());
}

detail::X509Ptr parse_cert(std::string_view pem, std::string_view what) {
  ERR_clear_error();
  auto bio = detail::mem_bio(pem);
  // passphrase_cb without a passphrase: an "encrypted" PEM fails instead of prompting.
  detail::X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, passphrase_cb, nullptr));
  if (!cert) {
    throw openssl_error(Code::kInvalidArgument, std::string(what) + ": invalid PEM certificate");
  }
  return cert;
}

bool is_p256(EVP_PKEY* key) {
  if (!EVP_PKEY_is_a(key, "EC")) return false;
  char name[64];
  std::size_t len = 0;
  if (EVP_PKEY_get_group_name(key, name, sizeof name, &len) != 1) return false;
  return OBJ_sn2nid(name) == NID_X9_62_prime256v1 ||
         EC_curve_nist2nid(name) == NID_X9_62_prime256v1;
}

detail::PkeyPtr new_p256_key() {
  detail::PkeyPtr key(EVP_EC_gen("P-256"));
  check(key != nullptr, "generate P-256 key");
  return key;
}

std::string pem_of_cert(X509* cert) {
  detail::BioPtr bio(BIO_new(BIO_s_mem()));
  check(bio != nullptr, "BIO_new");
  check(PEM_write_bio_X509(bio.get(), cert) == 1, "PEM_write_bio_X509");
  return detail::bio_contents(bio.get());
}

std::string pem_of_key(EVP_PKEY* key) {
  detail::BioPtr bio(BIO_new(BIO_s_mem()));
  check(bio != nullptr, "BIO_new");
  // PEM_write_bio_PrivateKey writes PKCS#8 ("BEGIN PRIVATE KEY").
  check(PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) == 1,
        "PEM_write_bio_PrivateKey");
  std::string pem = detail::bio_contents(bio.get());
  // Best effort: scrub the BIO's copy of the key before it is freed.
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  if (n > 0 && data != nullptr) OPENSSL_cleanse(data, static_cast<std::size_t>(n));
  return pem;
}

detail::Asn1IntPtr random_serial() {
  for (;;) {
    unsigned char raw[16];
    random_fill(raw);
    detail::BnPtr bn(BN_bin2bn(raw, sizeof raw, nullptr));
    check(bn != nullptr, "BN_bin2bn");
    if (BN_is_zero(bn.get())) continue;  // serials must be positive
    detail::Asn1IntPtr serial(BN_to_ASN1_INTEGER(bn.get(), nullptr));
    check(serial != nullptr, "BN_to_ASN1_INTEGER");
    return serial;
  }
}

void validate_common_name(std::string_view cn) {
  if (cn.empty() || cn.size() > kMaxCommonName) {
    throw Error(Code::kInvalidArgument, "certificate common name must be 1..64 bytes");
  }
}

// Adds an extension given in OpenSSL's configuration syntax (fixed strings only; never
// pass request data through here).
void add_ext(X509* cert, X509V3_CTX* ctx, int nid, const char* value) {
  detail::X509ExtPtr ext(X509V3_EXT_conf_nid(nullptr, ctx, nid, value));
  check(ext != nullptr, std::string("extension ") + OBJ_nid2sn(nid));
  check(X509_add_ext(cert, ext.get(), -1) == 1, "X509_add_ext");
}

bool valid_dns_name(std::string_view name) {
  if (name.starts_with("*.")) name.remove_prefix(2);
  if (name.empty() || name.size() > 253) return false;
  std::size_t label = 0;
  for (std::size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (c == '.') {
      if (label == 0 || name[i - 1] == '-') return false;
      label = 0;
    } else if (alnum || (c == '-' && label > 0)) {
      if (++label > 63) return false;
    } else {
      return false;
    }
  }
  return label > 0 && name.back() != '-';
}

detail::GeneralNamesPtr build_sans(const IssueRequest& req) {
  detail::GeneralNamesPtr names(GENERAL_NAMES_new());
  check(names != nullptr, "GENERAL_NAMES_new");
  auto push = [&](detail::GeneralNamePtr gn) {
    check(sk_GENERAL_NAME_push(names.get(), gn.get()) > 0, "sk_GENERAL_NAME_push");
    gn.release();
  };
  for (const std::string& ip : req.ip_sans) {
    detail::Asn1OctetPtr addr;
    if (ip.find('\0') == std::string::npos) addr.reset(a2i_IPADDRESS(ip.c_str()));
    if (!addr) {
      detail::drain_errors();
      throw Error(Code::kInvalidArgument, "invalid IP address in certificate request: " + ip);
    }
    detail::GeneralNamePtr gn(GENERAL_NAME_new());
    check(gn != nullptr, "GENERAL_NAME_new");
    GENERAL_NAME_set0_value(gn.get(), GEN_IPADD, addr.release());
    push(std::move(gn));
  }
  for (const std::string& dns : req.dns_sans) {
    if (!valid_dns_name(dns)) {
      throw Error(Code::kInvalidArgument, "invalid DNS name in certificate request: " + dns);
    }
    ASN1_IA5STRING* str = ASN1_IA5STRING_new();
    check(str != nullptr, "ASN1_IA5STRING_new");
    if (ASN1_STRING_set(str, dns.data(), static_cast<int>(dns.size())) != 1) {
      ASN1_IA5STRING_free(str);
      check(false, "ASN1_STRING_set");
    }
    detail::GeneralNamePtr gn(GENERAL_NAME_new());
    if (!gn) ASN1_IA5STRING_free(str);
    check(gn != nullptr, "GENERAL_NAME_new");
    GENERAL_NAME_set0_value(gn.get(), GEN_DNS, str);
    push(std::move(gn));
  }
  return names;
}

// A v3 certificate for `subject_key` with subject CN=cn, random serial and the validity
// window [now - backdate, now + validity]; extensions are added by the caller.
detail::X509Ptr new_cert(std::string_view cn, EVP_PKEY* subject_key, long validity_seconds) {
  detail::X509Ptr cert(X509_new());
  check(cert != nullptr, "X509_new");
  check(X509_set_version(cert.get(), X509_VERSION_3) == 1, "X509_set_version");
  check(X509_set_serialNumber(cert.get(), random_serial().get()) == 1, "X509_set_serialNumber");
  detail::X509NamePtr name(X509_NAME_new());
  check(name != nullptr, "X509_NAME_new");
  if (X509_NAME_add_entry_by_NID(name.get(), NID_commonName, MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(cn.data()),
                                 static_cast<int>(cn.size()), -1, 0) != 1) {
    throw openssl_error(Code::kInvalidArgument, "certificate common name");
  }
  check(X509_set_subject_name(cert.get(), name.get()) == 1, "X509_set_subject_name");
  check(X509_gmtime_adj(X509_getm_notBefore(cert.get()), -kBackdateSeconds) != nullptr,
        "set notBefore");
  check(X509_gmtime_adj(X509_getm_notAfter(cert.get()), validity_seconds) != nullptr,
        "set notAfter");
  check(X509_set_pubkey(cert.get(), subject_key) == 1, "X509_set_pubkey");
  return cert;
}

}  // namespace

struct CertificateAuthority::Impl {
  detail::X509Ptr cert;
  detail::PkeyPtr key;
  // Signing with a shared EVP_PKEY is documented as safe, but issuance is rare enough that
  // serialising it costs nothing and removes any doubt about OpenSSL's lazy caches.
  mutable std::mutex issue_mu;
};

CertificateAuthority::CertificateAuthority(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CertificateAuthority::CertificateAuthority(CertificateAuthority&&) noexcept = default;
CertificateAuthority& CertificateAuthority::operator=(CertificateAuthority&&) noexcept = default;
CertificateAuthority::~CertificateAuthority() = default;

CertificateAuthority CertificateAuthority::create(std::string_view common_name) {
  validate_common_name(common_name);
  ERR_clear_error();
  auto impl = std::make_unique<Impl>();
  impl->key = new_p256_key();
  impl->cert = new_cert(common_name, impl->key.get(), kCaValiditySeconds);
  X509* cert = impl->cert.get();
  check(X509_set_issuer_name(cert, X509_get_subject_name(cert)) == 1, "X509_set_issuer_name");
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, cert, cert, nullptr, nullptr, 0);
  add_ext(cert, &ctx, NID_basic_constraints, "critical,CA:TRUE,pathlen:0");
  add_ext(cert, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign");
  add_ext(cert, &ctx, NID_subject_key_identifier, "hash");
  check(X509_sign(cert, impl->key.get(), EVP_sha256()) > 0, "X509_sign");
  return CertificateAuthority(std::move(impl));
}

CertificateAuthority CertificateAuthority::load(std::string_view cert_pem, std::string_view key_pem,
                                                std::string_view passphrase) {
  auto impl = std::make_unique<Impl>();
  impl->cert = parse_cert(cert_pem, "CA certificate");
  {
    auto bio = detail::mem_bio(key_pem);
    impl->key.reset(PEM_read_bio_PrivateKey(bio.get(), nullptr, passphrase_cb, &passphrase));
  }
  if (!impl->key) {
    throw openssl_error(Code::kInvalidArgument,
                        passphrase.empty()
                            ? "CA key: invalid PEM private key (or encrypted; no passphrase given)"
                            : "CA key: invalid PEM private key or wrong passphrase");
  }
  if (!is_p256(impl->key.get())) {
    throw Error(Code::kInvalidArgument, "CA key: not an ECDSA P-256 key");
  }
  if (X509_check_private_key(impl->cert.get(), impl->key.get()) != 1) {
    throw openssl_error(Code::kInvalidArgument, "CA key does not match the CA certificate");
  }
  uint32_t flags = X509_get_extension_flags(impl->cert.get());
  if ((flags & EXFLAG_INVALID) != 0 || (flags & EXFLAG_CA) == 0) {
    throw Error(Code::kInvalidArgument, "CA certificate: basicConstraints CA:TRUE missing");
  }
  if ((X509_get_key_usage(impl->cert.get()) & KU_KEY_CERT_SIGN) == 0) {
    throw Error(Code::kInvalidArgument, "CA certificate: keyUsage lacks keyCertSign");
  }
  detail::drain_errors();
  return CertificateAuthority(std::move(impl));
}

std::string CertificateAuthority::cert_pem() const {
  return pem_of_cert(impl_->cert.get());
}

std::string CertificateAuthority::key_pem() const {
  return pem_of_key(impl_->key.get());
}

std::string CertificateAuthority::key_pem_encrypted(std::string_view passphrase) const {
  if (passphrase.empty()) throw Error(Code::kInvalidArgument, "CA key: empty passphrase");
  if (passphrase.size() > 1024) throw Error(Code::kInvalidArgument, "CA key: passphrase too long");
  using P8Ptr = std::unique_ptr<PKCS8_PRIV_KEY_INFO, detail::Deleter<PKCS8_PRIV_KEY_INFO_free>>;
  using SigPtr = std::unique_ptr<X509_SIG, detail::Deleter<X509_SIG_free>>;
  using AlgPtr = std::unique_ptr<X509_ALGOR, detail::Deleter<X509_ALGOR_free>>;
  P8Ptr p8(EVP_PKEY2PKCS8(impl_->key.get()));
  check(p8 != nullptr, "EVP_PKEY2PKCS8");
  // A null salt with a length asks OpenSSL for that many random salt bytes.
  AlgPtr pbe(PKCS5_pbe2_set_iv_ex(EVP_aes_256_cbc(), kKeyEncryptionIterations, nullptr, 16, nullptr,
                                  NID_hmacWithSHA256, nullptr));
  check(pbe != nullptr, "PKCS5_pbe2_set_iv_ex");
  SigPtr sig(PKCS8_set0_pbe_ex(passphrase.data(), static_cast<int>(passphrase.size()), p8.get(),
                               pbe.get(), nullptr, nullptr));
  check(sig != nullptr, "PKCS8_set0_pbe_ex");
  pbe.release();  // owned by sig now
  detail::BioPtr bio(BIO_new(BIO_s_mem()));
  check(bio != nullptr, "BIO_new");
  check(PEM_write_bio_PKCS8(bio.get(), sig.get()) == 1, "PEM_write_bio_PKCS8");
  return detail::bio_contents(bio.get());
}

IssuedCert CertificateAuthority::issue(const IssueRequest& req) const {
  validate_common_name(req.common_name);
  if (req.validity.count() <= 0 || req.validity.count() > LONG_MAX / 2) {
    throw Error(Code::kInvalidArgument, "certificate validity out of range");
  }
  bool server = req.usage != CertUsage::kClient;
  if (server && req.ip_sans.empty() && req.dns_sans.empty()) {
    throw Error(Code::kInvalidArgument, "a server certificate needs an IP or DNS SAN");
  }
  ERR_clear_error();
  detail::GeneralNamesPtr sans = build_sans(req);

  detail::PkeyPtr key = new_p256_key();
  detail::X509Ptr cert =
      new_cert(req.common_name, key.get(), static_cast<long>(req.validity.count()));
  std::lock_guard lock(impl_->issue_mu);
  X509* c = cert.get();
  check(X509_set_issuer_name(c, X509_get_subject_name(impl_->cert.get())) == 1,
        "X509_set_issuer_name");
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, impl_->cert.get(), c, nullptr, nullptr, 0);
  add_ext(c, &ctx, NID_basic_constraints, "critical,CA:FALSE");
  add_ext(c, &ctx, NID_key_usage, "critical,digitalSignature");
  const char* eku = req.usage == CertUsage::kServer   ? "serverAuth"
                    : req.usage == CertUsage::kClient ? "clientAuth"
                                                      : "serverAuth,clientAuth";
  add_ext(c, &ctx, NID_ext_key_usage, eku);
  if (sk_GENERAL_NAME_num(sans.get()) > 0) {
    check(X509_add1_ext_i2d(c, NID_subject_alt_name, sans.get(), 0, X509V3_ADD_DEFAULT) == 1,
          "subjectAltName");
  }
  add_ext(c, &ctx, NID_subject_key_identifier, "hash");
  // An operator-supplied CA may lack a subjectKeyIdentifier; the AKI is optional then.
  if (X509_get0_subject_key_id(impl_->cert.get()) != nullptr) {
    add_ext(c, &ctx, NID_authority_key_identifier, "keyid");
  }
  check(X509_sign(c, impl_->key.get(), EVP_sha256()) > 0, "X509_sign");
  return IssuedCert{pem_of_cert(c), pem_of_key(key.get())};
}

std::string cert_fingerprint_sha256(std::string_view cert_pem) {
  auto cert = parse_cert(cert_pem, "certificate");
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  check(X509_digest(cert.get(), EVP_sha256(), md, &len) == 1, "X509_digest");
  return hex_encode(std::string_view(reinterpret_cast<char*>(md), len));
}

std::chrono::system_clock::time_point cert_not_after(std::string_view cert_pem) {
  auto cert = parse_cert(cert_pem, "certificate");
  std::tm tm{};
  if (ASN1_TIME_to_tm(X509_get0_notAfter(cert.get()), &tm) != 1) {
    throw openssl_error(Code::kInvalidArgument, "certificate: invalid notAfter");
  }
  return std::chrono::system_clock::from_time_t(timegm(&tm));
}

void verify_chain(std::string_view ca_pem, std::string_view cert_pem) {
  auto ca = parse_cert(ca_pem, "CA certificate");
  auto cert = parse_cert(cert_pem, "certificate");
  detail::X509StorePtr store(X509_STORE_new());
  check(store != nullptr, "X509_STORE_new");
  check(X509_STORE_add_cert(store.get(), ca.get()) == 1, "X509_STORE_add_cert");
  detail::X509StoreCtxPtr ctx(X509_STORE_CTX_new());
  check(ctx != nullptr, "X509_STORE_CTX_new");
  check(X509_STORE_CTX_init(ctx.get(), store.get(), cert.get(), nullptr) == 1,
        "X509_STORE_CTX_init");
  if (X509_verify_cert(ctx.get()) != 1) {
    int err = X509_STORE_CTX_get_error(ctx.get());
    detail::drain_errors();
    throw Error(Code::kUnauthenticated,
                std::string("certificate verify failed: ") + X509_verify_cert_error_string(err));
  }
}

}  // namespace wrenn::crypto
