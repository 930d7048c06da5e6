// The declarative fleet's plan and apply through the REST API (src/cp/fleet): a real
// wrenn-cp on a throwaway PostgreSQL. Specs travel as TOML text; the tests check the plan
// for every kind, that a second apply is a no-op, that --prune touches only the set's own
// members, that a stale plan is refused, that drift (out-of-band changes, a host gone) is
// reported and repaired, and that declared API keys work and stop working when removed.
#include <atomic>
#include <boost/json.hpp>
#include <catch2/catch.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cp_fixture.h"
#include "crypto/hash.h"

using namespace wrenn;
using namespace wrenn::test;
namespace json = boost::json;

namespace {

// A key of the API's form ("wrn_" + 32 lowercase hex); only its hash is in the specs.
const std::string kKey = "wrn_0123456789abcdef0123456789abcdef";

std::string key_hash() {
  return crypto::sha256_hex(kKey);
}

std::string team_toml(const std::string& name, const std::string& extra = "") {
  return "[[team]]\nname = \"" + name + "\"\n" + extra + "\n";
}

std::string acme_specs(int vcpus = 40) {
  return team_toml("acme",
                   "display_name = \"Acme Corp\"\nlimits = { vcpus = " + std::to_string(vcpus) +
                       " }\n[[team.members]]\nemail = \"Zoe@Acme.example\"\nrole = "
                       "\"owner\"\n[[team.members]]\nemail = \"al@acme.example\"\n"
                       "[[team.api_keys]]\nname = \"ci\"\nsha256 = \"" +
                       key_hash() + "\"\n") +
         "[[host]]\nname = \"edge-1\"\naddress = \"10.0.0.9:7443\"\nlabels = { zone = \"a\" }\n"
         "state = \"cordoned\"\n\n"
         "[[template]]\nname = \"py\"\nteam = \"acme\"\nimage = \"busybox\"\n"
         "build = [\"echo hi > /etc/hi\"]\nmemory_mb = 256\n\n"
         "[[channel]]\nname = \"alerts\"\nteam = \"acme\"\nprovider = \"webhook\"\n"
         "target = \"https://hooks.example.com/wrenn\"\n"
         "secrets = { signing_key = { env = \"FLEET_TEST_SIGNING\" } }\n"
         "events = [\"capsule.create\"]\n";
}

json::object files_body(const std::string& set,
                        const std::vector<std::pair<std::string, std::string>>& files,
                        bool prune = false) {
  json::array a;
  for (auto& [n, t] : files) a.push_back(json::object{{"name", n}, {"text", t}});
  return {{"apply_set", set}, {"prune", prune}, {"files", a}};
}

struct Fleet {
  CpProcess cp;
  Fleet() : cp(make_options()) {}
  static CpOptions make_options() {
    CpOptions o;
    o.env.push_back({"FLEET_TEST_SIGNING", "s3cret-signing-value"});
    return o;
  }
  HttpReply plan(json::object body) {
    return cp.post("/v1/fleet/plan", json::serialize(body), cp.admin_api_key());
  }
  // Plans, then applies at the plan's revision; returns the apply's reply.
  HttpReply apply(json::object body) {
    auto p = plan(body);
    REQUIRE(p.status == 200);
    body["revision"] = p.json().at("revision");
    return cp.post("/v1/fleet/apply", json::serialize(body), cp.admin_api_key());
  }
};

const json::object* entry(const json::value& plan, const std::string& kind,
                          const std::string& name) {
  for (auto& e : plan.at("entries").as_array())
    if (e.at("kind").as_string() == kind && e.at("name").as_string() == name) return &e.as_object();
  return nullptr;
}

std::map<std::string, json::object> fields_of(const json::object& e) {
  std::map<std::string, json::object> out;
  for (auto& f : e.at("fields").as_array())
    out[std::string(f.at("path").as_string())] = f.as_object();
  return out;
}

}  // namespace

