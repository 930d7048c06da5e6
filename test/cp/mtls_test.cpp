// Mutual TLS between the control plane's host client and the agent's TLS front, over real
// loopback sockets: who gets through, and that strangers never reach the HTTP server.
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>
#include <chrono>
#include <string>
#include <thread>

#include "api/tls_front.h"
#include "crypto/ca.h"
#include "crypto/tls.h"
#include "envd_fixture.h"
#include "hosts/transport.h"
#include "http/server.h"

namespace {

using namespace wrenn;
using crypto::CertificateAuthority;
using crypto::CertUsage;
using crypto::IssueRequest;
namespace asio = boost::asio;
using tcp = asio::ip::tcp;

// A plain HTTP server behind a TLS front on one io thread; counts the requests it saw.
struct Backend {
  asio::io_context io;
  std::atomic<int> requests{0};
  http::Server server{io, [this](http::Exchange& ex) -> asio::awaitable<void> {
                        ++requests;
                        auto res =
                            http::make_response(http::bhttp::status::ok, "text/plain", "hello");
                        co_await ex.send(std::move(res));
                      }};
  std::unique_ptr<agent::TlsFront> front;
  std::thread thread;

  explicit Backend(std::shared_ptr<asio::ssl::context> ctx) {
    server.listen(tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    front = std::make_unique<agent::TlsFront>(io, std::move(ctx), server.local_endpoint(),
                                              std::chrono::milliseconds(500));
    front->listen(tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    thread = std::thread([this] { io.run(); });
  }
  ~Backend() {
    asio::post(io, [this] {
      front->stop();
      server.stop();
      io.stop();
    });
    thread.join();
  }
  std::uint16_t port() const { return front->local_endpoint().port(); }
};

struct Pki {
  CertificateAuthority ca = CertificateAuthority::create("wrenn test CA");
  crypto::TlsIdentity agent() {
    auto c = ca.issue(IssueRequest{"host-test", {"127.0.0.1"}, {}, CertUsage::kServer});
    return {c.cert_pem, c.key_pem, ca.cert_pem()};
  }
  crypto::TlsIdentity cp(const std::string& cn = "wrenn-cp") {
    auto c = ca.issue(IssueRequest{cn, {}, {}, CertUsage::kClient});
    return {c.cert_pem, c.key_pem, ca.cert_pem()};
  }
};

// GET / over a connection; returns the response bytes ("" when the peer refused).
std::string get(cp::Connection& c) {
  const std::string req = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  auto deadline = cp::Clock::now() + std::chrono::seconds(3);
  boost::system::error_code ec;
  asio::const_buffer b(req.data(), req.size());
  std::size_t sent = 0;
  while (sent < req.size() && !ec) {
    asio::const_buffer rest(req.data() + sent, req.size() - sent);
    sent += c.write_some(std::span<const asio::const_buffer>(&rest, 1), deadline, ec);
  }
  (void)b;
  std::string out;
  char buf[4096];
  while (!ec) {
    std::size_t n = c.read_some(asio::buffer(buf), deadline, ec);
    out.append(buf, n);
  }
  return out;
}

cp::HostEndpoint at(std::uint16_t port) {
  return cp::HostEndpoint{"127.0.0.1", port, ""};
}
auto soon() {
  return cp::Clock::now() + std::chrono::seconds(3);
}

}  // namespace

TEST_CASE("mtls: the control plane's certificate gets through, the answer comes back") {
  Pki pki;
  Backend b(crypto::make_mtls_server_context(pki.agent(), "wrenn-cp"));
  auto t = cp::make_mtls_transport(crypto::make_mtls_client_context(pki.cp()));
  auto c = t->connect(at(b.port()), soon());
  auto res = get(*c);
  CHECK(res.rfind("HTTP/1.1 200", 0) == 0);
  CHECK(res.find("hello") != std::string::npos);
  CHECK(b.requests == 1);
}

TEST_CASE("mtls: strangers never reach the agent's HTTP server") {
  Pki pki;
  Backend b(crypto::make_mtls_server_context(pki.agent(), "wrenn-cp"));

  SECTION("a certificate from another CA") {
    Pki other;
    auto id = other.cp();
    id.ca_pem = pki.ca.cert_pem();  // trusts the real CA, presents a foreign certificate
    auto t = cp::make_mtls_transport(crypto::make_mtls_client_context(id));
    try {
      auto c = t->connect(at(b.port()), soon());
      CHECK(get(*c).empty());
    } catch (const Error& e) {
      CHECK(e.code() == Code::kUnavailable);
    }
  }
  SECTION("a host certificate from the right CA (CN is not wrenn-cp)") {
    auto t = cp::make_mtls_transport(crypto::make_mtls_client_context(pki.cp("host-other")));
    try {
      auto c = t->connect(at(b.port()), soon());
      CHECK(get(*c).empty());
    } catch (const Error& e) {
      CHECK(e.code() == Code::kUnavailable);
    }
  }
  SECTION("plain HTTP without TLS") {
    auto c = cp::make_tcp_transport()->connect(at(b.port()), soon());
    CHECK(get(*c).find("hello") == std::string::npos);
  }
  CHECK(b.requests == 0);
}

TEST_CASE("mtls: the control plane refuses an agent whose certificate names another address") {
  Pki pki;
  auto wrong = pki.ca.issue(IssueRequest{"host-test", {"10.9.9.9"}, {}, CertUsage::kServer});
  Backend b(crypto::make_mtls_server_context({wrong.cert_pem, wrong.key_pem, pki.ca.cert_pem()},
                                             "wrenn-cp"));
  auto t = cp::make_mtls_transport(crypto::make_mtls_client_context(pki.cp()));
  try {
    t->connect(at(b.port()), soon());
    FAIL("connected to an agent with the wrong certificate");
  } catch (const Error& e) {
    CHECK(e.code() == Code::kUnavailable);
    CHECK(std::string(e.what()).find("127.0.0.1:" + std::to_string(b.port())) != std::string::npos);
  }
  CHECK(b.requests == 0);
}

TEST_CASE("mtls: bad certificate material is refused with a clear error") {
  Pki pki;
  auto id = pki.cp();
  id.key_pem = "not a key";
  CHECK_THROWS_AS(crypto::make_mtls_client_context(id), Error);
  auto other = pki.agent();
  id = pki.cp();
  id.key_pem = other.key_pem;  // a key that does not match the certificate
  try {
    crypto::make_mtls_client_context(id);
    FAIL("accepted a mismatched key");
  } catch (const Error& e) {
    CHECK(e.code() == Code::kInvalidArgument);
    CHECK(std::string(e.what()).find("does not match") != std::string::npos);
    CHECK(std::string(e.what()).find("PRIVATE KEY") == std::string::npos);
  }
}
