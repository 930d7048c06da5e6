// The REST API of notification channels (src/cp/events/channel_routes.h) and the SSRF
// checks of channel destinations at creation and at fleet apply time: a real wrenn-cp on a
// throwaway PostgreSQL, real local HTTP receivers (test/support/http_receiver.h).
#include <boost/json.hpp>
#include <catch2/catch.hpp>
#include <regex>
#include <string>
#include <vector>

#include "cp_fixture.h"
#include "crypto/encoding.h"
#include "crypto/hash.h"
#include "events/event.h"
#include "http_receiver.h"

using namespace wrenn;
using namespace wrenn::cp;
using namespace wrenn::test;
using namespace std::chrono_literals;
namespace json = boost::json;
using bverb = boost::beast::http::verb;

namespace {

const std::regex kHex64("^[0-9a-f]{64}$");

CpOptions private_allowed() {
  CpOptions o;
  o.extra_args = {"--allow-private-targets"};
  return o;
}

std::string str(const json::value& v) {
  return v.is_string() ? std::string(v.as_string()) : "<" + json::serialize(v) + ">";
}

json::object webhook_body(const std::string& name, const std::string& url,
                          json::array events = {"capsule.create"}) {
  return {{"name", name},
          {"provider", "webhook"},
          {"config", json::object{{"url", url}}},
          {"events", std::move(events)}};
}

HttpReply send(const CpProcess& cp, bverb method, const std::string& target, const std::string& key,
               const json::object& body = {}) {
  return cp.request(method, target, body.empty() ? "" : json::serialize(body),
                    {{"X-API-Key", key}, {"Content-Type", "application/json"}});
}

HttpReply create(const CpProcess& cp, const std::string& key, const json::object& body) {
  return cp.post("/v1/channels", json::serialize(body), key);
}

std::string created_id(const HttpReply& r) {
  INFO(r.body);
  REQUIRE(r.status == 201);
  return str(r.json().at("id"));
}

// (action, status) of the audit entries of a resource, oldest first.
std::vector<std::pair<std::string, std::string>> audit_of(const CpProcess& cp,
                                                          const std::string& id) {
  auto pool = cp.pool();
  auto c = pool->acquire();
  auto r = c->exec(
      "SELECT action, status FROM audit_logs WHERE resource_type = 'channel' AND resource_id = $1 "
      "ORDER BY created_at, id",
      id);
  std::vector<std::pair<std::string, std::string>> out;
  for (int i = 0; i < r.rows(); ++i) out.emplace_back(r.text(i, 0), r.text(i, 1));
  return out;
}

std::string header(const ReceivedRequest& r, const std::string& name) {
  auto it = r.headers.find(name);
  return it == r.headers.end() ? "" : it->second;
}

bool signed_with(const ReceivedRequest& r, const std::string& secret) {
  return header(r, "x-wrenn-signature") ==
         "sha256=" + crypto::hmac_sha256_hex(secret, header(r, "x-wrenn-timestamp") + "." + r.body);
}

std::string spec_body(const std::string& set, const std::string& text) {
  json::array files{json::object{{"name", "c.toml"}, {"text", text}}};
  return json::serialize(json::object{{"apply_set", set}, {"files", files}});
}

// Plans, then applies at the plan's revision.
HttpReply apply_spec(const CpProcess& cp, const std::string& set, const std::string& text) {
  auto p = cp.post("/v1/fleet/plan", spec_body(set, text), cp.admin_api_key());
  INFO(p.body);
  REQUIRE(p.status == 200);
  json::object body = json::parse(spec_body(set, text)).as_object();
  body["revision"] = p.json().at("revision");
  return cp.post("/v1/fleet/apply", json::serialize(body), cp.admin_api_key());
}

const std::string kSpecKey = "wrn_00112233445566778899aabbccddeeff";

std::string spec_team(const std::string& name) {
  return "[[team]]\nname = \"" + name + "\"\n[[team.api_keys]]\nname = \"ci\"\nsha256 = \"" +
         crypto::sha256_hex(kSpecKey) + "\"\n\n";
}

}  // namespace