TEST_CASE("plan lists every kind to create and apply converges the live rows", "[fleet]") {
  Fleet f;
  auto body = files_body("acme", {{"acme.toml", acme_specs()}});
  auto p = f.plan(body);
  REQUIRE(p.status == 200);
  json::value plan = p.json();
  CHECK(plan.at("revision").as_int64() == 0);
  CHECK(plan.at("summary").at("create").as_int64() == 4);
  for (auto [kind, name] : std::vector<std::pair<std::string, std::string>>{
           {"team", "acme"}, {"host", "edge-1"}, {"template", "acme/py"}, {"channel", "alerts"}}) {
    auto* e = entry(plan, kind, name);
    REQUIRE(e);
    CHECK(e->at("action").as_string() == "create");
  }
  auto team_fields = fields_of(*entry(plan, "team", "acme"));
  REQUIRE(team_fields.count("display_name"));
  CHECK(team_fields["display_name"].at("new").as_string() == "Acme Corp");
  CHECK(team_fields["display_name"].at("old").is_null());
  // Entries come in apply order: teams, hosts, templates, channels.
  CHECK(plan.at("entries").as_array()[0].at("kind").as_string() == "team");

  auto a = f.apply(body);
  REQUIRE(a.status == 200);
  CHECK(a.json().at("revision").as_int64() == 1);
  CHECK(a.json().at("applied").as_bool());

  auto db = f.cp.pool();
  auto c = db->acquire();
  auto team = c->exec("SELECT id, name, limits->>'vcpus' FROM teams WHERE slug = 'acme'");
  REQUIRE(team.rows() == 1);
  CHECK(team.text(0, 1) == "Acme Corp");
  CHECK(team.text(0, 2) == "40");
  const std::string team_id(team.text(0, 0));
  auto members = c->exec(
      "SELECT lower(u.email), ut.role FROM users_teams ut JOIN users u ON u.id = ut.user_id "
      "WHERE ut.team_id = $1 ORDER BY 1",
      team_id);
  REQUIRE(members.rows() == 2);
  CHECK(members.text(0, 0) == "al@acme.example");
  CHECK(members.text(0, 1) == "member");
  CHECK(members.text(1, 0) == "zoe@acme.example");
  CHECK(members.text(1, 1) == "owner");
  auto host =
      c->exec("SELECT status, state, address, labels->>'zone' FROM hosts WHERE name = 'edge-1'");
  REQUIRE(host.rows() == 1);
  CHECK(host.text(0, 0) == "pending");
  CHECK(host.text(0, 1) == "cordoned");
  CHECK(host.text(0, 2) == "10.0.0.9:7443");
  CHECK(host.text(0, 3) == "a");
  auto tmpl =
      c->exec("SELECT memory_mb, metadata->'fleet'->>'image' FROM templates WHERE name = 'py'");
  REQUIRE(tmpl.rows() == 1);
  CHECK(tmpl.text(0, 0) == "256");
  CHECK(tmpl.text(0, 1) == "busybox");
  // The channel's secret is stored sealed, never in plain text.
  auto ch = c->exec("SELECT secrets_sealed, secret_refs::text FROM channels WHERE name = 'alerts'");
  REQUIRE(ch.rows() == 1);
  CHECK(!ch.text(0, 0).empty());
  CHECK(ch.text(0, 0).find("s3cret") == std::string_view::npos);
  CHECK(ch.text(0, 1).find("FLEET_TEST_SIGNING") != std::string_view::npos);
  CHECK(f.cp.log().find("s3cret-signing-value") == std::string::npos);

  // The declared key authenticates as the team.
  auto caps = f.cp.get("/v1/capsules", kKey);
  CHECK(caps.status == 200);

  // A second apply of the same files changes nothing and keeps the revision.
  auto again = f.apply(body);
  REQUIRE(again.status == 200);
  CHECK(again.json().at("entries").as_array().empty());
  CHECK(again.json().at("revision").as_int64() == 1);
  CHECK(again.json().at("actionable").as_int64() == 0);

  // The inventory lists the four with their apply set.
  auto res = f.cp.get("/v1/fleet/resources?apply_set=acme", f.cp.admin_api_key());
  REQUIRE(res.status == 200);
  CHECK(res.json().at("resources").as_array().size() == 4);
  auto one = f.cp.get("/v1/fleet/resources/host/edge-1", f.cp.admin_api_key());
  REQUIRE(one.status == 200);
  CHECK(one.json().at("live").at("status").as_string() == "pending");
  CHECK(one.json().at("spec").at("address").as_string() == "10.0.0.9:7443");
}

