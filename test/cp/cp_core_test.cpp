// The control plane core end to end: a real wrenn-cp binary on a throwaway PostgreSQL
// (test/support/cp_fixture.h), real wrenn-agents in the test's own network namespace where
// hosts are involved, and the library pieces (scheduler, reconcile_host) called directly
// against a real database.
#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <boost/json.hpp>
#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <regex>
#include <set>
#include <thread>

#include "agent_fixture.h"
#include "api/api_error.h"
#include "auth/host_ca.h"
#include "auth/tokens.h"
#include "cp_fixture.h"
#include "crypto/hash.h"
#include "crypto/ids.h"
#include "crypto/jwt.h"
#include "hosts/host_directory.h"
#include "hosts/host_monitor.h"
#include "pg/migrate.h"
#include "scheduler/scheduler.h"
#include "server.h"
#include "store/audit.h"

using namespace wrenn;
using namespace wrenn::test;
using namespace std::chrono_literals;
namespace json = boost::json;
namespace pb = wrenn::agent::v1;
using bhttp_verb = boost::beast::http::verb;

namespace {

std::string str(const json::value& v, std::string_view key) {
  return std::string(v.as_object().at(key).as_string());
}

std::size_t count_of(const std::string& hay, const std::string& needle) {
  std::size_t n = 0;
  for (auto p = hay.find(needle); p != std::string::npos; p = hay.find(needle, p + 1)) ++n;
  return n;
}

std::string file_mode(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return "missing";
  char buf[8];
  std::snprintf(buf, sizeof buf, "%o", st.st_mode & 07777);
  return buf;
}

HttpReply with_headers(const CpProcess& cp, bhttp_verb m, const std::string& target,
                       std::map<std::string, std::string> headers, const std::string& body = "") {
  return cp.request(m, target, body, headers);
}

// A freshly migrated database for the in-process tests.
struct Db {
  Db() : pool(pg.make_pool(4)) { pg::migrate(*pool); }
  PgServer pg;
  std::unique_ptr<pg::Pool> pool;
};

std::string insert_host(pg::Pool& pool, const std::string& status, int cores, int memory_mb,
                        int disk_gb, const std::string& address = "127.0.0.1:1") {
  const std::string id = ids::new_id(ids::Kind::kHost);
  auto c = pool.acquire();
  c->exec(
      "INSERT INTO hosts (id, status, cpu_cores, memory_mb, disk_gb, address, last_heartbeat_at) "
      "VALUES ($1, $2, $3, $4, $5, $6, now())",
      id, status, cores, memory_mb, disk_gb, address);
  return id;
}

std::string insert_sandbox(pg::Pool& pool, const std::string& host_id, const std::string& status,
                           int vcpus, int memory_mb, const std::string& id = {},
                           const std::string& team = "team-0000000000000000000000000") {
  const std::string sid = id.empty() ? ids::new_id(ids::Kind::kCapsule) : id;
  auto c = pool.acquire();
  c->exec(
      "INSERT INTO sandboxes (id, team_id, host_id, status, vcpus, memory_mb, disk_size_mb) "
      "VALUES ($1, $2, $3, $4, $5, $6, 1024)",
      sid, team, host_id, status, vcpus, memory_mb);
  return sid;
}

std::string sandbox_status(pg::Pool& pool, const std::string& id) {
  auto c = pool.acquire();
  return std::string(c->exec("SELECT status FROM sandboxes WHERE id = $1", id).text(0, 0));
}

// An extension recording events and enforcing "at most max_running per team".
struct TestExtension : cp::Extension {
  std::string name() const override { return "test"; }
  void check_limits(pg::Connection& tx, const cp::PlacementRequest& req) override {
    auto r = tx.exec(
        "SELECT count(*) FROM sandboxes WHERE team_id = $1 "
        "AND status IN ('pending', 'starting', 'running')",
        req.team_id);
    if (r.as_int64(0, 0) >= max_running)
      throw cp::ApiError(cp::ApiCode::kConcurrentSandboxLimit,
                         "at most " + std::to_string(max_running) + " running capsules");
  }
  void on_sandbox_event(const cp::SandboxEvent& ev) override {
    std::lock_guard lock(mu);
    events.push_back(ev.type + " " + ev.sandbox_id);
  }
  std::int64_t max_running = 1000;
  std::mutex mu;
  std::vector<std::string> events;
};

}  // namespace

TEST_CASE("bootstrap writes the admin key once with mode 0600 and logs only its path") {
  CpProcess cp;
  const std::string path = cp.dir() + "/admin-api-key";
  const std::string key = cp.admin_api_key();
  CHECK(ids::looks_like_api_key(key));
  CHECK(file_mode(path) == "600");
  CHECK(cp.get("/v1/hosts", key).status == 200);
  std::string log = cp.log();
  CHECK(log.find(path) != std::string::npos);
  CHECK(log.find(key) == std::string::npos);
  CHECK(log.find(key.substr(4)) == std::string::npos);
  {
    auto pool = cp.pool();
    auto c = pool->acquire();
    auto r = c->exec("SELECT key_hash, key_prefix FROM team_api_keys WHERE team_id = $1",
                     std::string("team-0000000000000000000000000"));
    REQUIRE(r.rows() == 1);
    CHECK(r.text(0, 0) == crypto::sha256_hex(key));
    CHECK(r.text(0, 1) == key.substr(0, 10));
  }

  // SIGTERM: a clean exit within a few seconds.
  const auto t0 = std::chrono::steady_clock::now();
  const int status = cp.stop();
  CHECK(std::chrono::steady_clock::now() - t0 < 5s);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);

  // A restart neither rewrites the file nor creates a second key.
  cp.start();
  CHECK(read_file(path) == key + "\n");
  CHECK(count_of(cp.log(), "created the platform admin API key") == 1);
  CHECK(cp.get("/v1/hosts", key).status == 200);

  // Lost row, file still there (e.g. a start that wrote the file and died before commit):
  // the key in the file is stored again instead of a new one.
  {
    auto pool = cp.pool();
    pool->acquire()->exec("DELETE FROM team_api_keys");
  }
  CHECK(cp.get("/v1/hosts", key).status == 401);
  cp.stop();
  cp.start();
  CHECK(read_file(path) == key + "\n");
  CHECK(cp.get("/v1/hosts", key).status == 200);
  CHECK(cp.log().find(key) == std::string::npos);
}

