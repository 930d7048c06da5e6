// The fleet reconciler (src/cp/fleet/reconciler.h) end to end: a real wrenn-cp with a 1 s
// fleet interval, real agents on the ns runtime, specs applied through POST /v1/fleet/plan
// and /v1/fleet/apply. Covers declared hosts (awaiting registration, online, cordoned,
// draining), template builds (on one host, converging onto a second, rebuilt after a host
// lost the image) and leadership moving between two control planes on one database.
#include <boost/json.hpp>
#include <catch2/catch.hpp>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "cp_fixture.h"
#include "crypto/hash.h"

using namespace wrenn;
using namespace wrenn::test;
namespace json = boost::json;
namespace fs = std::filesystem;

namespace {

// A team key of the API's form; only its hash is in the specs.
const std::string kKey = "wrn_00112233445566778899aabbccddeeff";

std::string team_spec() {
  return "[[team]]\nname = \"acme\"\n[[team.api_keys]]\nname = \"ci\"\nsha256 = \"" +
         crypto::sha256_hex(kKey) + "\"\n\n";
}

std::string host_spec(const std::string& name, const std::string& address,
                      const std::string& state = "active") {
  return "[[host]]\nname = \"" + name + "\"\naddress = \"" + address + "\"\nstate = \"" + state +
         "\"\n\n";
}

const char* kBuiltTemplate =
    "[[template]]\nname = \"built\"\nteam = \"acme\"\nimage = \"busybox\"\n"
    "build = [\"echo hi > /etc/built\"]\nmemory_mb = 256\n\n";

CpOptions fast_options(std::vector<std::string> extra = {}) {
  CpOptions o;
  o.extra_args = {"--fleet-interval", "1"};
  o.extra_args.insert(o.extra_args.end(), extra.begin(), extra.end());
  return o;
}

std::string str(const json::value& v) {
  return v.is_string() ? std::string(v.as_string()) : "<" + json::serialize(v) + ">";
}

// Plans, then applies at the plan's revision.
// key: the admin key to use ("" = the fixture's own).
HttpReply apply_specs(const CpProcess& cp, const std::string& text, std::string key = {}) {
  if (key.empty()) key = cp.admin_api_key();
  json::array files;
  files.push_back(json::object{{"name", "fleet.toml"}, {"text", text}});
  json::object body{{"apply_set", "test"}, {"prune", false}, {"files", files}};
  auto p = cp.post("/v1/fleet/plan", json::serialize(body), key);
  INFO(p.body);
  REQUIRE(p.status == 200);
  body["revision"] = p.json().at("revision");
  auto a = cp.post("/v1/fleet/apply", json::serialize(body), key);
  INFO(a.body);
  REQUIRE(a.status == 200);
  return a;
}

json::object resource(const CpProcess& cp, const std::string& kind, const std::string& name,
                      std::string key = {}) {
  if (key.empty()) key = cp.admin_api_key();
  auto r = cp.get("/v1/fleet/resources/" + kind + "/" + name, key);
  if (r.status != 200) return {};
  return r.json().as_object();
}

std::string phase(const CpProcess& cp, const std::string& kind, const std::string& name,
                  const std::string& key = {}) {
  auto o = resource(cp, kind, name, key);
  if (!o.contains("status") || !o.at("status").is_object()) return "";
  const auto& s = o.at("status").as_object();
  return s.contains("phase") ? str(s.at("phase")) : "";
}

bool wait_phase(const CpProcess& cp, const std::string& kind, const std::string& name,
                const std::string& want,
                std::chrono::milliseconds budget = std::chrono::seconds(20),
                const std::string& key = {}) {
  const bool ok = wait_until([&] { return phase(cp, kind, name, key) == want; }, budget);
  if (!ok) UNSCOPED_INFO("phase of " << kind << " " << name << ": " << phase(cp, kind, name));
  return ok;
}

std::int64_t count(const CpProcess& cp, const std::string& sql, const std::string& param) {
  auto db = cp.pool();
  auto c = db->acquire();
  return c->exec(sql, param).as_int64(0, 0);
}

HttpReply create_capsule(const CpProcess& cp, const std::string& tmpl) {
  json::object body{{"template", tmpl}, {"memory_mb", 256}};
  return cp.post("/v1/capsules", json::serialize(body), kKey);
}

std::string capsule_status(const CpProcess& cp, const std::string& id) {
  auto r = cp.get("/v1/capsules/" + id, kKey);
  return r.status == 200 ? str(r.json().at("status")) : "<" + std::to_string(r.status) + ">";
}

// An agent directory whose "minimal" platform template is the busybox test image.
std::string agent_dir(const TempDir& tmp, const std::string& name) {
  const std::string dir = tmp.path() + "/" + name;
  fs::create_directories(dir + "/images");
  fs::create_directory_symlink(busybox_template(), dir + "/images/minimal");
  return dir;
}

const std::vector<std::string> kAgentArgs = {"--warm-slots", "0", "--ready-disks", "0"};

}  // namespace

