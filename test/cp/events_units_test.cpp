// Outbound side of notification channels without a server: the SSRF policy of targets
// (targets.h), the requests of each provider (providers.h) and the sender against real
// local HTTP(S) receivers (sender.h, http_receiver.h). No DNS query leaves the machine:
// hosts are IP literals or "localhost".
#include <unistd.h>

#include <atomic>
#include <boost/asio/ip/address.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "api/api_error.h"
#include "events/providers.h"
#include "events/sender.h"
#include "events/targets.h"
#include "http_receiver.h"

using namespace std::chrono_literals;
namespace ev = wrenn::cp::events;
namespace json = boost::json;
using wrenn::cp::ApiCode;
using wrenn::cp::ApiError;
using wrenn::test::HttpReceiver;
using wrenn::test::ReceivedRequest;
using wrenn::test::ReceiverReply;
using wrenn::test::ReceiverTls;

namespace {

ReceiverReply reply(unsigned status, std::string body = "ok",
                    std::vector<std::pair<std::string, std::string>> headers = {}) {
  ReceiverReply r;
  r.status = status;
  r.body = std::move(body);
  r.headers = std::move(headers);
  return r;
}

bool refused(const std::string& addr, bool allow_private = false) {
  return ev::is_refused(boost::asio::ip::make_address(addr), ev::TargetPolicy{allow_private});
}

// The message of the ApiError invalid_request that f throws ("" when it does not throw).
template <typename F>
std::string api_error(F&& f) {
  try {
    f();
  } catch (const ApiError& e) {
    CHECK(e.code() == ApiCode::kInvalidRequest);
    return e.what();
  }
  return "";
}

json::object capsule_payload(const std::string& event, const std::string& outcome,
                             const std::string& error = {}) {
  json::object p{{"event", event},
                 {"outcome", outcome},
                 {"timestamp", "2026-11-23T15:30:00Z"},
                 {"team_id", "team-1"},
                 {"actor", {{"type", "user"}, {"id", "usr-7"}, {"name", "ada@example.com"}}},
                 {"resource", {{"id", "cap-1"}, {"type", "sandbox"}}}};
  if (!error.empty()) p["error"] = error;
  return p;
}

std::string header(const ev::OutboundRequest& r, const std::string& name) {
  for (const auto& [k, v] : r.headers)
    if (k == name) return v;
  return "<missing>";
}

ev::ChannelConfig chat(const std::string& provider) {
  ev::ChannelConfig c;
  c.id = "ch-1";
  c.provider = provider;
  c.secrets["webhook_url"] = "https://hooks.example.com/services/T0/B0/secret";
  return c;
}

struct TempFile {
  std::filesystem::path path;
  explicit TempFile(const std::string& content) {
    path = std::filesystem::temp_directory_path() /
           ("wrenn-events-ca-" + std::to_string(::getpid()) + "-" +
            std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()) + ".pem");
    std::ofstream(path) << content;
  }
  ~TempFile() { std::filesystem::remove(path); }
};

ev::OutboundRequest post(const std::string& url, const std::string& body = R"({"a":1})") {
  ev::OutboundRequest r;
  r.url = url;
  r.headers = {{"Content-Type", "application/json"}, {"X-Wrenn-Delivery", "dlv-1"}};
  r.body = body;
  return r;
}

ev::SendOptions local(std::chrono::milliseconds timeout = 5000ms) {
  ev::SendOptions o;
  o.policy.allow_private = true;
  o.timeout = timeout;
  return o;
}

}  // namespace