TEST_CASE("channels: create returns the secret once and reads never show config or secrets") {
  HttpReceiver rx;
  CpProcess cp(private_allowed());
  auto team = cp.create_team("acme");

  auto r = create(cp, team.api_key, webhook_body("first", rx.url("/hook")));
  const std::string first = created_id(r);
  json::object ch = r.json().as_object();
  CHECK(first.starts_with("ch-"));
  CHECK(str(ch.at("team_id")) == team.team_id);
  CHECK(ch.at("name") == "first");
  CHECK(ch.at("provider") == "webhook");
  CHECK(ch.at("apply_set").is_null());
  CHECK(ch.at("read_only") == false);
  CHECK_FALSE(ch.contains("config"));
  const std::string secret = str(ch.at("secret"));
  CHECK(std::regex_match(secret, kHex64));

  // A caller's own secret is the one returned.
  json::object own = webhook_body("second", rx.url("/other"));
  own["config"].as_object()["secret"] = "my-own-signing-secret";
  auto r2 = create(cp, team.api_key, own);
  const std::string second = created_id(r2);
  CHECK(r2.json().at("secret") == "my-own-signing-secret");

  // GET never shows config, secret or the URL.
  auto g = cp.get("/v1/channels/" + first, team.api_key);
  REQUIRE(g.status == 200);
  CHECK_FALSE(g.json().as_object().contains("secret"));
  CHECK_FALSE(g.json().as_object().contains("config"));
  CHECK(g.body.find(secret) == std::string::npos);
  CHECK(g.body.find("/hook") == std::string::npos);
  CHECK(g.json().at("events") == json::array{"capsule.create"});

  // Newest first.
  auto l = cp.get("/v1/channels", team.api_key);
  REQUIRE(l.status == 200);
  REQUIRE(l.json().as_array().size() == 2);
  CHECK(str(l.json().as_array()[0].at("id")) == second);
  CHECK(str(l.json().as_array()[1].at("id")) == first);
  CHECK(l.body.find("my-own-signing-secret") == std::string::npos);
  CHECK(l.body.find(secret) == std::string::npos);

  // Stored sealed: neither the secret nor its base64 appears in the row.
  auto pool = cp.pool();
  auto c = pool->acquire();
  auto row = c->exec("SELECT secrets_sealed, options::text FROM channels WHERE id = $1", first);
  REQUIRE(row.rows() == 1);
  const std::string sealed(row.text(0, 0));
  CHECK(!sealed.empty());
  CHECK(sealed.find(secret) == std::string::npos);
  CHECK(crypto::base64_decode(sealed).find(secret) == std::string::npos);
  CHECK(cp.log().find(secret) == std::string::npos);
  CHECK(cp.log().find("my-own-signing-secret") == std::string::npos);

  CHECK(audit_of(cp, first) ==
        std::vector<std::pair<std::string, std::string>>{{"create", "success"}});
  auto meta = c->exec(
      "SELECT metadata->>'name', metadata->>'provider' FROM audit_logs WHERE resource_id = $1",
      first);
  REQUIRE(meta.rows() == 1);
  CHECK(meta.text(0, 0) == "first");
  CHECK(meta.text(0, 1) == "webhook");
}

