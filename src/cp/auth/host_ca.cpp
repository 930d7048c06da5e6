#include "auth/host_ca.h"

#include <boost/json.hpp>

#include "crypto/encoding.h"
#include "crypto/tls.h"
#include "error.h"
#include "log.h"

namespace wrenn::cp::auth {

namespace {

constexpr const char* kSecretName = "host_ca";
constexpr const char* kKeyAad = "host_ca";

std::string json_string(const boost::json::object& o, std::string_view k) {
  auto* v = o.if_contains(k);
  return v && v->is_string() ? std::string(v->as_string()) : std::string();
}

crypto::CertificateAuthority open_stored(const crypto::AeadKey& key, const std::string& value) {
  boost::system::error_code ec;
  auto v = boost::json::parse(value, ec);
  if (ec || !v.is_object())
    throw Error(Code::kDataLoss, "the stored host CA (cp_secrets \"host_ca\") is not valid JSON");
  const auto& o = v.as_object();
  const std::string cert = json_string(o, "cert_pem");
  const std::string sealed = json_string(o, "key_sealed");
  std::string key_pem;
  try {
    key_pem = crypto::open(key, crypto::base64_decode(sealed), kKeyAad);
  } catch (const Error&) {
    throw Error(Code::kDataLoss,
                "the stored host CA key does not open with the configured encryption key "
                "(was WRENN_ENCRYPTION_KEY changed?)");
  }
  return crypto::CertificateAuthority::load(cert, key_pem);
}

}  // namespace

crypto::CertificateAuthority load_or_create_host_ca(pg::Pool& db, const crypto::AeadKey& key,
                                                    const CpConfig& config) {
  if (!config.ca_cert_pem.empty() || !config.ca_key_pem.empty()) {
    if (config.ca_cert_pem.empty() || config.ca_key_pem.empty())
      throw Error(Code::kInvalidArgument,
                  "WRENN_CA_CERT and WRENN_CA_KEY must be set together (PEM text)");
    try {
      return crypto::CertificateAuthority::load(config.ca_cert_pem, config.ca_key_pem);
    } catch (const Error& e) {
      throw Error(Code::kInvalidArgument,
                  std::string("WRENN_CA_CERT / WRENN_CA_KEY are not a usable CA: ") + e.what());
    }
  }
  // A fresh CA only matters when the row is absent; making one is a few milliseconds.
  auto fresh = crypto::CertificateAuthority::create("Wrenn host CA");
  boost::json::object o;
  o["cert_pem"] = fresh.cert_pem();
  o["key_sealed"] = crypto::base64_encode(crypto::seal(key, fresh.key_pem(), kKeyAad));
  const std::string candidate = boost::json::serialize(o);
  auto [value, created] = db.with_transaction([&](pg::Connection& c) {
    auto ins =
        c.exec("INSERT INTO cp_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
               std::string(kSecretName), candidate);
    const bool inserted = ins.affected_rows() == 1;
    auto r = c.exec("SELECT value FROM cp_secrets WHERE name = $1", std::string(kSecretName));
    return std::make_pair(std::string(r.text(0, 0)), inserted);
  });
  if (created) log::info("created the host CA (its key is stored encrypted)");
  return open_stored(key, value);
}

HostTls::HostTls(crypto::CertificateAuthority ca) : ca_(std::move(ca)), ca_pem_(ca_.cert_pem()) {}

crypto::IssuedCert HostTls::issue_host_cert(const std::string& host_id,
                                            const std::string& ip) const {
  crypto::IssueRequest req;
  req.common_name = host_id;
  req.ip_sans = {ip};
  req.usage = crypto::CertUsage::kServer;
  req.validity = kHostCertValidity;
  return ca_.issue(req);
}

std::shared_ptr<boost::asio::ssl::context> HostTls::client_context() {
  std::lock_guard lock(mu_);
  const auto now = std::chrono::steady_clock::now();
  if (!client_ctx_ || now - issued_ >= kCpCertRenewAfter) {
    crypto::IssueRequest req;
    req.common_name = kCpClientCommonName;
    req.usage = crypto::CertUsage::kClient;
    req.validity = kCpCertValidity;
    auto cert = ca_.issue(req);
    client_ctx_ = crypto::make_mtls_client_context({cert.cert_pem, cert.key_pem, ca_pem_});
    issued_ = now;
  }
  return client_ctx_;
}

}  // namespace wrenn::cp::auth