TEST_CASE("an update shows field changes and removing a key makes it stop working", "[fleet]") {
  Fleet f;
  REQUIRE(f.apply(files_body("acme", {{"acme.toml", acme_specs(40)}})).status == 200);
  CHECK(f.cp.get("/v1/capsules", kKey).status == 200);

  auto p = f.plan(files_body("acme", {{"acme.toml", acme_specs(64)}}));
  REQUIRE(p.status == 200);
  const json::value pj = p.json();
  auto* e = entry(pj, "team", "acme");
  REQUIRE(e);
  CHECK(e->at("action").as_string() == "update");
  auto fields = fields_of(*e);
  REQUIRE(fields.size() == 1);
  REQUIRE(fields.count("limits.vcpus"));
  CHECK(fields["limits.vcpus"].at("old").as_int64() == 40);
  CHECK(fields["limits.vcpus"].at("new").as_int64() == 64);
  CHECK(pj.at("summary").at("update").as_int64() == 1);

  // Without the key (and with another member as owner).
  std::string specs = acme_specs(64);
  specs.replace(specs.find("[[team.api_keys]]"), std::string::npos, "");
  specs +=
      "\n[[host]]\nname = \"edge-1\"\naddress = \"10.0.0.9:7443\"\nlabels = { zone = \"a\" }\n"
      "state = \"cordoned\"\n\n[[template]]\nname = \"py\"\nteam = \"acme\"\nimage = \"busybox\"\n"
      "build = [\"echo hi > /etc/hi\"]\nmemory_mb = 256\n\n[[channel]]\nname = \"alerts\"\n"
      "team = \"acme\"\nprovider = \"webhook\"\ntarget = \"https://hooks.example.com/wrenn\"\n"
      "secrets = { signing_key = { env = \"FLEET_TEST_SIGNING\" } }\nevents = "
      "[\"capsule.create\"]\n";
  auto a = f.apply(files_body("acme", {{"acme.toml", specs}}));
  REQUIRE(a.status == 200);
  CHECK(f.cp.get("/v1/capsules", kKey).status == 401);
}

TEST_CASE("prune deletes only what this apply set declared before", "[fleet]") {
  Fleet f;
  REQUIRE(f.apply(files_body("one", {{"t.toml", team_toml("x") + team_toml("y")}})).status == 200);
  REQUIRE(f.apply(files_body("two", {{"t.toml", team_toml("z")}})).status == 200);
  auto rest_team = f.cp.create_team("w");

  // Without --prune: y is only listed as no longer declared.
  auto p = f.plan(files_body("one", {{"t.toml", team_toml("x")}}));
  REQUIRE(p.status == 200);
  CHECK(p.json().at("entries").as_array().empty());
  REQUIRE(p.json().at("unpruned").as_array().size() == 1);
  CHECK(p.json().at("unpruned").as_array()[0].at("name").as_string() == "y");

  auto a = f.apply(files_body("one", {{"t.toml", team_toml("x")}}, true));
  REQUIRE(a.status == 200);
  auto entries = a.json().at("entries").as_array();
  REQUIRE(entries.size() == 1);
  CHECK(entries[0].at("action").as_string() == "delete");
  CHECK(entries[0].at("name").as_string() == "y");

  auto db = f.cp.pool();
  auto c = db->acquire();
  auto live = c->exec("SELECT slug FROM teams WHERE deleted_at IS NULL ORDER BY slug");
  std::set<std::string> slugs;
  for (int i = 0; i < live.rows(); ++i) slugs.emplace(live.text(i, 0));
  CHECK(slugs.count("x") == 1);
  CHECK(slugs.count("y") == 0);
  CHECK(slugs.count("z") == 1);                                      // another set's
  CHECK(f.cp.get("/v1/capsules", rest_team.api_key).status == 200);  // made through the API

  // A set cannot take over another set's resource.
  auto steal = f.plan(files_body("one", {{"t.toml", team_toml("x") + team_toml("z")}}));
  CHECK(steal.status == 400);
  CHECK(steal.error_code() == "invalid_spec");
  CHECK(steal.error_message().find("t.toml:") != std::string::npos);
  CHECK(steal.error_message().find("apply set \"two\"") != std::string::npos);
}