TEST_CASE("channels: names events providers and config keys are validated") {
  HttpReceiver rx;
  CpProcess cp(private_allowed());
  auto team = cp.create_team("acme");

  // Name: trimmed, lowercased, spaces to '-'; unique per team.
  auto r = create(cp, team.api_key, webhook_body("  My Alerts ", rx.url("/a")));
  created_id(r);
  CHECK(r.json().at("name") == "my-alerts");
  auto dup = create(cp, team.api_key, webhook_body("my alerts", rx.url("/b")));
  CHECK(dup.status == 409);
  CHECK(dup.error_code() == "conflict");
  CHECK(dup.error_message().find("my-alerts") != std::string::npos);
  auto bad_name = create(cp, team.api_key, webhook_body("no/slash", rx.url("/b")));
  CHECK(bad_name.status == 400);
  CHECK(bad_name.error_message().find("no/slash") != std::string::npos);

  // Upstream event names are accepted and stored in ours.
  auto up = create(cp, team.api_key,
                   webhook_body("upstream", rx.url("/u"),
                                {"capsule.created", "capsule.running", "template.snapshot.deleted",
                                 "host.down"}));
  created_id(up);
  CHECK(up.json().at("events") ==
        json::array{"capsule.create", "capsule.resume", "host.down", "template.snapshot.delete"});

  auto bad_event = create(cp, team.api_key, webhook_body("e", rx.url("/e"), {"capsule.exploded"}));
  CHECK(bad_event.status == 400);
  CHECK(bad_event.error_message().find("capsule.exploded") != std::string::npos);
  auto no_events = create(cp, team.api_key, webhook_body("e", rx.url("/e"), json::array{}));
  CHECK(no_events.status == 400);

  json::object bad_provider = webhook_body("p", rx.url("/p"));
  bad_provider["provider"] = "carrier-pigeon";
  auto bp = create(cp, team.api_key, bad_provider);
  CHECK(bp.status == 400);
  CHECK(bp.error_message().find("carrier-pigeon") != std::string::npos);

  json::object bad_key = webhook_body("k", rx.url("/k"));
  bad_key["config"].as_object()["colour"] = "blue";
  auto bk = create(cp, team.api_key, bad_key);
  CHECK(bk.status == 400);
  CHECK(bk.error_message().find("colour") != std::string::npos);

  json::object missing{{"name", "tg"},
                       {"provider", "telegram"},
                       {"config", json::object{{"bot_token", "123:ABC"}}},
                       {"events", json::array{"host.up"}}};
  auto mk = create(cp, team.api_key, missing);
  CHECK(mk.status == 400);
  CHECK(mk.error_message().find("chat_id") != std::string::npos);

  // Problems of a value name the caller's config key.
  json::object bad_chat{{"name", "tg"},
                        {"provider", "telegram"},
                        {"config", json::object{{"bot_token", "123:ABC"}, {"chat_id", "no chat"}}},
                        {"events", json::array{"host.up"}}};
  auto bc = create(cp, team.api_key, bad_chat);
  CHECK(bc.status == 400);
  CHECK(bc.error_message().find("config.chat_id") != std::string::npos);

  // "googlechat" is upstream's spelling of google-chat.
  json::object gchat{{"name", "gchat"},
                     {"provider", "googlechat"},
                     {"config", json::object{{"webhook_url", rx.url("/chat")}}},
                     {"events", json::array{"host.up"}}};
  auto gc = create(cp, team.api_key, gchat);
  created_id(gc);
  CHECK(gc.json().at("provider") == "google-chat");
  CHECK_FALSE(gc.json().as_object().contains("secret"));

  CHECK(cp.get("/v1/channels/not-an-id", team.api_key).status == 400);
}

TEST_CASE("channels: another team sees none of them") {
  HttpReceiver rx;
  CpProcess cp(private_allowed());
  auto team = cp.create_team("acme");
  auto other = cp.create_team("other");
  const std::string id = created_id(create(cp, team.api_key, webhook_body("mine", rx.url("/"))));

  CHECK(cp.get("/v1/channels/" + id, other.api_key).status == 404);
  CHECK(cp.get("/v1/channels", other.api_key).json().as_array().empty());
  CHECK(send(cp, bverb::patch, "/v1/channels/" + id, other.api_key, {{"name", "theirs"}}).status ==
        404);
  CHECK(send(cp, bverb::post, "/v1/channels/" + id + "/rotate-secret", other.api_key).status ==
        404);
  CHECK(cp.get("/v1/channels/" + id + "/deliveries", other.api_key).status == 404);
  // DELETE is idempotent (204) but does not touch another team's channel.
  CHECK(cp.del("/v1/channels/" + id, other.api_key).status == 204);
  CHECK(cp.get("/v1/channels/" + id, team.api_key).status == 200);
  // The same name in another team is fine.
  created_id(create(cp, other.api_key, webhook_body("mine", rx.url("/"))));
}