TEST_CASE("a declared host registers and cordoned or draining hosts take no new capsules",
          "[reconciler]") {
  enter_private_netns();
  TempDir tmp;
  CpProcess cp(fast_options());
  apply_specs(cp, team_spec() + host_spec("h1", "127.0.0.1:1"));

  REQUIRE(wait_phase(cp, "host", "h1", "AwaitingRegistration"));
  auto res = resource(cp, "host", "h1");
  CHECK(str(res.at("status").at("message")).find("wrennctl host token h1") != std::string::npos);

  auto tok = cp.post("/v1/fleet/hosts/h1/registration-token", "{}", cp.admin_api_key());
  INFO(tok.body);
  REQUIRE(tok.status == 201);
  const std::string host_id = str(tok.json().at("host_id"));
  auto agent = cp.start_agent_with_token(agent_dir(tmp, "a"), host_id,
                                         str(tok.json().at("registration_token")), kAgentArgs);
  REQUIRE(wait_phase(cp, "host", "h1", "Online"));
  const std::string host_up =
      "SELECT count(*) FROM audit_logs WHERE action = 'host.up' AND resource_id = $1";
  CHECK(wait_until([&] { return count(cp, host_up, host_id) == 1; }));
  const std::string address = str(cp.host(host_id).at("address"));

  auto c1 = create_capsule(cp, "minimal");
  INFO(c1.body);
  REQUIRE(c1.status == 201);
  const std::string capsule = str(c1.json().at("id"));
  CHECK(capsule_status(cp, capsule) == "running");

  // Cordoned: running capsules stay, new ones are refused.
  apply_specs(cp, team_spec() + host_spec("h1", address, "cordoned"));
  REQUIRE(wait_phase(cp, "host", "h1", "Cordoned"));
  auto refused = create_capsule(cp, "minimal");
  CHECK(refused.status == 503);
  CHECK(refused.error_code() == "no_hosts_available");
  CHECK(refused.error_message().find("cordoned or draining") != std::string::npos);
  CHECK(capsule_status(cp, capsule) == "running");

  // Draining (policy pause): the running capsule is paused, then the host is drained.
  apply_specs(cp, team_spec() + host_spec("h1", address, "draining"));
  CHECK(wait_until([&] { return capsule_status(cp, capsule) == "paused"; },
                   std::chrono::seconds(30)));
  CHECK(wait_phase(cp, "host", "h1", "Drained"));
  CHECK(create_capsule(cp, "minimal").error_code() == "no_hosts_available");

  // Active again: schedulable, and the host stayed up the whole time (one host.up).
  apply_specs(cp, team_spec() + host_spec("h1", address, "active"));
  REQUIRE(wait_phase(cp, "host", "h1", "Online"));
  auto c2 = create_capsule(cp, "minimal");
  INFO(c2.body);
  CHECK(c2.status == 201);
  CHECK(count(cp, host_up, host_id) == 1);

  // Capacity overrides: max_sandboxes caps the count (the paused capsule counts too).
  apply_specs(cp, team_spec() + host_spec("h1", address) + "capacity = { max_sandboxes = 2 }\n");
  CHECK(wait_until([&] {
    auto r = create_capsule(cp, "minimal");
    return r.error_code() == "no_hosts_available" &&
           r.error_message().find("max_sandboxes") != std::string::npos;
  }));
}