TEST_CASE("an apply planned at an old revision is refused", "[fleet]") {
  Fleet f;
  auto first = files_body("one", {{"t.toml", team_toml("a")}});
  auto second = files_body("two", {{"t.toml", team_toml("b")}});
  auto p1 = f.plan(first);
  auto p2 = f.plan(second);
  REQUIRE(p1.status == 200);
  REQUIRE(p2.status == 200);
  first["revision"] = p1.json().at("revision");
  second["revision"] = p2.json().at("revision");
  auto a1 = f.cp.post("/v1/fleet/apply", json::serialize(first), f.cp.admin_api_key());
  REQUIRE(a1.status == 200);
  auto a2 = f.cp.post("/v1/fleet/apply", json::serialize(second), f.cp.admin_api_key());
  CHECK(a2.status == 409);
  CHECK(a2.error_code() == "revision_conflict");
  CHECK(a2.error_message().find("run wrennctl diff again") != std::string::npos);
  auto db = f.cp.pool();
  auto c = db->acquire();
  CHECK(c->exec("SELECT 1 FROM teams WHERE slug = 'b'").empty());
}

TEST_CASE("concurrent applies never interleave", "[fleet]") {
  Fleet f;
  // Eight applies race from the same revision: exactly one wins.
  std::vector<std::thread> threads;
  std::atomic<int> ok{0}, conflict{0};
  for (int i = 0; i < 8; ++i)
    threads.emplace_back([&, i] {
      auto body =
          files_body("set" + std::to_string(i), {{"t.toml", team_toml("t" + std::to_string(i))}});
      body["revision"] = 0;
      auto r = f.cp.post("/v1/fleet/apply", json::serialize(body), f.cp.admin_api_key());
      if (r.status == 200) ++ok;
      if (r.status == 409 && r.error_code() == "revision_conflict") ++conflict;
    });
  for (auto& t : threads) t.join();
  CHECK(ok == 1);
  CHECK(conflict == 7);
}

TEST_CASE("drift after out-of-band changes is reported and repaired by apply", "[fleet]") {
  Fleet f;
  auto body = files_body("acme", {{"acme.toml", acme_specs()}});
  REQUIRE(f.apply(body).status == 200);
  auto db = f.cp.pool();
  auto c = db->acquire();
  // A member's role changed and the declared host deleted through the REST API.
  c->exec(
      "UPDATE users_teams SET role = 'admin' WHERE user_id = (SELECT id FROM users WHERE "
      "lower(email) = 'al@acme.example')");
  auto host_id = std::string(c->exec("SELECT id FROM hosts WHERE name = 'edge-1'").text(0, 0));
  REQUIRE(f.cp.del("/v1/hosts/" + host_id, f.cp.admin_api_key()).status / 100 == 2);

  auto p = f.plan(body);
  REQUIRE(p.status == 200);
  json::value plan = p.json();
  CHECK(plan.at("summary").at("drift").as_int64() == 2);
  auto* team = entry(plan, "team", "acme");
  REQUIRE(team);
  CHECK(team->at("action").as_string() == "drift");
  auto fields = fields_of(*team);
  REQUIRE(fields.count("members"));
  CHECK(json::serialize(fields["members"].at("new")).find("\"admin\"") != std::string::npos);
  auto* host = entry(plan, "host", "edge-1");
  REQUIRE(host);
  CHECK(host->at("message").as_string() == "host was deleted outside the specs");

  REQUIRE(f.apply(body).status == 200);
  auto again = f.plan(body);
  CHECK(again.json().at("entries").as_array().empty());
  CHECK(c->exec("SELECT role FROM users_teams ut JOIN users u ON u.id = ut.user_id "
                "WHERE lower(u.email) = 'al@acme.example'")
            .text(0, 0) == "member");
  CHECK(c->exec("SELECT 1 FROM hosts WHERE name = 'edge-1'").rows() == 1);
}