TEST_CASE("SSRF policy classifies addresses", "[events][targets]") {
  // Refused by default, allowed with allow_private.
  for (const char* a : {"127.0.0.1",
                        "127.8.9.10",
                        "::1",
                        "10.0.0.1",
                        "10.255.255.255",
                        "172.16.0.1",
                        "172.31.255.254",
                        "192.168.1.1",
                        "169.254.1.1",
                        "100.64.0.1",
                        "100.127.255.255",
                        "0.0.0.0",
                        "::",
                        "fe80::1",
                        "fc00::1",
                        "fd12:3456::1",
                        "224.0.0.1",
                        "239.1.2.3",
                        "240.0.0.1",
                        "255.255.255.255",
                        "ff02::1",
                        "::ffff:127.0.0.1",
                        "::ffff:10.1.2.3",
                        "::ffff:192.168.0.1",
                        "::127.0.0.1",
                        "::10.0.0.1",
                        "64:ff9b::a00:1"}) {
    INFO(a);
    CHECK(refused(a));
    CHECK_FALSE(refused(a, true));
  }
  // Public addresses: allowed either way.
  for (const char* a :
       {"93.184.216.34", "8.8.8.8", "172.32.0.1", "172.15.255.255", "100.128.0.1", "192.169.0.1",
        "1.1.1.1", "2606:2800:220:1::1", "::ffff:93.184.216.34", "2001:4860:4860::8888"}) {
    INFO(a);
    CHECK_FALSE(refused(a));
    CHECK_FALSE(refused(a, true));
  }
  // The cloud metadata address: refused even when private targets are allowed.
  for (const char* a : {"169.254.169.254", "::ffff:169.254.169.254", "fd00:ec2::254"}) {
    INFO(a);
    CHECK(refused(a));
    CHECK(refused(a, true));
  }
}

TEST_CASE("check_url names the origin and the reason but never the path", "[events][targets]") {
  auto msg = api_error([] { ev::check_url("https://10.0.0.1:8443/hook/tok3n?key=s3cret", {}); });
  CHECK(msg ==
        "channel target https://10.0.0.1:8443 is refused: 10.0.0.1 is a private address (set "
        "WRENN_ALLOW_PRIVATE_TARGETS=1 to allow private targets)");

  msg = api_error([] { ev::check_url("http://169.254.169.254/latest/meta-data", {true}); });
  CHECK(msg ==
        "channel target http://169.254.169.254 is refused: 169.254.169.254 is the cloud metadata "
        "address");

  msg = api_error([] { ev::check_url("http://[::ffff:127.0.0.1]:9000/x", {}); });
  CHECK(msg.find("channel target http://[::ffff:127.0.0.1]:9000 is refused") == 0);
  CHECK(msg.find("loopback") != std::string::npos);

  msg = api_error([] { ev::check_url("http://[fe80::1]/x", {}); });
  CHECK(msg.find("link-local") != std::string::npos);

  msg = api_error([] { ev::check_url("http://0.0.0.0:8080/", {}); });
  CHECK(msg.find("unspecified") != std::string::npos);

  msg = api_error([] { ev::check_url("https://100.64.1.2/", {}); });
  CHECK(msg.find("carrier-grade NAT") != std::string::npos);

  // "localhost" resolves locally (no DNS query leaves the machine) to loopback addresses.
  msg = api_error([] { ev::check_url("http://localhost:9/hook", {}); });
  CHECK(msg.find("channel target http://localhost:9 is refused: ") == 0);
  CHECK(msg.find("loopback") != std::string::npos);
  CHECK(ev::check_url("http://localhost:9/hook", {true}).host == "localhost");

  // A public literal is accepted (and is not sent to the resolver).
  auto p = ev::check_url("https://93.184.216.34/hooks/x?y=1#frag", {});
  CHECK(p.tls);
  CHECK(p.host == "93.184.216.34");
  CHECK(p.port == "443");
  CHECK(p.target == "/hooks/x?y=1");
  CHECK(p.origin == "https://93.184.216.34");
  // Private targets pass when allowed.
  CHECK(ev::check_url("http://10.0.0.1:8443/x", {true}).port == "8443");
}