TEST_CASE(
    "credentials: missing or bad or forged ones are 401 envelopes and admin routes need admins") {
  CpProcess cp;
  auto none = cp.get("/v1/hosts");
  CHECK(none.status == 401);
  CHECK(none.error_code() == "unauthorized");
  CHECK(none.error_message() == "X-API-Key or Authorization: Bearer <token> required");
  CHECK(none.headers["content-type"] == "application/json");

  auto bad = cp.get("/v1/hosts", "wrn_00000000000000000000000000000000");
  CHECK(bad.status == 401);
  CHECK(bad.error_message() == "invalid API key");
  CHECK(cp.get("/v1/hosts", "not-a-key").error_message() == "invalid API key");

  auto team = cp.create_team("acme");
  auto [admin_id, admin_jwt] = cp.create_user("team-0000000000000000000000000", "member", true);
  auto [user_id, user_jwt] = cp.create_user(team.team_id, "owner");

  // A bad key never falls back to a valid JWT sent alongside.
  auto both = with_headers(cp, bhttp_verb::get, "/v1/hosts",
                           {{"X-API-Key", "wrn_00000000000000000000000000000000"},
                            {"Authorization", "Bearer " + admin_jwt}});
  CHECK(both.status == 401);
  CHECK(both.error_message() == "invalid API key");

  // A user token works; a non-admin sees only its team's BYOC hosts (none).
  auto mine =
      with_headers(cp, bhttp_verb::get, "/v1/hosts", {{"Authorization", "Bearer " + user_jwt}});
  CHECK(mine.status == 200);
  CHECK(mine.body == "[]\n");

  // Admin routes: another team's key and a non-admin user are forbidden, a platform admin
  // user and the platform key are allowed.
  auto forbidden = cp.post("/v1/hosts", "{}", team.api_key);
  CHECK(forbidden.status == 403);
  CHECK(forbidden.error_code() == "forbidden");
  CHECK(with_headers(cp, bhttp_verb::post, "/v1/hosts", {{"Authorization", "Bearer " + user_jwt}},
                     "{}")
            .status == 403);
  auto by_admin = with_headers(cp, bhttp_verb::post, "/v1/hosts",
                               {{"Authorization", "Bearer " + admin_jwt}}, "{}");
  CHECK(by_admin.status == 201);
  CHECK(str(by_admin.json().at("host"), "created_by") == admin_id);
  CHECK(cp.post("/v1/hosts", "{}", cp.admin_api_key()).status == 201);
  // Malformed bodies.
  CHECK(cp.post("/v1/hosts", "", cp.admin_api_key()).error_message() == "invalid JSON body");
  CHECK(cp.post("/v1/hosts", "[1]", cp.admin_api_key()).status == 400);
  CHECK(cp.post("/v1/hosts", R"({"type":"gpu"})", cp.admin_api_key()).status == 400);

  // Forged (other secret), expired, host-typed and garbage tokens.
  cp::auth::UserClaims claims;
  claims.user_id = user_id;
  claims.team_id = team.team_id;
  claims.role = "owner";
  const std::string forged =
      cp::auth::sign_user_token("another-secret-that-is-long-enough-for-hs256", claims);
  const std::string expired =
      cp::auth::sign_user_token(kTestJwtSecret, claims, std::chrono::system_clock::now() - 7h, 6h);
  const std::string host_typed =
      cp::auth::sign_host_token(kTestJwtSecret, ids::new_id(ids::Kind::kHost));
  for (const std::string& t : {forged, expired, host_typed, std::string("abc.def.ghi")}) {
    auto r = with_headers(cp, bhttp_verb::get, "/v1/hosts", {{"Authorization", "Bearer " + t}});
    CHECK(r.status == 401);
    CHECK(r.error_code() == "unauthorized");
  }

  // A deactivated user, and one no longer in the team.
  {
    auto pool = cp.pool();
    pool->acquire()->exec("UPDATE users SET status = 'disabled' WHERE id = $1", user_id);
  }
  auto disabled =
      with_headers(cp, bhttp_verb::get, "/v1/hosts", {{"Authorization", "Bearer " + user_jwt}});
  CHECK(disabled.status == 403);
  CHECK(disabled.error_code() == "account_deactivated");
  auto [other_id, other_jwt] = cp.create_user(team.team_id, "member");
  {
    auto pool = cp.pool();
    pool->acquire()->exec("DELETE FROM users_teams WHERE user_id = $1", other_id);
  }
  CHECK(with_headers(cp, bhttp_verb::get, "/v1/hosts", {{"Authorization", "Bearer " + other_jwt}})
            .status == 403);

  // last_used is recorded for keys.
  {
    auto pool = cp.pool();
    auto r =
        pool->acquire()->exec("SELECT last_used IS NOT NULL FROM team_api_keys WHERE key_hash = $1",
                              crypto::sha256_hex(team.api_key));
    CHECK(r.as_bool(0, 0));
  }
  // No token or key ever reaches the log.
  const std::string log = cp.log();
  for (const std::string& secret : {team.api_key, user_jwt, admin_jwt, forged, cp.admin_api_key()})
    CHECK(log.find(secret) == std::string::npos);
}