TEST_CASE("a declared host that goes away shows as drift", "[fleet]") {
  Fleet f;
  REQUIRE(f.apply(files_body("hosts", {{"h.toml",
                                        "[[host]]\nname = \"h1\"\naddress = \"10.1.0.1:7443\"\n"}}))
              .status == 200);
  auto db = f.cp.pool();
  auto c = db->acquire();
  c->exec(
      "UPDATE hosts SET status = 'unreachable', last_heartbeat_at = now() - interval '5 minutes' "
      "WHERE name = 'h1'");
  auto p = f.plan(
      files_body("hosts", {{"h.toml", "[[host]]\nname = \"h1\"\naddress = \"10.1.0.1:7443\"\n"}}));
  REQUIRE(p.status == 200);
  const json::value pj = p.json();
  auto* e = entry(pj, "host", "h1");
  REQUIRE(e);
  CHECK(e->at("action").as_string() == "drift");
  CHECK(!e->at("actionable").as_bool());
  CHECK(e->at("message").as_string().find("host is unreachable") == 0);
  // A registered host no spec declares is reported too.
  auto [id, token] = f.cp.create_host();
  c->exec("UPDATE hosts SET status = 'online', name = 'stray' WHERE id = $1", id);
  auto p2 = f.plan(
      files_body("hosts", {{"h.toml", "[[host]]\nname = \"h1\"\naddress = \"10.1.0.1:7443\"\n"}}));
  const json::value pj2 = p2.json();
  auto* stray = entry(pj2, "host", "stray");
  REQUIRE(stray);
  CHECK(stray->at("message").as_string() == "registered host is not declared in any spec");
}

TEST_CASE("bad specs and bad requests get clear errors", "[fleet]") {
  Fleet f;
  auto bad = f.plan(files_body("x", {{"a.toml", "[[team]]\nnmae = \"x\"\n"}}));
  CHECK(bad.status == 400);
  CHECK(bad.error_code() == "invalid_spec");
  auto diags = bad.json().at("error").at("diagnostics").as_array();
  REQUIRE(diags.size() >= 1);
  CHECK(json::serialize(diags).find("a.toml:2:1") != std::string::npos);

  auto no_secret = f.plan(files_body(
      "x",
      {{"c.toml", team_toml("t") + "[[channel]]\nname = \"c\"\nteam = \"t\"\nprovider = "
                                   "\"webhook\"\ntarget = \"https://h.example.com/\"\n"
                                   "secrets = { signing_key = { env = \"FLEET_TEST_UNSET\" } }\n"
                                   "events = [\"host.up\"]\n"}}));
  CHECK(no_secret.status == 400);
  INFO(no_secret.body);
  CHECK(no_secret.error_message().find("FLEET_TEST_UNSET, which is not set") != std::string::npos);

  // A channel can never name the control plane's own secrets, nor a non-file.
  auto channel_with = [&](const std::string& secret) {
    return f.plan(
        files_body("x", {{"c.toml", team_toml("t") +
                                        "[[channel]]\nname = \"c\"\nteam = \"t\"\nprovider = "
                                        "\"webhook\"\ntarget = \"https://h.example.com/\"\n"
                                        "secrets = { signing_key = " +
                                        secret + " }\nevents = [\"host.up\"]\n"}}));
  };
  auto jwt = channel_with("{ env = \"JWT_SECRET\" }");
  CHECK(jwt.status == 400);
  CHECK(jwt.error_message().find("one of the control plane's own secrets") != std::string::npos);
  auto dir = channel_with("{ file = \"/etc\" }");
  CHECK(dir.status == 400);
  CHECK(dir.error_message().find("not a regular file") != std::string::npos);

  CHECK(
      f.cp.post("/v1/fleet/plan", "{\"apply_set\":\"Bad Name\",\"files\":[]}", f.cp.admin_api_key())
          .status == 400);
  CHECK(f.cp.post("/v1/fleet/plan",
                  "{\"apply_set\":\"ok\",\"files\":[{\"name\":\"../x.toml\",\"text\":\"\"}]}",
                  f.cp.admin_api_key())
            .error_message()
            .find("plain file name") != std::string::npos);
  auto no_rev =
      f.cp.post("/v1/fleet/apply", "{\"apply_set\":\"ok\",\"files\":[]}", f.cp.admin_api_key());
  CHECK(no_rev.status == 400);
  CHECK(no_rev.error_message().find("revision is required") != std::string::npos);
  // Team keys are not platform admins.
  auto team = f.cp.create_team("t");
  CHECK(f.cp.post("/v1/fleet/plan", "{}", team.api_key).status == 403);
  CHECK(f.cp.post("/v1/fleet/plan", "{}", "wrn_nope").status == 401);
}

