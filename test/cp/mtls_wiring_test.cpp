// Mutual TLS between a real wrenn-cp and real wrenn-agents: the control plane's CA (created
// on first start, key sealed in the database), the agent's certificate from registration,
// the agent's TLS listener that lets only the control plane's client certificate through,
// and the control plane reaching agents over it (capsule create/exec through REST).
#include <sys/stat.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/write.hpp>
#include <boost/json.hpp>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <optional>
#include <thread>
#include <vector>

#include "auth/host_ca.h"
#include "cp_fixture.h"
#include "crypto/aead.h"
#include "crypto/ca.h"
#include "crypto/tls.h"

using namespace wrenn;
using namespace wrenn::test;
namespace json = boost::json;
namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

namespace {

std::string file_mode(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return "missing";
  char buf[8];
  std::snprintf(buf, sizeof buf, "%o", st.st_mode & 0777);
  return buf;
}

std::string str(const json::value& v, const char* key) {
  auto* f = v.as_object().if_contains(key);
  return f && f->is_string() ? std::string(f->as_string()) : std::string();
}

// GET /health over TLS to 127.0.0.1:port with the given client context; the status line's
// code, or 0 when the handshake, the request or the answer fails (a refused certificate
// shows up at the handshake or, with TLS 1.3, at the first read).
unsigned tls_health(unsigned short port, ssl::context& ctx) {
  try {
    asio::io_context io;
    ssl::stream<tcp::socket> s(io, ctx);
    s.next_layer().connect({asio::ip::make_address("127.0.0.1"), port});
    crypto::expect_peer(s.native_handle(), "127.0.0.1");
    s.handshake(ssl::stream_base::client);
    const std::string req = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    asio::write(s, asio::buffer(req));
    std::string answer;
    char buf[512];
    boost::system::error_code ec;
    for (;;) {
      std::size_t n = s.read_some(asio::buffer(buf), ec);
      answer.append(buf, n);
      if (ec) break;
    }
    if (answer.rfind("HTTP/1.1 ", 0) != 0) return 0;
    return static_cast<unsigned>(std::stoi(answer.substr(9, 3)));
  } catch (const std::exception&) {
    return 0;
  }
}

// A TLS 1.3 client that trusts ca_pem and presents no certificate.
std::shared_ptr<ssl::context> anonymous_client(const std::string& ca_pem) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
  ctx->add_certificate_authority(asio::buffer(ca_pem));
  ctx->set_verify_mode(ssl::verify_peer);
  return ctx;
}

// The control plane's CA as stored in its database (with its encryption key from there).
crypto::CertificateAuthority stored_ca(CpProcess& cp) {
  auto pool = cp.pool();
  auto r = pool->acquire()->exec("SELECT value FROM cp_secrets WHERE name = 'encryption_key'");
  REQUIRE(r.rows() == 1);
  const auto key = crypto::parse_aead_key(r.text(0, 0));
  return cp::auth::load_or_create_host_ca(*pool, key, cp::CpConfig{});
}

crypto::IssuedCert client_cert(const crypto::CertificateAuthority& ca, const std::string& cn) {
  crypto::IssueRequest req;
  req.common_name = cn;
  req.usage = crypto::CertUsage::kClient;
  return ca.issue(req);
}

std::string create_capsule(CpProcess& cp, const std::string& key) {
  auto r = cp.post("/v1/capsules", R"({"memory_mb":256})", key);
  INFO(r.body);
  REQUIRE(r.status == 201);
  return str(r.json(), "id");
}

std::string exec_stdout(CpProcess& cp, const std::string& key, const std::string& id,
                        const std::string& script) {
  json::object o;
  o["cmd"] = "/bin/sh";
  o["args"] = json::array{"-c", script};
  auto r = cp.post("/v1/capsules/" + id + "/exec", json::serialize(o), key);
  INFO(r.body);
  REQUIRE(r.status == 200);
  return str(r.json(), "stdout");
}