TEST_CASE("channels: patch replaces what is given and delete is idempotent") {
  HttpReceiver rx;
  CpProcess cp(private_allowed());
  auto team = cp.create_team("acme");
  const std::string id = created_id(
      create(cp, team.api_key, webhook_body("ops", rx.url("/"), {"host.up", "host.down"})));
  const std::string other = created_id(create(cp, team.api_key, webhook_body("dev", rx.url("/"))));

  auto p = send(cp, bverb::patch, "/v1/channels/" + id, team.api_key, {{"name", "Ops Team"}});
  INFO(p.body);
  REQUIRE(p.status == 200);
  CHECK(p.json().at("name") == "ops-team");
  CHECK(p.json().at("events") == json::array{"host.down", "host.up"});

  p = send(cp, bverb::patch, "/v1/channels/" + id, team.api_key,
           {{"events", json::array{"capsule.paused"}}});
  REQUIRE(p.status == 200);
  CHECK(p.json().at("name") == "ops-team");
  CHECK(p.json().at("events") == json::array{"capsule.pause"});

  CHECK(send(cp, bverb::patch, "/v1/channels/" + id, team.api_key, {{"name", "dev"}}).status ==
        409);
  CHECK(
      send(cp, bverb::patch, "/v1/channels/" + id, team.api_key, {{"provider", "slack"}}).status ==
      400);
  auto bad = send(cp, bverb::patch, "/v1/channels/" + id, team.api_key,
                  {{"config", json::object{{"webhook_url", "x"}}}});
  CHECK(bad.status == 400);
  CHECK(bad.error_message().find("webhook_url") != std::string::npos);

  auto put = send(cp, bverb::put, "/v1/channels/" + id + "/config", team.api_key,
                  {{"config", json::object{{"url", rx.url("/new")}}}});
  INFO(put.body);
  CHECK(put.status == 200);
  CHECK_FALSE(put.json().as_object().contains("secret"));

  CHECK(audit_of(cp, id) ==
        std::vector<std::pair<std::string, std::string>>{{"create", "success"},
                                                         {"update", "info"},
                                                         {"update", "info"},
                                                         {"rotate_config", "info"}});

  CHECK(cp.del("/v1/channels/" + id, team.api_key).status == 204);
  CHECK(cp.get("/v1/channels/" + id, team.api_key).status == 404);
  CHECK(cp.del("/v1/channels/" + id, team.api_key).status == 204);
  CHECK(audit_of(cp, id).back() == std::pair<std::string, std::string>{"delete", "warning"});
  CHECK(audit_of(cp, id).size() == 5);
  CHECK(cp.get("/v1/channels/" + other, team.api_key).status == 200);
}

TEST_CASE("channels: rotate secret gives a new secret that signs the deliveries") {
  HttpReceiver rx;
  CpProcess cp(private_allowed());
  auto team = cp.create_team("acme");
  auto r = create(cp, team.api_key, webhook_body("signed", rx.url("/hook")));
  const std::string id = created_id(r);
  const std::string old_secret = str(r.json().at("secret"));

  auto rot = send(cp, bverb::post, "/v1/channels/" + id + "/rotate-secret", team.api_key);
  INFO(rot.body);
  REQUIRE(rot.status == 200);
  const std::string secret = str(rot.json().at("secret"));
  CHECK(std::regex_match(secret, kHex64));
  CHECK(secret != old_secret);
  CHECK(audit_of(cp, id).back() == std::pair<std::string, std::string>{"rotate_secret", "info"});
  CHECK(cp.log().find(secret) == std::string::npos);

  // A new config without "secret" keeps the signing secret.
  auto patch = send(cp, bverb::patch, "/v1/channels/" + id, team.api_key,
                    {{"config", json::object{{"url", rx.url("/patched")}}}});
  REQUIRE(patch.status == 200);

  events::Event ev;
  ev.type = "capsule.create";
  ev.outcome = "success";
  ev.team_id = team.team_id;
  ev.resource_id = "cl-rotated";
  ev.resource_type = "sandbox";
  {
    auto pool = cp.pool();
    pool->with_transaction([&](pg::Connection& tx) { events::record(tx, ev); });
  }
  REQUIRE(rx.wait_for(1, 20s));
  const ReceivedRequest got = rx.requests().front();
  CHECK(got.target == "/patched");
  CHECK(signed_with(got, secret));
  CHECK_FALSE(signed_with(got, old_secret));

  // Only webhooks have a signing secret.
  json::object slack{{"name", "slack"},
                     {"provider", "slack"},
                     {"config", json::object{{"webhook_url", rx.url("/s")}}},
                     {"events", json::array{"host.up"}}};
  const std::string sid = created_id(create(cp, team.api_key, slack));
  auto no = send(cp, bverb::post, "/v1/channels/" + sid + "/rotate-secret", team.api_key);
  CHECK(no.status == 400);
  CHECK(no.error_message().find("webhook") != std::string::npos);
}