TEST_CASE("delete removes a declared resource and registration tokens are issued", "[fleet]") {
  Fleet f;
  REQUIRE(
      f.apply(files_body("s", {{"h.toml", "[[host]]\nname = \"h1\"\naddress = \"10.1.0.1:7443\"\n" +
                                              team_toml("t")}}))
          .status == 200);
  auto tok = f.cp.post("/v1/fleet/hosts/h1/registration-token", "", f.cp.admin_api_key());
  REQUIRE(tok.status == 201);
  CHECK(tok.json().at("command").as_string().find(
            "--token " + std::string(tok.json().at("registration_token").as_string())) !=
        std::string::npos);
  CHECK(f.cp.post("/v1/fleet/hosts/nope/registration-token", "", f.cp.admin_api_key()).status ==
        404);

  auto d = f.cp.del("/v1/fleet/resources/team/t", f.cp.admin_api_key());
  REQUIRE(d.status == 200);
  CHECK(f.cp.get("/v1/fleet/resources/team/t", f.cp.admin_api_key()).status == 404);
  CHECK(f.cp.del("/v1/fleet/resources/team/t", f.cp.admin_api_key()).status == 404);
  CHECK(f.cp.del("/v1/fleet/resources/gizmo/t", f.cp.admin_api_key()).status == 400);
}

TEST_CASE("declared team limits refuse sandboxes beyond them", "[fleet]") {
  Fleet f;
  REQUIRE(f.apply(files_body("s", {{"t.toml", team_toml("lim",
                                                        "limits = { concurrent_sandboxes = 1, "
                                                        "vcpus = 2 }\n[[team.api_keys]]\n"
                                                        "name = \"k\"\nsha256 = \"" +
                                                            key_hash() + "\"\n")}}))
              .status == 200);
  auto db = f.cp.pool();
  auto c = db->acquire();
  const std::string team(c->exec("SELECT id FROM teams WHERE slug = 'lim'").text(0, 0));
  c->exec(
      "INSERT INTO sandboxes (id, team_id, status, vcpus) VALUES "
      "('cl-0000000000000000000000001', $1, 'running', 1)",
      team);
  auto full = f.cp.post("/v1/capsules", "{\"template\":\"minimal\"}", kKey);
  CHECK(full.status == 402);
  CHECK(full.error_code() == "concurrent_sandbox_limit");
  c->exec("UPDATE sandboxes SET status = 'stopped' WHERE team_id = $1", team);
  auto big = f.cp.post("/v1/capsules", "{\"template\":\"minimal\",\"vcpus\":4}", kKey);
  CHECK(big.status == 402);
  CHECK(big.error_code() == "vcpu_limit");
  // Within the limits the request reaches placement (and finds no host here).
  auto ok = f.cp.post("/v1/capsules", "{\"template\":\"minimal\",\"vcpus\":1}", kKey);
  CHECK(ok.status == 503);
  CHECK(ok.error_code() == "no_hosts_available");
}