std::string agent_dir(const TempDir& tmp) {
  const std::string dir = tmp.path() + "/agent";
  std::filesystem::create_directories(dir + "/images");
  std::filesystem::create_directory_symlink(busybox_template(), dir + "/images/minimal");
  return dir;
}

}  // namespace

TEST_CASE("mtls wiring: the control plane reaches its agent over mutual TLS and nobody else does") {
  enter_private_netns();
  CpProcess cp;
  TempDir tmp;
  auto started = cp.start_agent(agent_dir(tmp), {"--warm-slots", "0", "--ready-disks", "0"});
  AgentProcess& agent = *started.agent;
  REQUIRE(agent.tls());
  auto team = cp.create_team("mtls");

  // REST -> control plane -> agent (mutual TLS) -> envd.
  const std::string id = create_capsule(cp, team.api_key);
  CHECK(exec_stdout(cp, team.api_key, id, "echo over-tls") == "over-tls\n");

  // The agent's credentials: 0600, with its certificate, which names the host and chains to
  // the CA; the host row records the certificate's fingerprint.
  const std::string creds_path = agent.dir() + "/host-credentials.json";
  CHECK(file_mode(creds_path) == "600");
  auto creds = json::parse(read_file(creds_path));
  const std::string cert = str(creds, "cert_pem");
  const std::string key_pem = str(creds, "key_pem");
  const std::string ca_pem = str(creds, "ca_cert_pem");
  REQUIRE(cert.find("BEGIN CERTIFICATE") != std::string::npos);
  REQUIRE(key_pem.find("PRIVATE KEY") != std::string::npos);
  CHECK_NOTHROW(crypto::verify_chain(ca_pem, cert));
  CHECK(crypto::cert_not_after(cert) > std::chrono::system_clock::now() + 300 * 24h);
  {
    auto pool = cp.pool();
    auto r = pool->acquire()->exec(
        "SELECT cert_fingerprint, cert_expires_at IS NOT NULL FROM hosts "
        "WHERE id = $1",
        started.host_id);
    REQUIRE(r.rows() == 1);
    CHECK(r.text(0, 0) == crypto::cert_fingerprint_sha256(cert));
    CHECK(r.text(0, 1) == "t");
  }

  // The CA's key is stored sealed: no PEM private key in the database.
  {
    auto pool = cp.pool();
    auto r = pool->acquire()->exec("SELECT value FROM cp_secrets WHERE name = 'host_ca'");
    REQUIRE(r.rows() == 1);
    const std::string stored(r.text(0, 0));
    CHECK(stored.find("PRIVATE KEY") == std::string::npos);
    CHECK(stored.find("BEGIN CERTIFICATE") != std::string::npos);
  }
  auto ca = stored_ca(cp);
  CHECK(ca.cert_pem() == ca_pem);

  // Plain HTTP on the agent's address gets nowhere.
  CHECK_THROWS(http_request(agent.port(), boost::beast::http::verb::get, "/health"));

  // Positive control: a client certificate from the CA with CN wrenn-cp gets an answer.
  {
    auto c = client_cert(ca, "wrenn-cp");
    auto ctx = crypto::make_mtls_client_context({c.cert_pem, c.key_pem, ca_pem});
    CHECK(tls_health(agent.port(), *ctx) == 200);
  }
  // No client certificate: refused.
  CHECK(tls_health(agent.port(), *anonymous_client(ca_pem)) == 0);
  // CN wrenn-cp from a forged CA: refused.
  {
    auto forged = crypto::CertificateAuthority::create("Wrenn host CA");
    auto c = client_cert(forged, "wrenn-cp");
    auto ctx = crypto::make_mtls_client_context({c.cert_pem, c.key_pem, ca_pem});
    CHECK(tls_health(agent.port(), *ctx) == 0);
  }
  // The right CA but another name: another host's client certificate, and the agent's own
  // certificate: refused.
  {
    auto c = client_cert(ca, "host-someone-else");
    auto ctx = crypto::make_mtls_client_context({c.cert_pem, c.key_pem, ca_pem});
    CHECK(tls_health(agent.port(), *ctx) == 0);
    auto own = crypto::make_mtls_client_context({cert, key_pem, ca_pem});
    CHECK(tls_health(agent.port(), *own) == 0);
  }

  // Restarted without --register: TLS again from its saved credentials, and the control
  // plane uses it (the capsule survived the restart).
  agent.restart(std::vector<std::string>{"--cp-url", cp.url(), "--heartbeat-interval", "1",
                                         "--warm-slots", "0", "--ready-disks", "0"});
  CHECK(agent.tls());
  CHECK(agent.log().find("already registered") == std::string::npos);
  CHECK_THROWS(http_request(agent.port(), boost::beast::http::verb::get, "/health"));
  CHECK(exec_stdout(cp, team.api_key, id, "echo after-restart") == "after-restart\n");
  const std::string id2 = create_capsule(cp, team.api_key);
  CHECK(exec_stdout(cp, team.api_key, id2, "echo second") == "second\n");
  CHECK(cp.del("/v1/capsules/" + id, team.api_key).status == 204);
  CHECK(cp.del("/v1/capsules/" + id2, team.api_key).status == 204);

  // No key or token in any log.
  const std::string logs = cp.log() + agent.log();
  CHECK(logs.find("PRIVATE KEY") == std::string::npos);
  CHECK(logs.find("BEGIN CERTIFICATE") == std::string::npos);
  CHECK(logs.find(str(creds, "jwt")) == std::string::npos);
  CHECK(logs.find(str(creds, "refresh_token")) == std::string::npos);
  CHECK(logs.find(agent.token()) == std::string::npos);
}