TEST_CASE("channels: the test endpoint sends a channel.test event and reports the answer") {
  HttpReceiver rx;
  HttpReceiver failing;
  failing.set_handler([](const ReceivedRequest&) {
    ReceiverReply r;
    r.status = 500;
    r.body = "boom";
    return r;
  });
  CpProcess cp(private_allowed());
  auto team = cp.create_team("acme");

  json::object body{{"provider", "webhook"},
                    {"config", json::object{{"url", rx.url("/test")}, {"secret", "t-secret"}}}};
  auto r = cp.post("/v1/channels/test", json::serialize(body), team.api_key);
  INFO(r.body);
  REQUIRE(r.status == 200);
  CHECK(r.json().at("status") == "ok");
  CHECK(r.json().at("http_status") == 200);
  REQUIRE(rx.wait_for(1, 5s));
  const ReceivedRequest got = rx.requests().front();
  CHECK(got.method == "POST");
  CHECK(got.target == "/test");
  CHECK(signed_with(got, "t-secret"));
  json::object p = json::parse(got.body).as_object();
  CHECK(p.at("event") == "channel.test");
  CHECK(str(p.at("team_id")) == team.team_id);
  CHECK(p.at("resource") == json::parse(R"({"id":"test","type":"channel"})"));
  CHECK(p.at("actor").at("type") == "api_key");
  // Nothing is stored.
  CHECK(cp.get("/v1/channels", team.api_key).json().as_array().empty());

  json::object bad{{"provider", "webhook"}, {"config", json::object{{"url", failing.url("/x")}}}};
  auto f = cp.post("/v1/channels/test", json::serialize(bad), team.api_key);
  INFO(f.body);
  CHECK(f.status == 502);
  CHECK(f.error_code() == "delivery_failed");
  CHECK(f.error_message().find("500") != std::string::npos);
  CHECK(failing.requests().size() == 1);

  json::object unknown{{"provider", "fax"}, {"config", json::object{}}};
  CHECK(cp.post("/v1/channels/test", json::serialize(unknown), team.api_key).status == 400);
}

TEST_CASE("channels: loopback and metadata webhooks are refused at creation") {
  CpProcess cp;  // private targets not allowed
  auto team = cp.create_team("acme");
  for (const std::string url : {"http://127.0.0.1:9/hook", "http://169.254.169.254/latest/"}) {
    INFO(url);
    auto r = create(cp, team.api_key, webhook_body("hook", url));
    CHECK(r.status == 400);
    CHECK(r.error_code() == "invalid_request");
    json::object test{{"provider", "webhook"}, {"config", json::object{{"url", url}}}};
    CHECK(cp.post("/v1/channels/test", json::serialize(test), team.api_key).status == 400);
  }
  json::object slack{{"name", "slack"},
                     {"provider", "slack"},
                     {"config", json::object{{"webhook_url", "https://10.1.2.3/services/x"}}},
                     {"events", json::array{"host.up"}}};
  CHECK(create(cp, team.api_key, slack).status == 400);
  CHECK(cp.get("/v1/channels", team.api_key).json().as_array().empty());

  // Allowing private targets never allows the metadata address.
  CpProcess open_cp(private_allowed());
  auto t2 = open_cp.create_team("acme");
  CHECK(create(open_cp, t2.api_key, webhook_body("meta", "http://169.254.169.254/")).status == 400);
  CHECK(create(open_cp, t2.api_key, webhook_body("local", "http://127.0.0.1:9/")).status == 201);
}

TEST_CASE("channels: loopback and metadata webhooks in specs fail the apply") {
  CpProcess cp;
  for (const std::string target : {"http://169.254.169.254/", "http://127.0.0.1:8000/hook"}) {
    INFO(target);
    const std::string text = spec_team("acme") +
                             "[[channel]]\nname = \"sneaky\"\nteam = \"acme\"\nprovider = "
                             "\"webhook\"\ntarget = \"" +
                             target + "\"\nevents = [\"host.up\"]\n";
    auto a = apply_spec(cp, "ssrf", text);
    INFO(a.body);
    CHECK(a.status == 400);
    CHECK(a.error_message().find("channel \"sneaky\"") != std::string::npos);
    auto pool = cp.pool();
    auto c = pool->acquire();
    CHECK(c->exec("SELECT 1 FROM channels WHERE name = 'sneaky'").empty());
  }
}