TEST_CASE("templates are named team/name in the inventory", "[fleet]") {
  Fleet f;
  const std::string specs = team_toml("a") + team_toml("b") +
                            "[[template]]\nname = \"py\"\nteam = \"a\"\nimage = \"busybox\"\n\n"
                            "[[template]]\nname = \"py\"\nteam = \"b\"\nimage = \"busybox\"\n";
  auto a = f.apply(files_body("s", {{"t.toml", specs}}));
  REQUIRE(a.status == 200);
  const json::value aj = a.json();
  CHECK(entry(aj, "template", "a/py"));
  CHECK(entry(aj, "template", "b/py"));
  auto one = f.cp.get("/v1/fleet/resources/template/b/py", f.cp.admin_api_key());
  REQUIRE(one.status == 200);
  CHECK(one.json().at("spec").at("team").as_string() == "b");
  CHECK(one.json().at("live").at("builds").as_array().empty());
  REQUIRE(f.cp.del("/v1/fleet/resources/template/a/py", f.cp.admin_api_key()).status == 200);
  auto p = f.plan(files_body("s", {{"t.toml", specs}}));
  const json::value pj = p.json();
  auto* e = entry(pj, "template", "a/py");
  REQUIRE(e);
  CHECK(e->at("action").as_string() == "create");
}

TEST_CASE("declaring objects that already exist adopts them", "[fleet]") {
  Fleet f;
  auto rest = f.cp.create_team("adopted");
  auto db = f.cp.pool();
  auto c = db->acquire();
  const std::string slug(c->exec("SELECT slug FROM teams WHERE id = $1", rest.team_id).text(0, 0));
  const std::string specs = team_toml(slug) + team_toml("platform", "display_name = \"Platform\"") +
                            "[[template]]\nname = \"minimal\"\nteam = \"platform\"\nimage = "
                            "\"busybox\"\n";
  auto p = f.plan(files_body("s", {{"t.toml", specs}}));
  REQUIRE(p.status == 200);
  const json::value pj = p.json();
  auto* team = entry(pj, "team", slug);
  REQUIRE(team);
  CHECK(team->at("resource_id").as_string() == rest.team_id);
  CHECK(team->at("message").as_string() == "adopts the existing team " + rest.team_id);
  auto* tmpl = entry(pj, "template", "platform/minimal");
  REQUIRE(tmpl);
  CHECK(tmpl->at("resource_id").as_string() == "tmpl-0000000000000000000000000");
  REQUIRE(f.apply(files_body("s", {{"t.toml", specs}})).status == 200);
  CHECK(c->exec("SELECT count(*) FROM teams WHERE slug = $1", slug).text(0, 0) == "1");
  // The adopted team's REST-made key keeps working: apply manages only declared keys.
  CHECK(f.cp.get("/v1/capsules", rest.api_key).status == 200);
}

TEST_CASE("a registered host keeps its agent's address and the difference is explained",
          "[fleet]") {
  Fleet f;
  const std::string specs = "[[host]]\nname = \"h1\"\naddress = \"10.1.0.1:7443\"\n";
  REQUIRE(f.apply(files_body("s", {{"h.toml", specs}})).status == 200);
  auto db = f.cp.pool();
  auto c = db->acquire();
  // As if its agent registered from another address.
  c->exec("UPDATE hosts SET status = 'online', address = '10.1.0.2:7443' WHERE name = 'h1'");
  auto p = f.plan(files_body("s", {{"h.toml", specs}}));
  const json::value pj = p.json();
  auto* e = entry(pj, "host", "h1");
  REQUIRE(e);
  CHECK(e->at("action").as_string() == "drift");
  CHECK(!e->at("actionable").as_bool());
  CHECK(e->at("message").as_string().find("register the agent with --address 10.1.0.1:7443") !=
        std::string::npos);
  auto a = f.apply(files_body("s", {{"h.toml", specs}}));
  REQUIRE(a.status == 200);
  CHECK(a.json().at("actionable").as_int64() == 0);
  CHECK(c->exec("SELECT address FROM hosts WHERE name = 'h1'").text(0, 0) == "10.1.0.2:7443");
}