TEST_CASE("mtls wiring: a refresh reissues the certificate and the agent swaps it in") {
  enter_private_netns();
  CpProcess cp;
  TempDir tmp;
  auto started = cp.start_agent(agent_dir(tmp), {"--warm-slots", "0", "--ready-disks", "0"});
  AgentProcess& agent = *started.agent;
  const std::string creds_path = agent.dir() + "/host-credentials.json";
  const std::string before = str(json::parse(read_file(creds_path)), "cert_pem");

  // Credentials without a certificate (an agent registered before mutual TLS): the
  // restarted agent refreshes at once, gets a new certificate and serves with it.
  {
    auto creds = json::parse(read_file(creds_path)).as_object();
    creds.erase("cert_pem");
    creds.erase("key_pem");
    creds.erase("ca_cert_pem");
    std::ofstream(creds_path) << json::serialize(creds);
  }
  agent.restart(std::vector<std::string>{"--cp-url", cp.url(), "--heartbeat-interval", "1",
                                         "--warm-slots", "0", "--ready-disks", "0"});
  REQUIRE(wait_until([&] { return !str(json::parse(read_file(creds_path)), "cert_pem").empty(); },
                     10s));
  const std::string after = str(json::parse(read_file(creds_path)), "cert_pem");
  CHECK(after != before);
  CHECK(file_mode(creds_path) == "600");
  {
    auto pool = cp.pool();
    auto r =
        pool->acquire()->exec("SELECT cert_fingerprint FROM hosts WHERE id = $1", started.host_id);
    CHECK(r.text(0, 0) == crypto::cert_fingerprint_sha256(after));
  }
  // The swapped-in certificate serves: the control plane reaches the agent.
  auto team = cp.create_team("refresh");
  const std::string id = create_capsule(cp, team.api_key);
  CHECK(exec_stdout(cp, team.api_key, id, "echo swapped") == "swapped\n");
  CHECK(cp.del("/v1/capsules/" + id, team.api_key).status == 204);
}

