// The control plane's port proxy end to end: a real wrenn-cp (--proxy-domain wrenn.test)
// with a real, registered wrenn-agent; servers inside a busybox capsule (httpd with a CGI
// script, and an nc-based upgrade echo) reached as {port}-{capsule}.wrenn.test through
// wrenn-cp and the agent.
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <thread>

#include "cp_fixture.h"

using namespace wrenn;
using namespace wrenn::test;
using namespace std::chrono_literals;
namespace json = boost::json;
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;

namespace {

constexpr const char* kDomain = "wrenn.test";

using Reply = HttpReply;

// One request to wrenn-cp with the given Host header.
Reply request(const CpProcess& cp, const std::string& host, const std::string& target,
              std::map<std::string, std::string> headers = {},
              bhttp::verb method = bhttp::verb::get, const std::string& body = "") {
  headers["Host"] = host;
  return cp.request(method, target, body, headers);
}

class Env {
 public:
  Env() {
    enter_private_netns();
    CpOptions opts;
    opts.extra_args = {"--proxy-domain", kDomain};
    cp_ = std::make_unique<CpProcess>(opts);
    const std::string dir = tmp_.path() + "/agent";
    std::filesystem::create_directories(dir + "/images");
    std::filesystem::create_directory_symlink(busybox_template(), dir + "/images/minimal");
    agent_ = cp_->start_agent(dir, {"--warm-slots", "0", "--ready-disks", "0"});
    team_ = cp_->create_team("alpha");
  }
  CpProcess& cp() { return *cp_; }
  const std::string& key() const { return team_.api_key; }

  std::string create_capsule() {
    auto r = cp_->post("/v1/capsules", R"({"memory_mb":256})", key());
    INFO(r.body);
    REQUIRE(r.status == 201);
    return std::string(r.json().at("id").as_string());
  }
  // Runs a shell script in the capsule (foreground, or background when tagged).
  json::object sh(const std::string& id, const std::string& script, bool background = false) {
    json::object o;
    o["cmd"] = "/bin/sh";
    o["args"] = json::array{"-c", script};
    if (background) o["background"] = true;
    auto r = cp_->post("/v1/capsules/" + id + "/exec", json::serialize(o), key());
    INFO(r.body);
    REQUIRE(r.status == (background ? 202 : 200));
    return r.json().as_object();
  }

 private:
  TempDir tmp_;
  std::unique_ptr<CpProcess> cp_;
  CpAgent agent_;
  TeamCreds team_;
};

std::string proxy_host(unsigned port, const std::string& id) {
  return std::to_string(port) + "-" + id + "." + kDomain + ":80";
}

// Requests until the server inside the capsule answers (it starts in the background).
Reply until_served(Env& env, const std::string& host, const std::string& target) {
  Reply r;
  for (int i = 0; i < 100; ++i) {
    r = request(env.cp(), host, target);
    if (r.status != 502) break;
    std::this_thread::sleep_for(50ms);
  }
  return r;
}

}  // namespace