TEST_CASE("routing: 404 and 405 envelopes and the api prefix and trailing slashes") {
  CpProcess cp;
  auto unknown = cp.get("/v1/nope", cp.admin_api_key());
  CHECK(unknown.status == 404);
  CHECK(unknown.error_code() == "not_found");
  CHECK(unknown.headers["content-type"] == "application/json");
  CHECK(cp.get("/nope").status == 404);
  CHECK(cp.get("/api/v1/hosts/x/y/z").status == 404);

  auto wrong_method = cp.request(bhttp_verb::put, "/health");
  CHECK(wrong_method.status == 405);
  CHECK(wrong_method.error_code() == "method_not_allowed");
  CHECK(wrong_method.headers["allow"] == "GET");

  auto health = cp.get("/health");
  CHECK(health.status == 200);
  CHECK(str(health.json(), "status") == "ok");
  CHECK(str(health.json(), "version") == std::string(cp::cp_version()));
  CHECK(health.headers["x-request-id"].size() == 16);

  CHECK(cp.get("/api/v1/hosts", cp.admin_api_key()).status == 200);
  CHECK(cp.get("/api/v1/hosts/", cp.admin_api_key()).status == 200);
  CHECK(cp.get("/v1/hosts/", cp.admin_api_key()).status == 200);
  CHECK(cp.get("/api/health").status == 200);
  // A literal segment wins over a parameter: /v1/hosts/register is not host "register".
  auto reg = cp.post("/api/v1/hosts/register", "{}");
  CHECK(reg.status == 400);
  CHECK(reg.error_message() == "token is required");
  CHECK(cp.get("/v1/hosts/register", cp.admin_api_key()).status == 400);  // "invalid host ID"
  CHECK(cp.get("/v1/hosts/host-0000000000000000000000000", cp.admin_api_key()).status == 404);

  auto spec = cp.get("/openapi.yaml");
  CHECK(spec.status == 200);
  CHECK(spec.headers["content-type"] == "application/yaml");
  CHECK(spec.body.find("openapi: 3.1.0") != std::string::npos);
  CHECK(spec.body.find("/v1/hosts/register:") != std::string::npos);
  CHECK(spec.body.find("/v1/audit-logs:") != std::string::npos);
  CHECK(spec.body.find("/v1/channels:") != std::string::npos);
}

TEST_CASE(
    "metrics: valid Prometheus text with requests and sandboxes by state and hosts by status") {
  CpProcess cp;
  {
    auto pool = cp.pool();
    const std::string h = insert_host(*pool, "online", 4, 8192, 100);
    insert_host(*pool, "unreachable", 4, 8192, 100);
    insert_sandbox(*pool, h, "running", 1, 512);
    insert_sandbox(*pool, h, "running", 1, 512);
    insert_sandbox(*pool, h, "paused", 1, 512);
  }
  for (int i = 0; i < 3; ++i) cp.get("/v1/hosts", cp.admin_api_key());
  cp.get("/v1/hosts");  // 401
  auto r = cp.get("/metrics");
  REQUIRE(r.status == 200);
  CHECK(r.headers["content-type"].rfind("text/plain; version=0.0.4", 0) == 0);

  // Every line is a comment (# HELP / # TYPE) or a sample: name{label="v",...} value.
  const std::regex sample(
      R"(^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\.)*",?)*\})? ([-+]?([0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?|Inf|NaN))$)");
  const std::regex help(R"(^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .+$)");
  std::map<std::string, std::string> samples;  // "name{labels}" -> value
  std::set<std::string> typed;
  std::size_t lines = 0;
  std::istringstream in(r.body);
  std::string line;
  while (std::getline(in, line)) {
    ++lines;
    if (line.rfind("#", 0) == 0) {
      CHECK(std::regex_match(line, help));
      if (line.rfind("# TYPE ", 0) == 0) {
        std::string name = line.substr(7, line.find(' ', 7) - 7);
        CHECK(typed.insert(name).second);  // one TYPE per family
      }
      continue;
    }
    INFO(line);
    CHECK(std::regex_match(line, sample));
    auto sp = line.rfind(' ');
    samples[line.substr(0, sp)] = line.substr(sp + 1);
  }
  CHECK(lines > 20);
  CHECK(typed.count("wrenn_cp_http_requests_total"));
  CHECK(typed.count("wrenn_cp_http_request_duration_seconds"));
  CHECK(
      samples["wrenn_cp_http_requests_total{route=\"/v1/hosts\",method=\"GET\",status=\"200\"}"] ==
      "3");
  CHECK(
      samples["wrenn_cp_http_requests_total{route=\"/v1/hosts\",method=\"GET\",status=\"401\"}"] ==
      "1");
  CHECK(
      samples["wrenn_cp_http_request_duration_seconds_count{route=\"/v1/hosts\",method=\"GET\"}"] ==
      "4");
  CHECK(samples["wrenn_cp_http_request_duration_seconds_bucket{route=\"/v1/"
                "hosts\",method=\"GET\",le=\"+Inf\"}"] == "4");
  CHECK(samples["wrenn_cp_sandboxes{state=\"running\"}"] == "2");
  CHECK(samples["wrenn_cp_sandboxes{state=\"paused\"}"] == "1");
  CHECK(samples["wrenn_cp_sandboxes{state=\"missing\"}"] == "0");
  CHECK(samples["wrenn_cp_hosts{status=\"online\"}"] == "1");
  CHECK(samples["wrenn_cp_hosts{status=\"unreachable\"}"] == "1");
}

