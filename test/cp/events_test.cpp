// Lifecycle events delivered to notification channels (src/cp/events): a real wrenn-cp on a
// throwaway PostgreSQL, real agents for the lifecycle, real local HTTP receivers.
//
// Events that need no sandbox are written with events::record() on the test's own
// connection, exactly as the control plane's state changes write them; the control
// plane's dispatcher delivers them.
#include <signal.h>

#include <boost/json.hpp>
#include <catch2/catch.hpp>
#include <filesystem>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cp_fixture.h"
#include "crypto/hash.h"
#include "events/event.h"
#include "http_receiver.h"

using namespace wrenn;
using namespace wrenn::test;
using namespace std::chrono_literals;
namespace json = boost::json;
namespace events = wrenn::cp::events;

namespace {

CpOptions options(std::vector<std::string> extra = {}) {
  CpOptions o;
  o.extra_args = {"--allow-private-targets"};
  o.extra_args.insert(o.extra_args.end(), extra.begin(), extra.end());
  return o;
}

const std::vector<std::string> kAllEvents = {"capsule.create",
                                             "capsule.pause",
                                             "capsule.resume",
                                             "capsule.destroy",
                                             "template.snapshot.create",
                                             "template.snapshot.delete",
                                             "host.up",
                                             "host.down"};

std::string str(const json::value& v) {
  return v.is_string() ? std::string(v.as_string()) : "<" + json::serialize(v) + ">";
}

struct Channel {
  std::string id;
  std::string secret;
};

Channel make_channel(const CpProcess& cp, const std::string& key, const std::string& name,
                     const std::string& provider, json::object config,
                     const std::vector<std::string>& events = kAllEvents) {
  json::array ev;
  for (const auto& e : events) ev.emplace_back(e);
  json::object body;
  body["name"] = name;
  body["provider"] = provider;
  body["config"] = std::move(config);
  body["events"] = std::move(ev);
  auto r = cp.post("/v1/channels", json::serialize(body), key);
  INFO(r.body);
  REQUIRE(r.status == 201);
  Channel c;
  const json::value v = r.json();
  c.id = str(v.at("id"));
  if (auto* s = v.as_object().if_contains("secret")) c.secret = str(*s);
  return c;
}

Channel webhook(const CpProcess& cp, const std::string& key, const std::string& name,
                const std::string& url, const std::vector<std::string>& events = kAllEvents) {
  return make_channel(cp, key, name, "webhook", json::object{{"url", url}}, events);
}

// An event of the team, written as the control plane writes them.
std::string record_event(const CpProcess& cp, const std::string& team_id,
                         const std::string& resource_id,
                         const std::string& type = "capsule.create") {
  events::Event ev;
  ev.type = type;
  ev.outcome = "success";
  ev.team_id = team_id;
  ev.resource_id = resource_id;
  ev.resource_type = "sandbox";
  auto pool = cp.pool();
  std::string id;
  pool->with_transaction([&](pg::Connection& tx) { id = events::record(tx, ev); });
  return id;
}

ReceiverReply reply(unsigned status, std::string body) {
  ReceiverReply r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

std::string h(const ReceivedRequest& r, const std::string& name) {
  auto it = r.headers.find(name);
  return it == r.headers.end() ? "" : it->second;
}

// The delivery's attempts, oldest first: outcome and status code.
std::vector<std::pair<std::string, long>> attempts(const CpProcess& cp,
                                                   const std::string& channel) {
  auto pool = cp.pool();
  auto lease = pool->acquire();
  auto r = lease->exec(
      "SELECT a.outcome, coalesce(a.status_code, 0) FROM delivery_attempts a "
      "JOIN deliveries d ON d.id = a.delivery_id WHERE d.channel_id = $1 "
      "ORDER BY a.attempt",
      channel);
  std::vector<std::pair<std::string, long>> out;
  for (int i = 0; i < r.rows(); ++i) out.emplace_back(std::string(r.text(i, 0)), r.as_int64(i, 1));
  return out;
}

std::string delivery_state(const CpProcess& cp, const std::string& channel) {
  auto pool = cp.pool();
  auto lease = pool->acquire();
  auto r = lease->exec("SELECT state FROM deliveries WHERE channel_id = $1", channel);
  return r.rows() ? std::string(r.text(0, 0)) : "";
}

const std::regex kUuid("^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$");
const std::regex kTimestamp("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$");

// Headers and signature of one webhook request.
void check_signed(const ReceivedRequest& r, const std::string& secret) {
  CHECK(r.method == "POST");
  CHECK(h(r, "content-type") == "application/json");
  CHECK(std::regex_match(h(r, "x-wrenn-delivery"), kUuid));
  const std::string ts = h(r, "x-wrenn-timestamp");
  CHECK(std::regex_match(ts, kTimestamp));
  CHECK(h(r, "x-wrenn-signature") ==
        "sha256=" + crypto::hmac_sha256_hex(secret, ts + "." + r.body));
  CHECK(h(r, "x-wrenn-signature") !=
        "sha256=" + crypto::hmac_sha256_hex(secret + "x", ts + "." + r.body));
}

}  // namespace

TEST_CASE("events: every lifecycle event reaches a signed webhook with the exact payload") {
  enter_private_netns();
  TempDir tmp;
  HttpReceiver rx, other_rx;
  CpProcess cp(options());
  const std::string dir = tmp.path() + "/agent";
  std::filesystem::create_directories(dir + "/images");
  std::filesystem::create_directory_symlink(busybox_template(), dir + "/images/minimal");
  auto agent = cp.start_agent(dir, {"--warm-slots", "0", "--ready-disks", "0"});
  auto team = cp.create_team("acme");
  auto other = cp.create_team("other");
  const Channel ch = webhook(cp, team.api_key, "all", rx.url("/hook"));
  REQUIRE(ch.secret.size() == 64);
  webhook(cp, other.api_key, "all", other_rx.url("/hook"));

  auto r = cp.post("/v1/capsules", R"({"memory_mb":256})", team.api_key);
  INFO(r.body);
  REQUIRE(r.status == 201);
  const std::string id = str(r.json().at("id"));
  REQUIRE(cp.post("/v1/capsules/" + id + "/pause", "", team.api_key).status == 200);
  REQUIRE(cp.post("/v1/capsules/" + id + "/resume", "", team.api_key).status == 200);
  r = cp.post("/v1/snapshots", R"({"sandbox_id":")" + id + R"(","name":"snap"})", team.api_key);
  INFO(r.body);
  REQUIRE(r.status == 201);
  REQUIRE(cp.del("/v1/snapshots/snap", team.api_key).status == 204);
  REQUIRE(cp.del("/v1/capsules/" + id, team.api_key).status == 204);

  REQUIRE(rx.wait_for(6, 20s));
  std::this_thread::sleep_for(500ms);  // nothing else may arrive
  auto got = rx.requests();
  REQUIRE(got.size() == 6);
  std::map<std::string, json::object> by_type;
  std::set<std::string> delivery_ids;
  for (const auto& req : got) {
    INFO(req.body);
    CHECK(req.target == "/hook");
    check_signed(req, ch.secret);
    delivery_ids.insert(h(req, "x-wrenn-delivery"));
    json::object p = json::parse(req.body).as_object();
    by_type[str(p.at("event"))] = p;
  }
  CHECK(delivery_ids.size() == 6);
  for (const auto& type :
       {"capsule.create", "capsule.pause", "capsule.resume", "capsule.destroy"}) {
    INFO(type);
    REQUIRE(by_type.count(type));
    const json::object& p = by_type[type];
    CHECK(p.at("outcome") == "success");
    CHECK(std::regex_match(str(p.at("timestamp")), kTimestamp));
    CHECK(str(p.at("team_id")) == team.team_id);
    CHECK(p.at("actor").at("type") == "api_key");
    CHECK(str(p.at("actor").at("id")).starts_with("key-"));
    CHECK(p.at("resource") == json::parse(R"({"id":")" + id + R"(","type":"sandbox"})"));
    CHECK_FALSE(p.contains("error"));
    CHECK_FALSE(p.contains("metadata"));
  }
  for (const auto& type : {"template.snapshot.create", "template.snapshot.delete"}) {
    INFO(type);
    REQUIRE(by_type.count(type));
    CHECK(by_type[type].at("outcome") == "success");
    CHECK(by_type[type].at("resource") == json::parse(R"({"id":"snap","type":"snapshot"})"));
  }
  // Exactly these keys, in this order (the body is what was signed, byte for byte).
  CHECK(got.front().body.starts_with(R"({"event":")"));
  CHECK(other_rx.requests().empty());

  // The attempts are queryable per channel.
  r = cp.get("/v1/channels/" + ch.id + "/deliveries", team.api_key);
  INFO(r.body);
  REQUIRE(r.status == 200);
  const json::value deliveries = r.json();
  CHECK(deliveries.as_array().size() == 6);
  for (const auto& d : deliveries.as_array()) CHECK(d.at("state") == "delivered");
  CHECK(cp.get("/v1/channels/" + ch.id + "/deliveries", other.api_key).status == 404);
}

TEST_CASE("events: host down and up reach the platform team's channels") {
  enter_private_netns();
  TempDir tmp;
  HttpReceiver rx;
  CpOptions o = options();
  o.heartbeat_timeout = 2s;
  CpProcess cp(o);
  auto agent = cp.start_agent(tmp.path() + "/agent");
  const Channel ch =
      webhook(cp, cp.admin_api_key(), "hosts", rx.url("/h"), {"host.down", "host.up"});
  ::kill(agent.agent->pid(), SIGSTOP);
  REQUIRE(rx.wait_for(1, 15s));
  ::kill(agent.agent->pid(), SIGCONT);
  REQUIRE(rx.wait_for(2, 15s));
  auto got = rx.requests();
  json::object down = json::parse(got[0].body).as_object();
  json::object up = json::parse(got[1].body).as_object();
  CHECK(down.at("event") == "host.down");
  CHECK(up.at("event") == "host.up");
  for (const auto* p : {&down, &up}) {
    CHECK_FALSE(p->contains("outcome"));
    CHECK(p->at("actor") == json::parse(R"({"type":"system"})"));
    CHECK(p->at("resource") == json::parse(R"({"id":")" + agent.host_id + R"(","type":"host"})"));
    CHECK(p->at("team_id") == "team-0000000000000000000000000");
  }
  check_signed(got[0], ch.secret);
}

TEST_CASE("events: a failed delivery is retried once after about 10 s") {
  HttpReceiver rx;
  std::atomic<int> calls{0};
  rx.set_handler(
      [&](const ReceivedRequest&) { return ++calls == 1 ? reply(500, "boom") : reply(200, "ok"); });
  CpProcess cp(options());
  auto team = cp.create_team("acme");
  const Channel ch = webhook(cp, team.api_key, "flaky", rx.url("/hook"));
  record_event(cp, team.team_id, "cl-retry");
  REQUIRE(rx.wait_for(2, 20s));
  std::this_thread::sleep_for(1s);
  auto got = rx.requests();
  REQUIRE(got.size() == 2);
  const double gap = std::chrono::duration<double>(got[1].at - got[0].at).count();
  CHECK(gap > 9.5);
  CHECK(gap < 12.5);
  CHECK(got[0].body == got[1].body);
  CHECK(h(got[0], "x-wrenn-delivery") != h(got[1], "x-wrenn-delivery"));
  check_signed(got[1], ch.secret);
  REQUIRE(wait_until([&] { return delivery_state(cp, ch.id) == "delivered"; }));
  auto a = attempts(cp, ch.id);
  REQUIRE(a.size() == 2);
  CHECK(a[0] == std::pair<std::string, long>{"retry", 500});
  CHECK(a[1] == std::pair<std::string, long>{"delivered", 200});
}

TEST_CASE("events: three failures drop the delivery and a redirect is not followed") {
  HttpReceiver failing, redirecting, redirect_target;
  failing.set_handler([](const ReceivedRequest&) { return reply(503, "down"); });
  const std::string elsewhere = redirect_target.url("/elsewhere");
  redirecting.set_handler([&](const ReceivedRequest&) {
    ReceiverReply r = reply(302, "");
    r.headers.emplace_back("Location", elsewhere);
    return r;
  });
  CpProcess cp(options({"--retry-delays", "0.3,0.6"}));
  auto team = cp.create_team("acme");
  const Channel bad = webhook(cp, team.api_key, "failing", failing.url("/hook"));
  const Channel moved = webhook(cp, team.api_key, "moved", redirecting.url("/hook"));
  record_event(cp, team.team_id, "cl-drop");

  REQUIRE(failing.wait_for(3, 15s));
  REQUIRE(redirecting.wait_for(3, 15s));
  REQUIRE(wait_until([&] { return delivery_state(cp, bad.id) == "dropped"; }));
  REQUIRE(wait_until([&] { return delivery_state(cp, moved.id) == "dropped"; }));
  std::this_thread::sleep_for(1500ms);
  CHECK(failing.requests().size() == 3);
  CHECK(redirecting.requests().size() == 3);
  CHECK(redirect_target.requests().empty());
  auto a = attempts(cp, bad.id);
  REQUIRE(a.size() == 3);
  CHECK(a[0].first == "retry");
  CHECK(a[1].first == "retry");
  CHECK(a[2] == std::pair<std::string, long>{"dropped", 503});

  auto pool = cp.pool();
  auto lease = pool->acquire();
  auto r = lease->exec(
      "SELECT a.error FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id "
      "WHERE d.channel_id = $1 ORDER BY a.attempt DESC LIMIT 1",
      moved.id);
  REQUIRE(r.rows() == 1);
  CHECK(std::string(r.text(0, 0)).find("redirect") != std::string::npos);
  // The drop is logged with the channel, never with the secret.
  REQUIRE(wait_until([&] { return cp.log().find("event delivery dropped") != std::string::npos; }));
  CHECK(cp.log().find(bad.id) != std::string::npos);
  CHECK(cp.log().find(bad.secret) == std::string::npos);
}

TEST_CASE("events: an event committed while no replica dispatches is delivered after a restart") {
  HttpReceiver rx;
  auto one = std::make_unique<CpProcess>(options({"--no-dispatch"}));
  auto team = one->create_team("acme");
  const Channel ch = webhook(*one, team.api_key, "durable", rx.url("/hook"));
  record_event(*one, team.team_id, "cl-durable");
  std::this_thread::sleep_for(1s);
  CHECK(rx.requests().empty());
  ::kill(one->pid(), SIGKILL);
  one->stop();
  CHECK(delivery_state(*one, ch.id) == "pending");

  CpProcess two(options({"--database-url", one->conninfo()}));
  REQUIRE(rx.wait_for(1, 10s));
  auto got = rx.requests();
  json::object p = json::parse(got[0].body).as_object();
  CHECK(p.at("resource").at("id") == "cl-durable");
  check_signed(got[0], ch.secret);
  // (`two` was started on `one`'s database.)
  REQUIRE(wait_until([&] { return delivery_state(*one, ch.id) == "delivered"; }));
}

TEST_CASE("events: two replicas on one database deliver each event exactly once") {
  HttpReceiver rx;
  CpProcess one(options());
  CpProcess two(options({"--database-url", one.conninfo()}));
  auto team = one.create_team("acme");
  webhook(one, team.api_key, "a", rx.url("/a"));
  webhook(two, team.api_key, "b", rx.url("/b"));
  constexpr int kEvents = 200;
  for (int i = 0; i < kEvents; ++i) record_event(one, team.team_id, "cl-" + std::to_string(i));
  REQUIRE(rx.wait_for(2 * kEvents, 30s));
  std::this_thread::sleep_for(1s);
  auto got = rx.requests();
  CHECK(got.size() == 2 * kEvents);
  std::map<std::string, int> seen;
  for (const auto& r : got)
    ++seen[r.target + " " + str(json::parse(r.body).at("resource").at("id"))];
  CHECK(seen.size() == 2 * kEvents);
  for (const auto& [k, n] : seen) {
    INFO(k);
    CHECK(n == 1);
  }
  // One attempt per delivery: no replica sent what another had claimed.
  auto pool = one.pool();
  auto lease = pool->acquire();
  auto r = lease->exec("SELECT count(*) FROM delivery_attempts");
  CHECK(r.as_int64(0, 0) == 2 * kEvents);
}

TEST_CASE("events: each chat provider gets its own request shape") {
  HttpReceiver rx;
  CpProcess cp(options({"--telegram-api-url", rx.url("")}));
  auto team = cp.create_team("acme");
  const std::vector<std::string> ev = {"capsule.create"};
  make_channel(cp, team.api_key, "slack", "slack",
               json::object{{"webhook_url", rx.url("/services/T1/B2/X3")}}, ev);
  make_channel(cp, team.api_key, "discord", "discord",
               json::object{{"webhook_url", rx.url("/api/webhooks/123/tok")}}, ev);
  make_channel(cp, team.api_key, "teams", "teams",
               json::object{{"webhook_url", rx.url("/webhookb2/abc")}}, ev);
  make_channel(cp, team.api_key, "gchat", "google-chat",
               json::object{{"webhook_url", rx.url("/v1/spaces/S/messages?key=k&token=t")}}, ev);
  make_channel(cp, team.api_key, "telegram", "telegram",
               json::object{{"bot_token", "123:ABC"}, {"chat_id", "-1001234"}}, ev);
  make_channel(cp, team.api_key, "matrix", "matrix",
               json::object{{"homeserver_url", rx.url("")},
                            {"access_token", "syt_secret"},
                            {"room_id", "!room:example.org"}},
               ev);
  record_event(cp, team.team_id, "cl-chat");
  REQUIRE(rx.wait_for(6, 15s));
  std::map<std::string, ReceivedRequest> by_path;
  for (const auto& r : rx.requests()) by_path[r.target.substr(0, r.target.find('?'))] = r;

  auto body = [&](const std::string& path) {
    INFO(path);
    REQUIRE(by_path.count(path));
    CHECK(h(by_path[path], "content-type") == "application/json");
    return json::parse(by_path[path].body).as_object();
  };
  const std::string text = str(body("/services/T1/B2/X3").at("text"));
  CHECK(text.starts_with("Capsule cl-chat created"));
  CHECK(text.find("Event: capsule.create") != std::string::npos);
  CHECK(text.find("Team: " + team.team_id) != std::string::npos);
  CHECK(str(body("/api/webhooks/123/tok").at("content")) == text);
  json::object card = body("/webhookb2/abc");
  CHECK(card.at("@type") == "MessageCard");
  CHECK(str(card.at("summary")) == "Capsule cl-chat created");
  CHECK(str(body("/v1/spaces/S/messages").at("text")) == text);
  CHECK(by_path["/v1/spaces/S/messages"].target.find("key=k&token=t") != std::string::npos);
  json::object tg = body("/bot123:ABC/sendMessage");
  CHECK(tg.at("chat_id") == "-1001234");
  CHECK(str(tg.at("text")) == text);
  // Matrix: PUT with the delivery id as transaction id, bearer token, m.text.
  std::string matrix_path;
  for (const auto& [p, r] : by_path)
    if (p.starts_with("/_matrix/")) matrix_path = p;
  INFO(matrix_path);
  REQUIRE(matrix_path.starts_with("/_matrix/client/v3/rooms/"));
  const bool room_escaped =
      matrix_path.find("/rooms/%21room%3Aexample.org/send/m.room.message/") != std::string::npos ||
      matrix_path.find("/rooms/!room:example.org/send/m.room.message/") != std::string::npos;
  CHECK(room_escaped);
  const ReceivedRequest& m = by_path[matrix_path];
  CHECK(m.method == "PUT");
  CHECK(h(m, "authorization") == "Bearer syt_secret");
  CHECK(matrix_path.ends_with(h(m, "x-wrenn-delivery")));
  json::object mb = json::parse(m.body).as_object();
  CHECK(mb.at("msgtype") == "m.text");
  CHECK(str(mb.at("body")) == text);
}