TEST_CASE("port proxy: HTTP to a capsule port with credentials kept out and Location rewritten") {
  Env env;
  const std::string id = env.create_capsule();
  env.sh(id, R"SH(mkdir -p /root/www/cgi-bin && echo hello > /root/www/index.html
cat > /root/www/cgi-bin/env <<'EOF'
#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n'
env
[ "$REQUEST_METHOD" = POST ] && head -c "$CONTENT_LENGTH"
exit 0
EOF
cat > /root/www/cgi-bin/move <<'EOF'
#!/bin/sh
printf 'Status: 302 Found\r\nLocation: /elsewhere\r\n\r\n'
EOF
chmod +x /root/www/cgi-bin/*)SH");
  env.sh(id, "exec httpd -f -p 8080 -h /root/www", true);

  Reply r = until_served(env, proxy_host(8080, id), "/index.html");
  INFO(r.body);
  REQUIRE(r.status == 200);
  CHECK(r.body == "hello\n");

  r = request(env.cp(), proxy_host(8080, id), "/cgi-bin/env");
  INFO(r.body);
  CHECK(r.status == 200);
  // Wrenn credentials never reach the capsule; the forwarding headers do; bodies go up.
  r = request(env.cp(), proxy_host(8080, id), "/cgi-bin/env?x=1",
              {{"X-API-Key", env.key()},
               {"Authorization", "Bearer some-jwt"},
               {"X-Wrenn-Agent-Token", "forged"},
               {"X-Custom", "kept"}},
              bhttp::verb::post, "posted-body");
  INFO(r.body);
  REQUIRE(r.status == 200);
  CHECK(r.body.find(env.key()) == std::string::npos);
  CHECK(r.body.find("HTTP_X_API_KEY") == std::string::npos);
  CHECK(r.body.find("some-jwt") == std::string::npos);
  CHECK(r.body.find("forged") == std::string::npos);
  CHECK(r.body.find("HTTP_X_CUSTOM=kept") != std::string::npos);
  CHECK(r.body.find("QUERY_STRING=x=1") != std::string::npos);
  CHECK(r.body.find("HTTP_X_FORWARDED_HOST=8080-" + id + ".wrenn.test") != std::string::npos);
  CHECK(r.body.find("posted-body") != std::string::npos);

  // A redirect inside the capsule stays on the capsule's own host name.
  r = request(env.cp(), proxy_host(8080, id), "/cgi-bin/move");
  CHECK(r.status == 302);
  CHECK(r.headers["location"] == "/elsewhere");

  // No credentials needed (the capsule id is the capability), but the id must exist.
  r = request(env.cp(), proxy_host(8080, "cl-0000000000000000000000000"), "/");
  CHECK(r.status == 404);
  CHECK(r.error_code() == "not_found");
  r = request(env.cp(), proxy_host(70000, id), "/");
  CHECK(r.status == 400);
  CHECK(r.error_code() == "invalid_request");
  // Nothing listens on 8081.
  r = request(env.cp(), proxy_host(8081, id), "/");
  CHECK(r.status == 502);
  // Another domain is the API, not the proxy.
  r = request(env.cp(), "8080-" + id + ".example.org", "/index.html");
  CHECK(r.status == 404);
  CHECK(r.error_code() == "not_found");

  // A paused capsule is not reachable, and reachable again after resume.
  auto p = env.cp().post("/v1/capsules/" + id + "/pause", "", env.key());
  REQUIRE(p.status == 200);
  r = request(env.cp(), proxy_host(8080, id), "/index.html");
  CHECK(r.status == 409);
  CHECK(r.error_code() == "invalid_state");
  p = env.cp().post("/v1/capsules/" + id + "/resume", "", env.key());
  REQUIRE(p.status == 200);
  r = until_served(env, proxy_host(8080, id), "/index.html");
  CHECK(r.status == 200);
  CHECK(r.body == "hello\n");
}

TEST_CASE("port proxy: an upgrade is tunnelled both ways") {
  Env env;
  const std::string id = env.create_capsule();
  // Answers any request with 101 and then echoes what it receives.
  env.sh(id,
         "printf '#!/bin/sh\\nwhile IFS= read -r l; do [ \"$l\" = \"$(printf \"\\\\r\")\" ] && "
         "break; done\\nprintf \"HTTP/1.1 101 Switching Protocols\\\\r\\\\nConnection: "
         "Upgrade\\\\r\\\\nUpgrade: echo\\\\r\\\\n\\\\r\\\\n\"\\nexec cat\\n' > /root/up.sh && "
         "chmod +x /root/up.sh");
  env.sh(id, "exec nc -ll -p 9000 -e /root/up.sh", true);

  asio::io_context io;
  std::string head;
  tcp::socket sock(io);
  for (int i = 0; i < 100; ++i) {
    sock = tcp::socket(io);
    sock.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), env.cp().port()));
    const std::string req = "GET /chat HTTP/1.1\r\nHost: " + proxy_host(9000, id) +
                            "\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n";
    asio::write(sock, asio::buffer(req));
    asio::streambuf sb;
    asio::read_until(sock, sb, "\r\n\r\n");
    head.assign(asio::buffers_begin(sb.data()), asio::buffers_end(sb.data()));
    if (head.starts_with("HTTP/1.1 101")) {
      break;
    }
    std::this_thread::sleep_for(50ms);
  }
  INFO(head);
  REQUIRE(head.starts_with("HTTP/1.1 101"));
  for (std::string msg : {"ping\n", "second message\n"}) {
    asio::write(sock, asio::buffer(msg));
    std::string got(msg.size(), '\0');
    asio::read(sock, asio::buffer(got));
    CHECK(got == msg);
  }
}