TEST_CASE("audit log: team-scoped and newest first with an exact id cursor") {
  CpProcess cp;
  auto team = cp.create_team("audited");
  auto other = cp.create_team("other");
  auto [owner_id, owner_jwt] = cp.create_user(team.team_id, "owner");
  {
    auto pool = cp.pool();
    cp::Caller caller;
    caller.kind = cp::Caller::Kind::kApiKey;
    caller.team_id = team.team_id;
    caller.actor_id = ids::new_id(ids::Kind::kApiKey);
    caller.actor_name = "ci";
    // Seven entries in one transaction: identical created_at, so only the id orders them.
    pool->with_transaction([&](pg::Connection& c) {
      for (int i = 0; i < 7; ++i) {
        json::object meta;
        meta["n"] = i;
        cp::audit::record(c, caller, "create", "sandbox", "cl-" + std::string(25, 'a' + i),
                          "success", meta);
      }
      cp::audit::Entry admin_entry;
      admin_entry.action = "add";
      admin_entry.resource_type = "member";
      admin_entry.scope = "admin";
      cp::audit::record(c, caller, admin_entry);
      cp::Caller stranger = caller;
      stranger.team_id = other.team_id;
      cp::audit::record(c, stranger, "create", "sandbox", "cl-zzzzzzzzzzzzzzzzzzzzzzzzz");
    });
  }
  std::vector<std::string> seen;
  std::string cursor;
  int pages = 0;
  for (;;) {
    auto r = cp.get("/v1/audit-logs?limit=3" + (cursor.empty() ? "" : "&before=" + cursor),
                    team.api_key);
    REQUIRE(r.status == 200);
    auto o = r.json().as_object();
    ++pages;
    for (const auto& it : o.at("items").as_array()) {
      const auto& e = it.as_object();
      CHECK(e.at("scope").as_string() == "team");
      CHECK(e.at("actor_type").as_string() == "api_key");
      CHECK(e.at("actor_name").as_string() == "ci");
      CHECK(e.at("resource_type").as_string() == "sandbox");
      CHECK(e.at("resource_id").as_string() != "cl-zzzzzzzzzzzzzzzzzzzzzzzzz");
      CHECK(e.contains("created_at"));
      seen.emplace_back(e.at("id").as_string());
    }
    if (!o.contains("next_before")) {
      CHECK(o.at("items").as_array().size() < 3);
      break;
    }
    CHECK(str(r.json(), "next_before") == seen.back());
    CHECK(str(r.json(), "next_before_id") == seen.back());
    cursor = seen.back();
    REQUIRE(pages < 10);
  }
  CHECK(pages == 3);
  CHECK(seen.size() == 7);
  CHECK(std::set<std::string>(seen.begin(), seen.end()).size() == 7);  // no duplicates
  CHECK(std::is_sorted(seen.rbegin(), seen.rend()));                   // created_at ties: id desc

  // Owners also see admin-scope entries; another team sees none of these.
  auto owner = with_headers(cp, bhttp_verb::get, "/v1/audit-logs?limit=200",
                            {{"Authorization", "Bearer " + owner_jwt}});
  CHECK(owner.json().at("items").as_array().size() == 8);
  auto theirs = cp.get("/v1/audit-logs", other.api_key).json().at("items").as_array();
  REQUIRE(theirs.size() == 1);
  CHECK(theirs[0].at("resource_id").as_string() == "cl-zzzzzzzzzzzzzzzzzzzzzzzzz");
  // Filters, bounds and bad cursors.
  CHECK(cp.get("/v1/audit-logs?resource_type=member", team.api_key)
            .json()
            .at("items")
            .as_array()
            .empty());
  CHECK(cp.get("/v1/audit-logs?limit=5000", team.api_key).status == 200);
  CHECK(cp.get("/v1/audit-logs?limit=abc", team.api_key).status == 400);
  CHECK(cp.get("/v1/audit-logs?before=bogus", team.api_key).status == 400);
  CHECK(cp.get("/v1/audit-logs?before=" + ids::new_id(ids::Kind::kAuditLog), team.api_key).status ==
        400);
  // A cursor of another team's entry is not accepted either.
  auto foreign =
      cp.get("/v1/audit-logs?before=" + std::string(theirs[0].at("id").as_string()), team.api_key);
  CHECK(foreign.status == 400);
  // Host creation is audited (admin scope, platform team) in the same transaction.
  auto created = cp.post("/v1/hosts", "{}", cp.admin_api_key());
  REQUIRE(created.status == 201);
  auto platform = cp.get("/v1/audit-logs?resource_type=host", cp.admin_api_key()).json();
  REQUIRE(platform.at("items").as_array().size() == 1);
  CHECK(str(platform.at("items").as_array()[0], "resource_id") ==
        str(created.json().at("host"), "id"));
  CHECK(str(platform.at("items").as_array()[0], "scope") == "admin");
}

