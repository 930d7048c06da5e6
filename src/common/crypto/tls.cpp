#include "crypto/tls.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include <boost/asio/ip/address.hpp>

#include "crypto/ossl.h"
#include "error.h"

namespace wrenn::crypto {

namespace ssl = boost::asio::ssl;

using detail::BioPtr;
using detail::drain_errors;
using detail::mem_bio;

namespace {

void require(int ok, const char* what) {
  if (ok != 1)
    throw detail::openssl_error(Code::kInvalidArgument, std::string("TLS setup: ") + what);
}

std::shared_ptr<ssl::context> base_context(ssl::context::method method, const TlsIdentity& id) {
  if (id.cert_pem.empty() || id.key_pem.empty() || id.ca_pem.empty())
    throw Error(Code::kInvalidArgument, "TLS setup: certificate, key and CA are all required");
  auto ctx = std::make_shared<ssl::context>(method);
  SSL_CTX* c = ctx->native_handle();
  require(SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION), "TLS 1.3 minimum");
  boost::system::error_code ec;
  ctx->use_certificate_chain(boost::asio::buffer(id.cert_pem), ec);
  if (ec) throw Error(Code::kInvalidArgument, "TLS setup: the certificate is not valid PEM");
  {
    // Parsed on its own first, so that a valid key for another certificate is reported as
    // such (OpenSSL's use_PrivateKey fails the same way for both).
    BioPtr bio = mem_bio(id.key_pem);
    // An encrypted key is refused rather than prompting for a passphrase on a terminal.
    pem_password_cb* no_prompt = [](char*, int, int, void*) { return 0; };
    EVP_PKEY* key = PEM_read_bio_PrivateKey(bio.get(), nullptr, no_prompt, nullptr);
    drain_errors();
    if (!key)
      throw Error(Code::kInvalidArgument,
                  "TLS setup: the private key is not valid unencrypted PEM");
    EVP_PKEY_free(key);
  }
  ctx->use_private_key(boost::asio::buffer(id.key_pem), ssl::context::pem, ec);
  if (ec || SSL_CTX_check_private_key(c) != 1) {
    drain_errors();
    throw Error(Code::kInvalidArgument,
                "TLS setup: the private key does not match the certificate");
  }
  ctx->add_certificate_authority(boost::asio::buffer(id.ca_pem), ec);
  if (ec) throw Error(Code::kInvalidArgument, "TLS setup: the CA certificate is not valid PEM");
  // Trust only this CA: no system store.
  return ctx;
}

}  // namespace

std::shared_ptr<ssl::context> make_mtls_server_context(const TlsIdentity& id,
                                                       std::string client_common_name) {
  auto ctx = base_context(ssl::context::tls_server, id);
  ctx->set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
  if (!client_common_name.empty()) {
    // Checked on the leaf only (depth 0), after OpenSSL verified the chain.
    ctx->set_verify_callback([cn = std::move(client_common_name)](bool preverified,
                                                                  ssl::verify_context& vc) {
      if (!preverified) return false;
      X509_STORE_CTX* s = vc.native_handle();
      if (X509_STORE_CTX_get_error_depth(s) != 0) return true;
      X509* cert = X509_STORE_CTX_get_current_cert(s);
      char buf[256] = {0};
      int n =
          X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, buf, sizeof(buf));
      return n > 0 && std::string_view(buf, static_cast<std::size_t>(n)) == cn;
    });
  }
  return ctx;
}

std::shared_ptr<ssl::context> make_mtls_client_context(const TlsIdentity& id) {
  auto ctx = base_context(ssl::context::tls_client, id);
  ctx->set_verify_mode(ssl::verify_peer);
  return ctx;
}

void expect_peer(SSL* s, std::string_view host) {
  std::string h(host);
  boost::system::error_code ec;
  boost::asio::ip::make_address(h, ec);
  X509_VERIFY_PARAM* p = SSL_get0_param(s);
  if (!ec) {
    require(X509_VERIFY_PARAM_set1_ip_asc(p, h.c_str()), "expected peer address");
  } else {
    X509_VERIFY_PARAM_set_hostflags(p, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    require(X509_VERIFY_PARAM_set1_host(p, h.c_str(), h.size()), "expected peer name");
    // SNI for name-based servers.
    SSL_set_tlsext_host_name(s, h.c_str());
  }
}

}  // namespace wrenn::crypto