TEST_CASE("a template is built converges onto a second host and comes back when lost",
          "[reconciler]") {
  enter_private_netns();
  TempDir tmp;
  CpProcess cp(fast_options());
  const std::string dir_a = agent_dir(tmp, "a");
  auto a = cp.start_agent(dir_a, kAgentArgs);
  apply_specs(cp, team_spec() + kBuiltTemplate);

  if (!wait_phase(cp, "template", "acme/built", "Ready", std::chrono::seconds(90))) {
    const std::string l = cp.log();
    FAIL(json::serialize(resource(cp, "template", "acme/built"))
         << "\ncontrol plane log:\n"
         << l.substr(l.size() > 20000 ? l.size() - 20000 : 0));
  }
  auto res = resource(cp, "template", "acme/built");
  const std::string tmpl_id = str(res.at("resource_id"));
  REQUIRE(fs::exists(dir_a + "/images/" + tmpl_id));
  // The build log is visible.
  bool logged = false;
  auto scan = [&](const json::object& o) {
    if (o.contains("builds") && o.at("builds").is_array())
      for (const auto& b : o.at("builds").as_array())
        if (b.as_object().contains("log") &&
            str(b.at("log")).find("echo hi > /etc/built") != std::string::npos)
          logged = true;
  };
  scan(res);
  if (res.contains("live") && res.at("live").is_object()) scan(res.at("live").as_object());
  CHECK(logged);
  const std::string built =
      "SELECT count(*) FROM audit_logs WHERE action = 'template.built' AND resource_id = $1";
  CHECK(count(cp, built, tmpl_id) == 1);

  // A capsule from it sees what the build step wrote.
  auto c = create_capsule(cp, "built");
  INFO(c.body);
  REQUIRE(c.status == 201);
  const std::string capsule = str(c.json().at("id"));
  json::object ex{{"cmd", "/bin/sh"}, {"args", json::array{"-c", "cat /etc/built"}}};
  auto out = cp.post("/v1/capsules/" + capsule + "/exec", json::serialize(ex), kKey);
  INFO(out.body);
  REQUIRE(out.status == 200);
  CHECK(str(out.json().at("stdout")) == "hi\n");

  // An undeclared registered host is reported as drift, once.
  const std::string drift =
      "SELECT count(*) FROM audit_logs WHERE action = 'drift' AND resource_id = $1";
  CHECK(count(cp, drift, a.host_id) == 1);

  // A second agent registered later gets the template too.
  const std::string dir_b = agent_dir(tmp, "b");
  auto b = cp.start_agent(dir_b, kAgentArgs);
  const std::string ready_on =
      "SELECT count(*) FROM template_builds WHERE state = 'ready' AND host_id = $1";
  CHECK(wait_until([&] { return count(cp, ready_on, b.host_id) == 1; }, std::chrono::seconds(90)));
  CHECK(fs::exists(dir_b + "/images/" + tmpl_id));
  CHECK(wait_phase(cp, "template", "acme/built", "Ready"));

  // A host that lost the image gets it back.
  CHECK(cp.del("/v1/capsules/" + capsule, kKey).status == 204);
  fs::remove_all(dir_a + "/images/" + tmpl_id);
  CHECK(wait_until([&] { return count(cp, built, tmpl_id) == 3; }, std::chrono::seconds(90)));
  CHECK(fs::exists(dir_a + "/images/" + tmpl_id));
  CHECK(wait_phase(cp, "template", "acme/built", "Ready"));
  CHECK(count(cp, drift, a.host_id) == 1);

  // A changed spec rebuilds on every host, replacing the image.
  std::string changed = team_spec() + kBuiltTemplate;
  changed.replace(changed.find("echo hi"), 7, "echo bye");
  apply_specs(cp, changed);
  CHECK(wait_until([&] { return count(cp, built, tmpl_id) == 5; }, std::chrono::seconds(90)));
  CHECK(wait_phase(cp, "template", "acme/built", "Ready"));
  auto c2 = create_capsule(cp, "built");
  INFO(c2.body);
  REQUIRE(c2.status == 201);
  auto out2 =
      cp.post("/v1/capsules/" + str(c2.json().at("id")) + "/exec", json::serialize(ex), kKey);
  INFO(out2.body);
  CHECK(str(out2.json().at("stdout")) == "bye\n");
}

TEST_CASE("a failing build step fails the template with the step named", "[reconciler]") {
  enter_private_netns();
  TempDir tmp;
  CpProcess cp(fast_options());
  auto a = cp.start_agent(agent_dir(tmp, "a"), kAgentArgs);
  apply_specs(cp, team_spec() +
                      "[[template]]\nname = \"broken\"\nteam = \"acme\"\nimage = \"busybox\"\n"
                      "build = [\"true\", \"echo oops >&2; exit 3\"]\n");
  REQUIRE(wait_phase(cp, "template", "acme/broken", "Failed", std::chrono::seconds(60)));
  auto res = resource(cp, "template", "acme/broken");
  const std::string msg = str(res.at("status").at("message"));
  CHECK(msg.find("build step 2") != std::string::npos);
  CHECK(msg.find("exit status") != std::string::npos);
  auto refused = create_capsule(cp, "broken");
  CHECK(refused.error_code() == "no_hosts_available");
  CHECK(refused.error_message().find("broken") != std::string::npos);
}

TEST_CASE("leadership moves to the other control plane when the leader stops", "[reconciler]") {
  CpProcess one(fast_options());
  REQUIRE(
      wait_until([&] { return one.log().find("fleet reconciler: leading") != std::string::npos; }));
  CpProcess two(fast_options({"--database-url", one.conninfo()}));
  std::this_thread::sleep_for(std::chrono::seconds(2));
  CHECK(two.log().find("fleet reconciler: leading") == std::string::npos);

  // Two shares one's database (and so its platform admin key).
  const std::string key = one.admin_api_key();
  one.stop();
  CHECK(wait_until([&] { return two.log().find("fleet reconciler: leading") != std::string::npos; },
                   std::chrono::seconds(15)));
  // The new leader converges what is applied through it.
  apply_specs(two, team_spec() + host_spec("later", "10.9.0.1:7443"), key);
  CHECK(wait_phase(two, "host", "later", "AwaitingRegistration", std::chrono::seconds(20), key));
  CHECK(wait_phase(two, "team", "acme", "Ready", std::chrono::seconds(20), key));
}