TEST_CASE("migrate twice is a no-op and serve refuses a schema that is behind or ahead") {
  CpOptions o;
  o.migrate = false;
  o.wait_ready = false;
  CpProcess cp(o);  // serve on an empty database: refused
  REQUIRE(wait_until([&] { return !cp.running(); }, 30s));
  const int latest = pg::latest_embedded_version();
  CHECK(cp.log().find("database schema version 0 is older than this wrenn-cp (needs " +
                      std::to_string(latest) + "); run `wrenn-cp migrate`") != std::string::npos);

  auto [rc1, out1] = cp.run_command({"migrate"});
  CHECK(rc1 == 0);
  CHECK(out1.find("\"applied\":\"" + std::to_string(latest) + "\"") != std::string::npos);
  auto [rc2, out2] = cp.run_command({"migrate"});
  CHECK(rc2 == 0);
  CHECK(out2.find("\"applied\":\"0\"") != std::string::npos);
  {
    auto pool = cp.pool();
    CHECK(pg::schema_version(*pool) == latest);
    CHECK(pool->acquire()->exec("SELECT count(*) FROM schema_migrations").as_int64(0, 0) == latest);
    // A newer wrenn-cp migrated this database further.
    pool->acquire()->exec("INSERT INTO schema_migrations (version, name) VALUES (9999, 'future')");
  }
  auto [rc3, out3] = cp.run_command({"serve", "--listen", "127.0.0.1:0"});
  CHECK(rc3 == 1);
  CHECK(out3.find("database schema version 9999 is newer than this wrenn-cp (knows up to " +
                  std::to_string(latest) + ")") != std::string::npos);
  auto [rc4, out4] = cp.run_command({"migrate"});
  CHECK(rc4 == 1);
  CHECK(out4.find("9999") != std::string::npos);
}

TEST_CASE("a JWT_SECRET shorter than 32 characters stops the start with a clear message") {
  CpOptions o;
  o.jwt_secret = "too-short";
  o.wait_ready = false;
  CpProcess cp(o);
  REQUIRE(wait_until([&] { return !cp.running(); }, 30s));
  CHECK(cp.log().find("JWT_SECRET must be at least 32 characters long") != std::string::npos);
  CHECK(cp.log().find("too-short") == std::string::npos);
  auto [rc, out] = cp.run_command({"--help"});
  CHECK(rc == 0);
  CHECK(out.find("wrenn-cp migrate") != std::string::npos);
  CHECK(out.find("DATABASE_URL") != std::string::npos);
  CHECK(out.find("WRENN_CP_LISTEN_ADDR") != std::string::npos);
}

TEST_CASE("scheduler: least-loaded online host with overcommit and limits or no_hosts_available") {
  Db db;
  TestExtension ext_obj;
  auto ext = std::shared_ptr<TestExtension>(&ext_obj, [](TestExtension*) {});
  cp::Hooks hooks;
  hooks.add(ext);
  cp::SchedulerOptions so;
  so.vcpu_overcommit = 4;  // small numbers below; the default is 16
  cp::LeastLoadedScheduler sched(so, &hooks);
  auto place = [&](std::uint32_t vcpus, std::uint64_t mem,
                   const std::string& team = "team-0000000000000000000000000") {
    cp::PlacementRequest req;
    req.team_id = team;
    req.vcpus = vcpus;
    req.memory_mb = mem;
    req.disk_mb = 1024;
    return db.pool->with_transaction([&](pg::Connection& c) { return sched.place(c, req); });
  };
  auto api_error = [&](const std::function<void()>& f) -> std::pair<std::string, std::string> {
    try {
      f();
    } catch (const cp::ApiError& e) {
      return {std::string(cp::api_code_name(e.code())), e.what()};
    }
    return {"", ""};
  };

  CHECK(api_error([&] { place(1, 512); }) ==
        std::make_pair(std::string("no_hosts_available"), std::string("no online hosts")));
  // 2 cores x 4 = 8 vCPUs, 4096 MiB each.
  const std::string a = insert_host(*db.pool, "online", 2, 4096, 50);
  const std::string b = insert_host(*db.pool, "online", 2, 4096, 50);
  insert_host(*db.pool, "unreachable", 64, 65536, 500);  // never chosen
  insert_host(*db.pool, "online", 64, 65536, 500, "");   // no address: never chosen
  insert_sandbox(*db.pool, a, "running", 4, 1024);
  insert_sandbox(*db.pool, b, "running", 1, 512);
  CHECK(place(1, 512) == b);
  // Load b: memory is now its scarcest resource; a is freer.
  insert_sandbox(*db.pool, b, "paused", 1, 3000);  // paused: memory counts, vCPUs do not
  CHECK(place(1, 256) == a);
  // vCPU overcommit: 8 per host; a has 4 used -> 4 fit, 5 do not; b has 1 used -> 7 fit.
  CHECK(place(7, 64) == b);
  CHECK(api_error([&] { place(8, 64); }) ==
        std::make_pair(std::string("no_hosts_available"),
                       std::string("no host has room for 8 vCPUs, 64 MiB")));
  CHECK(api_error([&] { place(1, 4000); }).second == "no host has room for 1 vCPUs, 4000 MiB");
  // Stopped and error sandboxes hold nothing.
  insert_sandbox(*db.pool, a, "stopped", 4, 3000);
  insert_sandbox(*db.pool, a, "error", 4, 3000);
  CHECK(place(4, 3000) == a);

  // The limits provider answers before any placement (402).
  ext_obj.max_running = 2;
  auto limited = api_error([&] { place(1, 64); });
  CHECK(limited.first == "concurrent_sandbox_limit");
  CHECK(cp::api_code_status(cp::ApiCode::kConcurrentSandboxLimit) == 402);
  ext_obj.max_running = 1000;

  // A BYOC team only gets its own hosts.
  {
    auto c = db.pool->acquire();
    c->exec("INSERT INTO teams (id, name, slug, is_byoc) VALUES ($1, 'byoc', 'byoc', true)",
            std::string("team-000000000000000000000byoc"));
  }
  CHECK(api_error([&] { place(1, 64, "team-000000000000000000000byoc"); }).second ==
        "no online hosts");
}