TEST_CASE("parse_url splits URLs and rejects what is not an http(s) URL", "[events][targets]") {
  auto p = ev::parse_url("http://[2001:db8::1]:8080");
  CHECK_FALSE(p.tls);
  CHECK(p.host == "2001:db8::1");
  CHECK(p.port == "8080");
  CHECK(p.target == "/");
  CHECK(p.origin == "http://[2001:db8::1]:8080");
  p = ev::parse_url("HTTPS://Hooks.Example.COM/a/b?c=d");
  CHECK(p.host == "hooks.example.com");
  CHECK(p.port == "443");
  CHECK(p.target == "/a/b?c=d");

  auto msg = api_error([] { ev::parse_url("ftp://example.com/x"); });
  CHECK(msg == "channel target ftp://example.com is not an http or https URL");
  msg = api_error([] { ev::parse_url("https://user:pa55@example.com/x"); });
  CHECK(msg == "channel target https://example.com must not carry user:password");
  CHECK(msg.find("pa55") == std::string::npos);
  msg = api_error([] { ev::parse_url("not a url"); });
  CHECK(msg.find("is not a valid URL") != std::string::npos);
  msg = api_error([] { ev::parse_url("https://example.com:99999/"); });
  CHECK(msg.find("invalid port") != std::string::npos);
  msg = api_error([] { ev::parse_url("https:///path-only"); });
  CHECK(msg.find("has no host") != std::string::npos);
  msg = api_error([] { ev::resolve_checked("127.0.0.1", "80", {}); });
  CHECK(msg.find("127.0.0.1 is a loopback address") != std::string::npos);
  CHECK(ev::resolve_checked("127.0.0.1", "80", {true}).size() == 1);
}

TEST_CASE("message renders every event kind", "[events][providers]") {
  CHECK(ev::message(capsule_payload("capsule.create", "success")) ==
        "Capsule cap-1 created\n\nEvent: capsule.create (success)\nResource: sandbox cap-1\n"
        "Actor: ada@example.com (usr-7)\nTeam: team-1\nTime: 2026-11-23T15:30:00Z");
  CHECK(ev::message(capsule_payload("capsule.create", "error", "no hosts available")) ==
        "Capsule cap-1 failed to be created: no hosts available\n\nEvent: capsule.create "
        "(error)\nResource: sandbox cap-1\nActor: ada@example.com (usr-7)\nTeam: team-1\n"
        "Time: 2026-11-23T15:30:00Z\nError: no hosts available");
  CHECK(
      ev::message(capsule_payload("capsule.pause", "success")).rfind("Capsule cap-1 paused\n", 0) ==
      0);
  CHECK(ev::message(capsule_payload("capsule.resume", "success"))
            .rfind("Capsule cap-1 resumed\n", 0) == 0);
  CHECK(ev::message(capsule_payload("capsule.destroy", "success"))
            .rfind("Capsule cap-1 destroyed\n", 0) == 0);
  CHECK(ev::message(capsule_payload("capsule.pause", "error", "agent down"))
            .rfind("Capsule cap-1 failed to be paused: agent down\n", 0) == 0);

  json::object snap{{"event", "template.snapshot.create"},
                    {"outcome", "success"},
                    {"timestamp", "2026-11-23T15:31:00Z"},
                    {"team_id", "team-2"},
                    {"actor", {{"type", "api_key"}, {"id", "key-3"}, {"name", "ci"}}},
                    {"resource", {{"id", "tpl-9"}, {"type", "snapshot"}}},
                    {"metadata", {{"zeta", "last"}, {"name", "py311"}}}};
  CHECK(ev::message(snap) ==
        "Template snapshot tpl-9 created\n\nEvent: template.snapshot.create (success)\n"
        "Resource: snapshot tpl-9\nActor: api_key ci (key-3)\nTeam: team-2\n"
        "Time: 2026-11-23T15:31:00Z\nname: py311\nzeta: last");
  snap["event"] = "template.snapshot.delete";
  CHECK(ev::message(snap).rfind("Template snapshot tpl-9 deleted\n", 0) == 0);

  json::object host{{"event", "host.down"},
                    {"timestamp", "2026-11-23T15:32:00Z"},
                    {"team_id", "team-p"},
                    {"actor", {{"type", "system"}}},
                    {"resource", {{"id", "host-4"}, {"type", "host"}}},
                    {"metadata", {{"reason", "heartbeat timeout"}}}};
  CHECK(ev::message(host) ==
        "Host host-4 is down\n\nEvent: host.down\nResource: host host-4\nActor: system\n"
        "Team: team-p\nTime: 2026-11-23T15:32:00Z\nreason: heartbeat timeout");
  host["event"] = "host.up";
  CHECK(ev::message(host).rfind("Host host-4 is up\n\nEvent: host.up\n", 0) == 0);
}

