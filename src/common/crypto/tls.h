// Mutual TLS between the control plane and host agents: TLS 1.3 only, both sides present
// a certificate issued by the control plane's CA (ca.h), both sides verify the other's.
//
// Contract:
//  - make_mtls_server_context(): the agent's side. Requires a client certificate that
//    chains to the CA; when client_common_name is non-empty, its subject CN must equal it
//    (the CA also issues host certificates, which must not be able to call other hosts).
//  - make_mtls_client_context(): the control plane's side. Verifies the server's chain;
//    the caller also pins the expected peer with expect_peer() on each connection (IP SAN
//    for an IP literal, DNS SAN otherwise).
//  - Bad PEM input throws wrenn::Error(kInvalidArgument) naming which part is bad (never
//    echoing key material). The contexts are immutable after creation and shareable
//    across threads.
#pragma once

#include <openssl/ssl.h>

#include <boost/asio/ssl/context.hpp>
#include <memory>
#include <string>
#include <string_view>

namespace wrenn::crypto {

struct TlsIdentity {
  std::string cert_pem;  // own certificate (leaf)
  std::string key_pem;   // its private key (PKCS#8 or SEC1 PEM)
  std::string ca_pem;    // the CA that issued both sides' certificates
};

std::shared_ptr<boost::asio::ssl::context> make_mtls_server_context(
    const TlsIdentity& id, std::string client_common_name = {});
std::shared_ptr<boost::asio::ssl::context> make_mtls_client_context(const TlsIdentity& id);

// Pins the peer a client connection must present: an IP literal is checked against the
// certificate's IP SANs, anything else against its DNS SANs. Call before the handshake.
void expect_peer(SSL* ssl, std::string_view host);

}  // namespace wrenn::crypto