TEST_CASE(
    "reconcile_host marks vanished sandboxes missing and restores returning ones and destroys "
    "orphans") {
  enter_private_netns();
  Db db;
  TempDir dir;
  AgentProcess agent(dir.path(), {"--warm-slots", "0", "--ready-disks", "0"});
  auto client =
      std::make_shared<cp::HostClient>(cp::HostEndpoint{"127.0.0.1", agent.port(), agent.token()});
  auto c = agent.client();
  const std::string host =
      insert_host(*db.pool, "online", 2, 4096, 50, "127.0.0.1:" + std::to_string(agent.port()));
  const std::string owned = ids::new_id(ids::Kind::kCapsule);
  const std::string back = ids::new_id(ids::Kind::kCapsule);
  const std::string gone = ids::new_id(ids::Kind::kCapsule);
  const std::string orphan = ids::new_id(ids::Kind::kCapsule);
  const std::string stopped = ids::new_id(ids::Kind::kCapsule);
  const std::string half_made = ids::new_id(ids::Kind::kCapsule);   // pending, agent has it
  const std::string never_made = ids::new_id(ids::Kind::kCapsule);  // pending, agent lacks it
  for (const auto& id : {owned, back, orphan, stopped, half_made})
    create_sandbox(*c, id, "busybox", 128, 64);
  insert_sandbox(*db.pool, host, "running", 1, 128, owned);
  insert_sandbox(*db.pool, host, "missing", 1, 128, back);
  insert_sandbox(*db.pool, host, "running", 1, 128, gone);
  insert_sandbox(*db.pool, host, "stopped", 1, 128, stopped);  // recorded as stopped: an orphan too
  insert_sandbox(*db.pool, host, "pending", 1, 128, half_made);
  insert_sandbox(*db.pool, host, "pending", 1, 128, never_made);

  TestExtension ext_obj;
  cp::Hooks hooks;
  hooks.add(std::shared_ptr<TestExtension>(&ext_obj, [](TestExtension*) {}));
  // A long grace first: orphans are younger than it, so nothing is destroyed.
  auto r1 = cp::reconcile_host(*db.pool, *client, host, &hooks, 3600s);
  CHECK(r1.marked_missing == std::vector<std::string>{gone});
  CHECK(r1.restored == std::vector<std::string>{back});
  CHECK(r1.destroyed.empty());
  CHECK(r1.promoted.empty());  // pending rows younger than the grace: a create in flight
  CHECK(r1.failed.empty());
  CHECK(sandbox_status(*db.pool, half_made) == "pending");
  CHECK(sandbox_status(*db.pool, gone) == "missing");
  CHECK(sandbox_status(*db.pool, back) == "running");
  CHECK(sandbox_status(*db.pool, owned) == "running");
  CHECK(list_sandboxes(*c).size() == 5);
  {
    std::lock_guard lock(ext_obj.mu);
    std::set<std::string> events(ext_obj.events.begin(), ext_obj.events.end());
    CHECK(events == std::set<std::string>{"capsule.missing " + gone, "capsule.running " + back});
  }

  // Grace 0: the orphans go, the recorded ones stay, and creates that died half-way
  // settle: the one the agent runs is promoted, the other is an error.
  std::this_thread::sleep_for(1100ms);  // created_at has second precision
  auto r2 = cp::reconcile_host(*db.pool, *client, host, &hooks, 0s);
  CHECK(r2.marked_missing.empty());
  CHECK(r2.restored.empty());
  CHECK(r2.promoted == std::vector<std::string>{half_made});
  CHECK(r2.failed == std::vector<std::string>{never_made});
  CHECK(sandbox_status(*db.pool, half_made) == "running");
  CHECK(sandbox_status(*db.pool, never_made) == "error");
  std::set<std::string> destroyed(r2.destroyed.begin(), r2.destroyed.end());
  CHECK(destroyed == std::set<std::string>{orphan, stopped});
  std::set<std::string> left;
  for (const auto& s : list_sandboxes(*c)) left.insert(s.sandbox_id());
  CHECK(left == std::set<std::string>{owned, back, half_made});

  // The agent pauses one by itself (its timeout): the row follows, with an audit entry.
  client->pause_sandbox(owned, 30s);
  auto r3 = cp::reconcile_host(*db.pool, *client, host, &hooks, 0s);
  CHECK(r3.paused == std::vector<std::string>{owned});
  CHECK(sandbox_status(*db.pool, owned) == "paused");
  {
    auto cn = db.pool->acquire();
    auto a = cn->exec(
        "SELECT actor_type, status FROM audit_logs WHERE resource_id = $1 AND action = 'pause'",
        owned);
    REQUIRE(a.rows() == 1);
    CHECK(a.text(0, 0) == "system");
    CHECK(a.text(0, 1) == "info");
  }
  // Idempotent: nothing left to do.
  auto r4 = cp::reconcile_host(*db.pool, *client, host, &hooks, 0s);
  CHECK(r4.marked_missing.empty());
  CHECK(r4.restored.empty());
  CHECK(r4.paused.empty());
  CHECK(r4.destroyed.empty());
  CHECK(r4.promoted.empty());
  CHECK(r4.failed.empty());
}