TEST_CASE("signature is hex HMAC-SHA256 of timestamp dot body", "[events][providers]") {
  // openssl: printf '%s' '1700000000.{"event":"host.up"}' | openssl dgst -sha256 -hmac whsec_test
  CHECK(ev::signature("whsec_test", "1700000000", R"({"event":"host.up"})") ==
        "b0c9b8994360fdd9ae2ce7314fcb1737a3e73f7face29b0700f5538a0682a511");
  // RFC 4231 test case 2 (key "Jefe"), its data split at the last space into ts "." body
  // is a different message: check the split is really timestamp + "." + body.
  CHECK(ev::signature("Jefe", "what do ya want for nothing?", "") !=
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST_CASE("request has the exact shape of each provider", "[events][providers]") {
  auto payload = capsule_payload("capsule.create", "success");
  std::string body = json::serialize(payload);
  std::string text = ev::message(payload);
  ev::ProviderSettings settings;

  SECTION("webhook") {
    ev::ChannelConfig c;
    c.provider = "webhook";
    c.target = "https://receiver.example.com/hook?x=1";
    auto r = ev::request(c, payload, body, "dlv-1", "1700000000", settings);
    CHECK(r.method == "POST");
    CHECK(r.url == c.target);
    CHECK(r.body == body);
    CHECK(header(r, "Content-Type") == "application/json");
    CHECK(header(r, "X-Wrenn-Delivery") == "dlv-1");
    CHECK(header(r, "X-Wrenn-Timestamp") == "1700000000");
    CHECK(header(r, "X-Wrenn-Signature") == "<missing>");
    c.secrets["signing_key"] = "whsec_test";
    r = ev::request(c, payload, body, "dlv-1", "1700000000", settings);
    CHECK(header(r, "X-Wrenn-Signature") ==
          "sha256=" + ev::signature("whsec_test", "1700000000", body));
    CHECK(r.headers.size() == 4);
  }
  SECTION("slack and google-chat") {
    for (const char* p : {"slack", "google-chat"}) {
      auto r = ev::request(chat(p), payload, body, "dlv-2", "1700000000", settings);
      CHECK(r.method == "POST");
      CHECK(r.url == "https://hooks.example.com/services/T0/B0/secret");
      CHECK(json::parse(r.body) == json::value(json::object{{"text", text}}));
      CHECK(header(r, "Content-Type") == "application/json");
      CHECK(header(r, "X-Wrenn-Delivery") == "dlv-2");
    }
  }
  SECTION("discord") {
    auto r = ev::request(chat("discord"), payload, body, "dlv-3", "1700000000", settings);
    CHECK(json::parse(r.body) == json::value(json::object{{"content", text}}));
    CHECK(header(r, "X-Wrenn-Delivery") == "dlv-3");
    // Cut to 2000 characters (code points, not bytes).
    auto big = payload;
    big["error"] = std::string(3000, 'x') + "é";
    big["outcome"] = "error";
    r = ev::request(chat("discord"), big, body, "dlv-3", "1700000000", settings);
    std::string content(json::parse(r.body).at("content").get_string());
    CHECK(content.size() == 2000);
    // 6 + 1993 one-byte characters, then two-byte ones: the 2000th character is an "é".
    json::object accented{{"event", "x"}, {"resource", {{"id", std::string(1993, 'a') + "ééé"}}}};
    r = ev::request(chat("discord"), accented, body, "dlv-3", "1700000000", settings);
    content = std::string(json::parse(r.body).at("content").get_string());
    CHECK(content == "x on  " + std::string(1993, 'a') + "é");
  }
  SECTION("teams") {
    auto r = ev::request(chat("teams"), payload, body, "dlv-4", "1700000000", settings);
    json::object expected{{"@type", "MessageCard"},
                          {"@context", "https://schema.org/extensions"},
                          {"summary", "Capsule cap-1 created"},
                          {"title", "Capsule cap-1 created"},
                          {"text",
                           "Capsule cap-1 created<br><br>Event: capsule.create (success)<br>"
                           "Resource: sandbox cap-1<br>Actor: ada@example.com (usr-7)<br>"
                           "Team: team-1<br>Time: 2026-11-23T15:30:00Z"}};
    CHECK(json::parse(r.body) == json::value(expected));
    CHECK(header(r, "Content-Type") == "application/json");
    CHECK(header(r, "X-Wrenn-Delivery") == "dlv-4");
  }
  SECTION("telegram") {
    ev::ChannelConfig c;
    c.provider = "telegram";
    c.target = "-1001234567890";
    c.secrets["bot_token"] = "123456:ABC-def";
    settings.telegram_api_url = "http://127.0.0.1:9999/";
    auto r = ev::request(c, payload, body, "dlv-5", "1700000000", settings);
    CHECK(r.method == "POST");
    CHECK(r.url == "http://127.0.0.1:9999/bot123456:ABC-def/sendMessage");
    json::object expected{
        {"chat_id", "-1001234567890"}, {"text", text}, {"disable_web_page_preview", true}};
    CHECK(json::parse(r.body) == json::value(expected));
    CHECK(header(r, "Content-Type") == "application/json");
    CHECK(header(r, "X-Wrenn-Delivery") == "dlv-5");
    CHECK(ev::destination_url(c, settings) == "http://127.0.0.1:9999/");
  }
  SECTION("matrix") {
    ev::ChannelConfig c;
    c.provider = "matrix";
    c.target = "!room:example.org";
    c.secrets["access_token"] = "syt_tok";
    auto r = ev::request(c, payload, body, "dlv-6", "1700000000", settings);
    CHECK(r.method == "PUT");
    CHECK(r.url ==
          "https://example.org/_matrix/client/v3/rooms/%21room%3Aexample.org/send/"
          "m.room.message/dlv-6");
    CHECK(header(r, "Authorization") == "Bearer syt_tok");
    CHECK(header(r, "Content-Type") == "application/json");
    CHECK(header(r, "X-Wrenn-Delivery") == "dlv-6");
    json::object expected{{"msgtype", "m.text"}, {"body", text}};
    CHECK(json::parse(r.body) == json::value(expected));
    c.options["homeserver"] = "https://matrix.example.net/";
    r = ev::request(c, payload, body, "dlv-6", "1700000000", settings);
    CHECK(r.url.rfind("https://matrix.example.net/_matrix/client/v3/rooms/", 0) == 0);
    CHECK(ev::destination_url(c, settings) == "https://matrix.example.net/");
  }
}

TEST_CASE("validate names the wrong field", "[events][providers]") {
  ev::ProviderSettings s;
  auto v = [&](const ev::ChannelConfig& c) { return api_error([&] { ev::validate(c, s); }); };
  ev::ChannelConfig c;
  c.provider = "pager";
  CHECK(v(c).find("provider must be one of") == 0);

  c.provider = "webhook";
  c.target = "https://receiver.example.com/hook";
  CHECK(v(c).empty());
  c.target = "gopher://x";
  CHECK(v(c).find("target: ") == 0);
  c.target = "";
  CHECK(v(c) == "target is required");

  for (const char* p : {"slack", "discord", "teams", "google-chat"}) {
    INFO(p);
    auto ch = chat(p);
    CHECK(v(ch).empty());
    ch.secrets["webhook_url"] = "http://hooks.example.com/x";
    CHECK(v(ch).find("secrets.webhook_url must be an https URL") == 0);
    s.allow_private = true;
    CHECK(v(ch).empty());
    s.allow_private = false;
    ch.secrets.erase("webhook_url");
    CHECK(v(ch) == "secrets.webhook_url is required");
  }

  ev::ChannelConfig tg;
  tg.provider = "telegram";
  tg.target = "-100123";
  tg.secrets["bot_token"] = "123:abc_DEF-9";
  CHECK(v(tg).empty());
  tg.target = "@my_channel";
  CHECK(v(tg).empty());
  tg.target = "not a chat";
  CHECK(v(tg).find("target must be a telegram chat id") == 0);
  tg.target = "42";
  tg.secrets["bot_token"] = "123/../x";
  CHECK(v(tg) == "secrets.bot_token is not a telegram bot token");
  tg.secrets.clear();
  CHECK(v(tg) == "secrets.bot_token is required for provider telegram");

  ev::ChannelConfig mx;
  mx.provider = "matrix";
  mx.target = "#ops:example.org";
  mx.secrets["access_token"] = "syt";
  CHECK(v(mx).empty());
  CHECK(ev::destination_url(mx, s) == "https://example.org/");
  mx.options["homeserver"] = "ftp://x";
  CHECK(v(mx).find("options.homeserver: ") == 0);
  mx.options.clear();
  mx.target = "ops";
  CHECK(v(mx).find("target must be a matrix room id") == 0);
  mx.target = "!r:example.org";
  mx.secrets.clear();
  CHECK(v(mx) == "secrets.access_token is required for provider matrix");

  CHECK(ev::destination_url(chat("slack"), s) == "https://hooks.example.com/services/T0/B0/secret");
  c.provider = "pager";
  CHECK(ev::destination_url(c, s).empty());
}

TEST_CASE("sender delivers to a receiver and reports 2xx as ok", "[events][sender]") {
  HttpReceiver rx;
  rx.set_handler([](const ReceivedRequest&) { return reply(204, ""); });
  auto res = ev::send(post(rx.url("/hook?x=1"), R"({"event":"host.up"})"), local());
  CHECK(res.ok);
  CHECK(res.status == 204);
  CHECK(res.error.empty());
  REQUIRE(rx.requests().size() == 1);
  auto r = rx.requests()[0];
  CHECK(r.method == "POST");
  CHECK(r.target == "/hook?x=1");
  CHECK(r.body == R"({"event":"host.up"})");
  CHECK(r.headers["host"] == "127.0.0.1:" + std::to_string(rx.port()));
  CHECK(r.headers["user-agent"] == "wrenn-cp");
  CHECK(r.headers["content-type"] == "application/json");
  CHECK(r.headers["x-wrenn-delivery"] == "dlv-1");
  CHECK(r.headers["content-length"] == "19");
  CHECK(r.headers["connection"] == "close");

  // PUT for matrix-like requests; "localhost" works when private targets are allowed.
  rx.clear();
  rx.set_handler([](const ReceivedRequest&) { return reply(200, "{\"event_id\":1}"); });
  auto put = post("http://localhost:" + std::to_string(rx.port()) + "/put");
  put.method = "PUT";
  res = ev::send(put, local());
  CHECK(res.ok);
  CHECK(res.body == "{\"event_id\":1}");
  REQUIRE(rx.requests().size() == 1);
  CHECK(rx.requests()[0].method == "PUT");
}

TEST_CASE("sender reports HTTP errors with the status", "[events][sender]") {
  HttpReceiver rx;
  rx.set_handler([](const ReceivedRequest&) { return reply(500, "boom"); });
  auto res = ev::send(post(rx.url("/hook")), local());
  CHECK_FALSE(res.ok);
  CHECK(res.status == 500);
  CHECK(res.error == "HTTP 500: boom");
  CHECK(res.body == "boom");
  CHECK(rx.requests().size() == 1);
}

TEST_CASE("sender reads at most 16 KiB of the answer", "[events][sender]") {
  HttpReceiver rx;
  rx.set_handler([](const ReceivedRequest&) { return reply(502, std::string(100000, 'z')); });
  auto res = ev::send(post(rx.url("/hook")), local());
  CHECK_FALSE(res.ok);
  CHECK(res.status == 502);
  CHECK(res.body.size() <= 16 * 1024);
  CHECK(res.error.rfind("HTTP 502: ", 0) == 0);
  CHECK(res.error.size() <= 210);
}

TEST_CASE("sender does not follow redirects", "[events][sender]") {
  HttpReceiver rx;
  rx.set_handler([&](const ReceivedRequest& r) {
    if (r.target == "/hook") return reply(302, "", {{"Location", rx.url("/elsewhere")}});
    return reply(200);
  });
  auto res = ev::send(post(rx.url("/hook")), local());
  CHECK_FALSE(res.ok);
  CHECK(res.status == 302);
  CHECK(res.error == "redirect to " + rx.url("/elsewhere") + " not followed");
  std::this_thread::sleep_for(200ms);
  REQUIRE(rx.requests().size() == 1);
  CHECK(rx.requests()[0].target == "/hook");
}

TEST_CASE("sender gives up at the deadline", "[events][sender]") {
  HttpReceiver rx;
  rx.set_handler([](const ReceivedRequest&) {
    ReceiverReply r;
    r.delay = 3s;
    return r;
  });
  auto start = std::chrono::steady_clock::now();
  auto res = ev::send(post(rx.url("/slow")), local(500ms));
  auto took = std::chrono::steady_clock::now() - start;
  CHECK_FALSE(res.ok);
  CHECK(res.status == 0);
  CHECK(res.error.find("timed out after 500 ms") == 0);
  CHECK(took >= 450ms);
  CHECK(took < 2s);
  CHECK(res.duration >= 450ms);
  CHECK(rx.requests().size() == 1);
}

TEST_CASE("sender verifies TLS certificates", "[events][sender]") {
  HttpReceiver rx(ReceiverTls::kSelfSigned);
  REQUIRE(rx.cert_pem().find("BEGIN CERTIFICATE") != std::string::npos);
  REQUIRE(rx.url().rfind("https://127.0.0.1:", 0) == 0);
  TempFile ca(rx.cert_pem());

  SECTION("trusted through the CA file") {
    auto opts = local();
    opts.ca_file = ca.path.string();
    auto res = ev::send(post(rx.url("/tls")), opts);
    CHECK(res.error.empty());
    CHECK(res.ok);
    CHECK(res.status == 200);
    // By name too (SNI and a DNS SAN).
    res = ev::send(post("https://localhost:" + std::to_string(rx.port()) + "/tls"), opts);
    CHECK(res.ok);
    REQUIRE(rx.requests().size() == 2);
    CHECK(rx.requests()[1].headers["host"] == "localhost:" + std::to_string(rx.port()));
  }
  SECTION("untrusted") {
    auto res = ev::send(post(rx.url("/tls")), local());
    CHECK_FALSE(res.ok);
    CHECK(res.status == 0);
    CHECK(res.error.find("TLS handshake with " + rx.url("") + " failed: ") == 0);
    CHECK(res.error.find("certificate") != std::string::npos);
    CHECK(rx.requests().empty());
  }
  SECTION("a missing CA file is an error, not a crash") {
    auto opts = local();
    opts.ca_file = "/nonexistent/wrenn-ca.pem";
    auto res = ev::send(post(rx.url("/tls")), opts);
    CHECK_FALSE(res.ok);
    CHECK(res.error.find("cannot load the channel CA file") != std::string::npos);
  }
}

TEST_CASE("sender refuses private targets unless allowed", "[events][sender]") {
  HttpReceiver rx;
  ev::SendOptions opts;  // default policy
  auto res = ev::send(post(rx.url("/hook/s3cret-token?k=v")), opts);
  CHECK_FALSE(res.ok);
  CHECK(res.status == 0);
  CHECK(res.error == "channel target http://127.0.0.1:" + std::to_string(rx.port()) +
                         " is refused: 127.0.0.1 is a loopback address (set "
                         "WRENN_ALLOW_PRIVATE_TARGETS=1 to allow private targets)");
  CHECK(res.error.find("s3cret") == std::string::npos);
  res = ev::send(post("http://localhost:" + std::to_string(rx.port()) + "/"), opts);
  CHECK(res.error.find("is refused") != std::string::npos);
  std::this_thread::sleep_for(200ms);
  CHECK(rx.requests().empty());

  // Connection refused: status 0 and a reason.
  res = ev::send(post("http://127.0.0.1:1/x"), local());
  CHECK(res.status == 0);
  CHECK(res.error.find("connecting to http://127.0.0.1:1 failed") == 0);
}

TEST_CASE("sender can be used from many threads at once", "[events][sender]") {
  HttpReceiver rx;
  HttpReceiver tls(ReceiverTls::kSelfSigned);
  TempFile ca(tls.cert_pem());
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 8; ++i)
    threads.emplace_back([&, i] {
      auto opts = local();
      opts.ca_file = ca.path.string();
      auto res = ev::send(post((i % 2 ? rx : tls).url("/n" + std::to_string(i))), opts);
      if (res.ok) ++ok;
    });
  for (auto& t : threads) t.join();
  CHECK(ok == 8);
  CHECK(rx.requests().size() == 4);
  CHECK(tls.requests().size() == 4);
}