TEST_CASE("channels: spec channels are read-only through the API") {
  CpOptions o;
  o.env.push_back({"CHAN_TEST_MATRIX_TOKEN", "syt_matrix_token"});
  CpProcess cp(o);
  const std::string text =
      spec_team("acme") +
      "[[channel]]\nname = \"declared\"\nteam = \"acme\"\nprovider = \"webhook\"\n"
      "target = \"https://hooks.invalid/wrenn\"\nevents = [\"host.up\"]\n\n"
      "[[channel]]\nname = \"room\"\nteam = \"acme\"\nprovider = \"matrix\"\n"
      "target = \"!abc:matrix.invalid\"\n"
      "secrets = { access_token = { env = \"CHAN_TEST_MATRIX_TOKEN\" } }\n"
      "events = [\"host.down\"]\n\n"
      "[[channel]]\nname = \"room2\"\nteam = \"acme\"\nprovider = \"matrix\"\n"
      "target = \"#alias:matrix.invalid\"\nhomeserver = \"https://hs.invalid/\"\n"
      "secrets = { access_token = { env = \"CHAN_TEST_MATRIX_TOKEN\" } }\n"
      "events = [\"host.down\"]\n";
  auto a = apply_spec(cp, "fleet-a", text);
  INFO(a.body);
  REQUIRE(a.status == 200);

  auto l = cp.get("/v1/channels", kSpecKey);
  INFO(l.body);
  REQUIRE(l.status == 200);
  REQUIRE(l.json().as_array().size() == 3);
  std::string id;
  const json::value listed = l.json();
  for (const auto& ch : listed.as_array()) {
    CHECK(ch.at("apply_set") == "fleet-a");
    CHECK(ch.at("read_only") == true);
    if (ch.at("name") == "declared") id = str(ch.at("id"));
  }
  REQUIRE(!id.empty());
  auto patch = send(cp, bverb::patch, "/v1/channels/" + id, kSpecKey, {{"name", "x"}});
  CHECK(patch.status == 409);
  CHECK(patch.error_message().find("fleet-a") != std::string::npos);
  CHECK(send(cp, bverb::put, "/v1/channels/" + id + "/config", kSpecKey,
             {{"config", json::object{{"url", "https://hooks.invalid/"}}}})
            .status == 409);
  CHECK(send(cp, bverb::post, "/v1/channels/" + id + "/rotate-secret", kSpecKey).status == 409);
  auto del = cp.del("/v1/channels/" + id, kSpecKey);
  CHECK(del.status == 409);
  CHECK(del.error_message().find("fleet-a") != std::string::npos);
  CHECK(cp.get("/v1/channels/" + id, kSpecKey).status == 200);

  // Matrix homeservers: the room's server by default, the declared one without its "/".
  auto pool = cp.pool();
  auto c = pool->acquire();
  auto hs = c->exec(
      "SELECT name, options->>'homeserver' FROM channels WHERE provider = 'matrix' "
      "ORDER BY name");
  REQUIRE(hs.rows() == 2);
  CHECK(hs.text(0, 1) == "https://matrix.invalid");
  CHECK(hs.text(1, 1) == "https://hs.invalid");
  auto sealed = c->exec("SELECT secrets_sealed FROM channels WHERE name = 'room'");
  REQUIRE(sealed.rows() == 1);
  CHECK(sealed.text(0, 0).find("syt_matrix_token") == std::string_view::npos);
}

TEST_CASE("channels: a new channel has an empty delivery log") {
  HttpReceiver rx;
  CpProcess cp(private_allowed());
  auto team = cp.create_team("acme");
  const std::string id = created_id(create(cp, team.api_key, webhook_body("log", rx.url("/"))));
  auto r = cp.get("/v1/channels/" + id + "/deliveries", team.api_key);
  INFO(r.body);
  REQUIRE(r.status == 200);
  CHECK(r.json().as_array().empty());
  CHECK(cp.get("/v1/channels/" + id + "/deliveries?limit=0", team.api_key).status == 400);
  CHECK(cp.get("/v1/channels/" + id + "/deliveries?limit=201", team.api_key).status == 400);
  CHECK(cp.get("/v1/channels/" + id + "/deliveries?before=nope", team.api_key).status == 400);
  CHECK(cp.get("/v1/channels/" + id + "/deliveries?limit=5", team.api_key).status == 200);
}