TEST_CASE(
    "hosts end to end: a real agent registers and heartbeats and goes unreachable and comes back") {
  enter_private_netns();
  CpOptions o;
  o.heartbeat_timeout = 2s;
  o.monitor_interval = 200ms;
  CpProcess cp(o);
  TempDir tmp;
  auto [host_id, token] = cp.create_host();
  CHECK(token.size() == 64);
  CHECK(cp.host(host_id).at("status").as_string() == "pending");
  AgentProcess agent(tmp.path(),
                     {"--cp-url", cp.url(), "--register", token, "--address", "127.0.0.1",
                      "--heartbeat-interval", "1", "--warm-slots", "0", "--ready-disks", "0"});
  REQUIRE(wait_until([&] { return cp.host(host_id).at("status").as_string() == "online"; }));
  auto h = cp.host(host_id);
  CHECK(str(h, "address") == "127.0.0.1:" + std::to_string(agent.port()));
  CHECK(h.at("cpu_cores").as_int64() > 0);
  CHECK(h.at("memory_mb").as_int64() > 0);
  CHECK(h.at("disk_gb").as_int64() > 0);
  CHECK(h.at("runtimes").as_array().size() == 1);
  CHECK(h.contains("last_heartbeat_at"));

  // Credentials persisted 0600; the agent token is stored sealed, never in plain text.
  const std::string creds_path = tmp.path() + "/host-credentials.json";
  CHECK(file_mode(creds_path) == "600");
  auto creds = json::parse(read_file(creds_path)).as_object();
  CHECK(creds.at("host_id").as_string() == host_id);
  const std::string host_token(creds.at("jwt").as_string());
  const std::string refresh_token(creds.at("refresh_token").as_string());
  {
    auto pool = cp.pool();
    auto r = pool->acquire()->exec("SELECT metadata::text FROM hosts WHERE id = $1", host_id);
    CHECK(r.text(0, 0).find("agent_token_sealed") != std::string::npos);
    CHECK(r.text(0, 0).find(agent.token()) == std::string::npos);
  }

  // The registration token is single-use.
  json::object again;
  again["token"] = token;
  again["address"] = "127.0.0.1:1";
  again["agent_token"] = "x";
  auto reuse = cp.post("/v1/hosts/register", json::serialize(again));
  CHECK(reuse.status == 401);
  CHECK(reuse.error_message() == "invalid or expired credentials");

  // Heartbeats: forged, expired, wrong-host and missing tokens are refused.
  const std::string hb = "/v1/hosts/" + host_id + "/heartbeat";
  auto beat = [&](const std::string& t) {
    std::map<std::string, std::string> hdr;
    if (!t.empty()) hdr["X-Host-Token"] = t;
    return cp.request(bhttp_verb::post, hb, "", hdr);
  };
  CHECK(beat(host_token).status == 204);
  CHECK(beat("").status == 401);
  CHECK(beat(cp::auth::sign_host_token("some-other-secret-some-other-secret!!", host_id)).status ==
        401);
  CHECK(beat(cp::auth::sign_host_token(kTestJwtSecret, host_id,
                                       std::chrono::system_clock::now() - 8 * 24h))
            .status == 401);
  auto other_host = beat(cp::auth::sign_host_token(kTestJwtSecret, ids::new_id(ids::Kind::kHost)));
  CHECK(other_host.status == 403);
  CHECK(other_host.error_message() == "host ID mismatch");
  // A user token is not a host token.
  auto [uid, user_jwt] = cp.create_user("team-0000000000000000000000000", "owner", true);
  CHECK(beat(user_jwt).status == 401);

  // Heartbeats move last_heartbeat_at.
  const std::string first_beat = str(cp.host(host_id), "last_heartbeat_at");
  CHECK(wait_until([&] { return str(cp.host(host_id), "last_heartbeat_at") > first_beat; }, 5s));

  // The monitor: no heartbeats for longer than the timeout -> unreachable; they resume ->
  // online again.
  REQUIRE(::kill(agent.pid(), SIGSTOP) == 0);
  CHECK(
      wait_until([&] { return cp.host(host_id).at("status").as_string() == "unreachable"; }, 10s));
  REQUIRE(::kill(agent.pid(), SIGCONT) == 0);
  CHECK(wait_until([&] { return cp.host(host_id).at("status").as_string() == "online"; }, 10s));
  {
    auto log = cp.get("/v1/audit-logs?resource_type=host&limit=50", cp.admin_api_key()).json();
    std::set<std::string> actions;
    for (const auto& e : log.at("items").as_array()) actions.insert(str(e, "action"));
    CHECK(actions.count("marked_down"));
    CHECK(actions.count("marked_up"));
    CHECK(actions.count("register"));
    CHECK(actions.count("create"));
  }

  // Refresh rotates: the new token works, the old refresh token is spent.
  json::object rb;
  rb["refresh_token"] = refresh_token;
  auto refreshed = cp.post("/v1/hosts/auth/refresh", json::serialize(rb));
  REQUIRE(refreshed.status == 200);
  CHECK(str(refreshed.json(), "host_id") == host_id);
  CHECK(beat(str(refreshed.json(), "token")).status == 204);
  CHECK(cp.post("/v1/hosts/auth/refresh", json::serialize(rb)).status == 401);

  // Delete: refused while a capsule lives there, then forced; the agent learns it from the
  // 404 of its next heartbeat, stops heartbeating and drops its credentials.
  std::string sandbox;
  {
    auto pool = cp.pool();
    sandbox = insert_sandbox(*pool, host_id, "running", 1, 128);
  }
  auto refused = cp.del("/v1/hosts/" + host_id, cp.admin_api_key());
  CHECK(refused.status == 409);
  CHECK(refused.error_code() == "has_active_sandboxes");
  auto ids_in = refused.json().at("error").at("sandbox_ids").as_array();
  REQUIRE(ids_in.size() == 1);
  CHECK(ids_in[0].as_string() == sandbox);
  CHECK(cp.del("/v1/hosts/" + host_id + "?force=true", cp.admin_api_key()).status == 204);
  CHECK(cp.get("/v1/hosts/" + host_id, cp.admin_api_key()).status == 404);
  {
    auto pool = cp.pool();
    CHECK(sandbox_status(*pool, sandbox) == "stopped");
  }
  CHECK(wait_until(
      [&] { return agent.log().find("the control plane deleted this host") != std::string::npos; },
      5s));
  CHECK(file_mode(creds_path) == "missing");
  CHECK(beat(host_token).status == 404);

  // No token, key or agent credential ever reached a log.
  const std::string logs = cp.log() + agent.log();
  for (const std::string& secret :
       {token, host_token, refresh_token, agent.token(), cp.admin_api_key(),
        std::string(str(refreshed.json(), "token"))})
    CHECK(logs.find(secret) == std::string::npos);
}