TEST_CASE("mtls wiring: the CA persists across control plane restarts and can be configured") {
  CpProcess cp;
  auto pool = cp.pool();
  auto read_ca = [&] {
    auto r = pool->acquire()->exec("SELECT value FROM cp_secrets WHERE name = 'host_ca'");
    REQUIRE(r.rows() == 1);
    return std::string(r.text(0, 0));
  };
  const std::string first = read_ca();
  cp.stop();
  cp.start();
  CHECK(read_ca() == first);

  // A registration answers with the CA's certificate and a host certificate it issued.
  auto [host_id, token] = cp.create_host();
  json::object body;
  body["token"] = token;
  body["address"] = "10.1.2.3:50051";
  body["agent_token"] = "agent-token-for-test";
  auto r = cp.post("/v1/hosts/register", json::serialize(body));
  REQUIRE(r.status == 201);
  auto reg = r.json();
  CHECK(str(reg, "ca_cert_pem") == str(json::parse(first), "cert_pem"));
  CHECK_NOTHROW(crypto::verify_chain(str(reg, "ca_cert_pem"), str(reg, "cert_pem")));
  CHECK(str(reg, "key_pem").find("PRIVATE KEY") != std::string::npos);
  // The certificate names the host's IP: a TLS server with it passes expect_peer for that
  // IP only (checked in mtls_test); here its fingerprint is recorded.
  {
    auto h = pool->acquire()->exec("SELECT cert_fingerprint FROM hosts WHERE id = $1", host_id);
    CHECK(h.text(0, 0) == crypto::cert_fingerprint_sha256(str(reg, "cert_pem")));
  }
  CHECK(cp.log().find(str(reg, "key_pem").substr(40, 40)) == std::string::npos);

  // Replicas starting together on a database without a CA end up with one CA.
  {
    auto r = pool->acquire()->exec("SELECT value FROM cp_secrets WHERE name = 'encryption_key'");
    const auto key = crypto::parse_aead_key(r.text(0, 0));
    pool->acquire()->exec("DELETE FROM cp_secrets WHERE name = 'host_ca'");
    std::vector<std::string> seen(4);
    std::vector<std::thread> replicas;
    for (std::size_t i = 0; i < seen.size(); ++i)
      replicas.emplace_back([&, i] {
        seen[i] = cp::auth::load_or_create_host_ca(*pool, key, cp::CpConfig{}).cert_pem();
      });
    for (auto& t : replicas) t.join();
    for (const auto& s : seen) CHECK(s == seen[0]);
    CHECK(str(json::parse(read_ca()), "cert_pem") == seen[0]);
  }

  // WRENN_CA_CERT / WRENN_CA_KEY take precedence over the stored CA.
  auto own = crypto::CertificateAuthority::create("Operator CA");
  CpOptions o;
  o.env = {{"WRENN_CA_CERT", own.cert_pem()}, {"WRENN_CA_KEY", own.key_pem()}};
  CpProcess configured(o);
  auto [h2, t2] = configured.create_host();
  body["token"] = t2;
  auto r2 = configured.post("/v1/hosts/register", json::serialize(body));
  REQUIRE(r2.status == 201);
  CHECK(str(r2.json(), "ca_cert_pem") == own.cert_pem());
  CHECK_NOTHROW(crypto::verify_chain(own.cert_pem(), str(r2.json(), "cert_pem")));
  {
    auto p2 = configured.pool();
    CHECK(p2->acquire()->exec("SELECT 1 FROM cp_secrets WHERE name = 'host_ca'").rows() == 0);
  }
  // Only one of the two: the start fails with a message naming both.
  CpOptions half;
  half.env = {{"WRENN_CA_CERT", own.cert_pem()}};
  half.wait_ready = false;
  CpProcess broken(half);
  REQUIRE(wait_until([&] { return !broken.running(); }, 30s));
  CHECK(broken.log().find("WRENN_CA_CERT and WRENN_CA_KEY must be set together") !=
        std::string::npos);
}