TEST_CASE("cp fixture: register_agent and start_agent give online hosts with working clients") {
  enter_private_netns();
  CpProcess cp;
  TempDir tmp;
  AgentProcess plain(tmp.path() + "/a", {"--warm-slots", "0", "--ready-disks", "0"});
  auto reg = cp.register_agent(plain);
  CHECK(cp.host(reg.host_id).at("status").as_string() == "online");
  auto started = cp.start_agent(tmp.path() + "/b", {"--warm-slots", "0", "--ready-disks", "0"});
  CHECK(cp.host(started.host_id).at("status").as_string() == "online");
  auto all = cp.get("/v1/hosts", cp.admin_api_key()).json().as_array();
  CHECK(all.size() == 2);

  // The control plane reaches each agent over mutual TLS with its own CA, plus the token
  // the agent registered (HostDirectory as the server builds it).
  CHECK(plain.tls());
  auto pool = cp.pool();
  auto secret = pool->acquire()->exec("SELECT value FROM cp_secrets WHERE name = 'encryption_key'");
  REQUIRE(secret.rows() == 1);
  const auto key = crypto::parse_aead_key(secret.text(0, 0));
  auto tls = std::make_shared<cp::auth::HostTls>(
      cp::auth::load_or_create_host_ca(*pool, key, cp::CpConfig{}));
  cp::HostClientOptions host_options;
  host_options.transport = cp::make_mtls_transport([tls] { return tls->client_context(); });
  cp::PgHostDirectory directory(*pool, key, host_options);
  for (const auto& id : {reg.host_id, started.host_id}) {
    auto client = directory.client(id);
    CHECK(client->host_info(10s).cpus() > 0);
    CHECK(directory.client(id) == client);  // cached
  }
  // An unknown or non-online host is host_unavailable.
  try {
    directory.client(ids::new_id(ids::Kind::kHost));
    FAIL("expected host_unavailable");
  } catch (const cp::ApiError& e) {
    CHECK(e.code() == cp::ApiCode::kHostUnavailable);
  }
}

TEST_CASE(
    "embedded PostgreSQL: without DATABASE_URL wrenn-cp runs its own database and migrates it") {
  CpOptions o;
  o.embedded_pg = true;
  CpProcess cp(o);
  CHECK(cp.log().find("\"database\":\"embedded\"") != std::string::npos);
  CHECK(cp.log().find("\"msg\":\"pg: applying migration\"") != std::string::npos);
  CHECK(cp.get("/v1/hosts", cp.admin_api_key()).status == 200);
  {
    auto pool = cp.pool();
    CHECK(pg::schema_version(*pool) == pg::latest_embedded_version());
  }
  const std::string pidfile = cp.dir() + "/pg/data/postmaster.pid";
  REQUIRE(std::filesystem::exists(pidfile));
  const pid_t postmaster = std::stoi(read_file(pidfile));
  CHECK(::kill(postmaster, 0) == 0);
  // Stopping wrenn-cp stops its PostgreSQL too.
  CHECK(WEXITSTATUS(cp.stop()) == 0);
  CHECK(wait_until([&] { return ::kill(postmaster, 0) != 0; }, 10s));
  // A second start finds the database migrated and the key in place.
  const std::string key = cp.admin_api_key();
  cp.start();
  CHECK(cp.log().find("\"applied\"") == cp.log().rfind("\"applied\""));  // migrated once
  CHECK(cp.admin_api_key() == key);
  CHECK(cp.get("/v1/hosts", key).status == 200);
}
