// Snapshots through the REST API (reference §3.9, §14: snapshots.create/list/delete): a
// real wrenn-cp on a throwaway PostgreSQL with a real wrenn-agent running busybox
// sandboxes. A capsule's file system becomes a template of its team, capsules start from
// it on the same host, the capsule keeps running, names are scoped and checked, overwrite
// replaces, and delete removes the files from the host.
#include <boost/json.hpp>
#include <catch2/catch.hpp>
#include <filesystem>
#include <memory>

#include "cp_fixture.h"

using namespace wrenn;
using namespace wrenn::test;
namespace json = boost::json;
namespace bhttp = boost::beast::http;
namespace fs = std::filesystem;

namespace {

class Env {
 public:
  Env() {
    enter_private_netns();
    cp_ = std::make_unique<CpProcess>();
    agent_dir_ = tmp_.path() + "/agent";
    fs::create_directories(agent_dir_ + "/images");
    fs::create_directory_symlink(busybox_template(), agent_dir_ + "/images/minimal");
    agent_ = std::make_unique<AgentProcess>(
        agent_dir_, std::vector<std::string>{"--warm-slots", "0", "--ready-disks", "0"});
    host_id_ = cp_->register_agent(*agent_).host_id;
    auto a = cp_->create_team("alpha");
    a_ = a.api_key;
    a_team_ = a.team_id;
    b_ = cp_->create_team("beta").api_key;
  }
  CpProcess& cp() { return *cp_; }
  const std::string& a() const { return a_; }
  const std::string& a_team() const { return a_team_; }
  const std::string& b() const { return b_; }
  const std::string& agent_dir() const { return agent_dir_; }
  const std::string& host_id() const { return host_id_; }

 private:
  TempDir tmp_;
  std::unique_ptr<CpProcess> cp_;
  std::unique_ptr<AgentProcess> agent_;
  std::string agent_dir_, host_id_, a_, a_team_, b_;
};

std::string str(const json::value& v) {
  return std::string(v.as_string());
}

HttpReply create_capsule(CpProcess& cp, const std::string& key, const std::string& tmpl = "") {
  json::object o;
  o["memory_mb"] = 256;
  if (!tmpl.empty()) o["template"] = tmpl;
  return cp.post("/v1/capsules", json::serialize(o), key);
}

HttpReply write_file(CpProcess& cp, const std::string& key, const std::string& id,
                     const std::string& path, const std::string& data) {
  const std::string b = "----wrenn-snap-boundary";
  std::string body = "--" + b + "\r\nContent-Disposition: form-data; name=\"path\"\r\n\r\n" + path +
                     "\r\n--" + b +
                     "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n"
                     "Content-Type: application/octet-stream\r\n\r\n" +
                     data + "\r\n--" + b + "--\r\n";
  return cp.request(bhttp::verb::post, "/v1/capsules/" + id + "/files/write", body,
                    {{"X-API-Key", key}, {"Content-Type", "multipart/form-data; boundary=" + b}});
}

HttpReply read_file(CpProcess& cp, const std::string& key, const std::string& id,
                    const std::string& path) {
  json::object o;
  o["path"] = path;
  return cp.post("/v1/capsules/" + id + "/files/read", json::serialize(o), key);
}

HttpReply snapshot(CpProcess& cp, const std::string& key, const std::string& sandbox_id,
                   const std::string& name, bool overwrite = false) {
  json::object o;
  o["sandbox_id"] = sandbox_id;
  o["name"] = name;
  return cp.post(std::string("/v1/snapshots") + (overwrite ? "?overwrite=true" : ""),
                 json::serialize(o), key);
}

// name -> Template of GET /v1/snapshots[?type=…], checking the list is newest first.
std::map<std::string, json::object> listed(CpProcess& cp, const std::string& key,
                                           const std::string& query = "") {
  auto r = cp.get("/v1/snapshots" + query, key);
  REQUIRE(r.status == 200);
  std::map<std::string, json::object> out;
  std::string prev_created = "9999";
  const json::value body = r.json();
  for (const auto& v : body.as_array()) {
    const auto& o = v.as_object();
    CHECK(str(o.at("created_at")) <= prev_created);
    prev_created = str(o.at("created_at"));
    out[str(o.at("name"))] = o;
  }
  return out;
}

std::string template_id(CpProcess& cp, const std::string& team_id, const std::string& name) {
  auto pool = cp.pool();
  auto lease = pool->acquire();
  auto r = lease->exec("SELECT id FROM templates WHERE team_id = $1 AND name = $2", team_id, name);
  return r.empty() ? "" : std::string(r.text(0, 0));
}

}  // namespace

TEST_CASE("snapshots: create list use overwrite delete with scoping and name checks") {
  Env env;
  CpProcess& cp = env.cp();

  auto r = create_capsule(cp, env.a());
  INFO(r.body);
  REQUIRE(r.status == 201);
  const std::string src = str(r.json().at("id"));
  REQUIRE(write_file(cp, env.a(), src, "/root/hello.txt", "hello from the source").status == 204);

  // Create: 201 Template JSON; the capsule is still running afterwards.
  r = snapshot(cp, env.a(), src, "mysnap");
  INFO(r.body);
  REQUIRE(r.status == 201);
  json::object t = r.json().as_object();
  CHECK(str(t.at("name")) == "mysnap");
  CHECK(str(t.at("type")) == "snapshot");
  CHECK(t.at("platform").as_bool() == false);
  CHECK(t.at("size_bytes").as_int64() > 0);
  CHECK(t.at("memory_mb").as_int64() == 256);
  CHECK(t.at("vcpus").as_int64() == 1);
  CHECK(str(t.at("created_at")).size() == 20);  // 2026-05-01T12:00:00Z
  r = cp.get("/v1/capsules/" + src, env.a());
  REQUIRE(r.status == 200);
  CHECK(str(r.json().at("status")) == "running");
  CHECK(read_file(cp, env.a(), src, "/root/hello.txt").body == "hello from the source");
  const std::string tid = template_id(cp, env.a_team(), "mysnap");
  REQUIRE(tid.rfind("tmpl-", 0) == 0);
  CHECK(fs::is_directory(env.agent_dir() + "/images/" + tid));
  {
    auto pool = cp.pool();
    auto lease = pool->acquire();
    auto q = lease->exec("SELECT host_id FROM templates WHERE id = $1", tid);
    CHECK(std::string(q.text(0, 0)) == env.host_id());
  }

  // A capsule from it has the file.
  r = create_capsule(cp, env.a(), "mysnap");
  INFO(r.body);
  REQUIRE(r.status == 201);
  const std::string copy = str(r.json().at("id"));
  CHECK(str(r.json().at("template")) == "mysnap");
  CHECK(read_file(cp, env.a(), copy, "/root/hello.txt").body == "hello from the source");

  // List: team ∪ platform, newest first; type filter.
  auto all = listed(cp, env.a());
  REQUIRE(all.count("mysnap"));
  REQUIRE(all.count("minimal"));
  CHECK(all["mysnap"].at("platform").as_bool() == false);
  CHECK(all["minimal"].at("platform").as_bool() == true);
  CHECK(str(all["minimal"].at("type")) == "base");
  auto snaps = listed(cp, env.a(), "?type=snapshot");
  CHECK(snaps.count("mysnap") == 1);
  CHECK(snaps.count("minimal") == 0);
  auto bases = listed(cp, env.a(), "?type=base");
  CHECK(bases.count("mysnap") == 0);
  CHECK(bases.count("minimal") == 1);
  CHECK(listed(cp, env.a(), "?type=nonsense").empty());

  // Names: taken, reserved by the platform, invalid; bad sandbox ids.
  r = snapshot(cp, env.a(), src, "mysnap");
  CHECK(r.status == 409);
  CHECK(r.error_code() == "template_name_taken");
  r = snapshot(cp, env.a(), src, "minimal");
  CHECK(r.status == 409);
  CHECK(r.error_code() == "name_reserved");
  CHECK(r.error_message().find("reserved") != std::string::npos);
  for (const std::string& bad : {std::string("../x"), std::string(), std::string("-x"),
                                 std::string("a/b"), std::string(65, 'n')}) {
    INFO(bad);
    r = snapshot(cp, env.a(), src, bad);
    CHECK(r.status == 400);
    CHECK(r.error_code() == "invalid_request");
  }
  r = cp.post("/v1/snapshots", "{}", env.a());
  CHECK(r.status == 400);
  CHECK(r.error_message() == "sandbox_id is required");
  r = cp.post("/v1/snapshots", R"({"sandbox_id":"cl-nope"})", env.a());
  CHECK(r.status == 400);
  CHECK(r.error_code() == "invalid_request");

  // Another team: cannot see, use, snapshot from, or delete it.
  auto theirs = listed(cp, env.b());
  CHECK(theirs.count("mysnap") == 0);
  CHECK(theirs.count("minimal") == 1);
  r = create_capsule(cp, env.b(), "mysnap");
  CHECK(r.status == 404);
  r = cp.del("/v1/snapshots/mysnap", env.b());
  CHECK(r.status == 404);
  CHECK(r.error_code() == "not_found");
  r = snapshot(cp, env.b(), src, "theirs");
  CHECK(r.status == 404);
  // The same name in another team is fine (names are per team).
  auto rb = create_capsule(cp, env.b());
  REQUIRE(rb.status == 201);
  const std::string b_cap = str(rb.json().at("id"));
  r = snapshot(cp, env.b(), b_cap, "mysnap");
  CHECK(r.status == 201);
  CHECK(listed(cp, env.b()).count("mysnap") == 1);

  // Platform templates cannot be deleted.
  r = cp.del("/v1/snapshots/minimal", env.a());
  CHECK(r.status == 403);
  CHECK(r.error_code() == "forbidden");

  // Overwrite and delete are refused while a capsule from the template exists.
  r = snapshot(cp, env.a(), src, "mysnap", true);
  CHECK(r.status == 409);
  CHECK(r.error_code() == "conflict");
  r = cp.del("/v1/snapshots/mysnap", env.a());
  CHECK(r.status == 409);
  CHECK(r.error_code() == "conflict");
  REQUIRE(cp.del("/v1/capsules/" + copy, env.a()).status == 204);

  // Overwrite replaces: new files (the source changed), new id, old files gone.
  REQUIRE(write_file(cp, env.a(), src, "/root/hello.txt", "second version").status == 204);
  r = snapshot(cp, env.a(), src, "mysnap", true);
  INFO(r.body);
  REQUIRE(r.status == 201);
  const std::string tid2 = template_id(cp, env.a_team(), "mysnap");
  CHECK(tid2 != tid);
  CHECK(!fs::exists(env.agent_dir() + "/images/" + tid));
  CHECK(fs::is_directory(env.agent_dir() + "/images/" + tid2));
  r = create_capsule(cp, env.a(), "mysnap");
  REQUIRE(r.status == 201);
  const std::string copy2 = str(r.json().at("id"));
  CHECK(read_file(cp, env.a(), copy2, "/root/hello.txt").body == "second version");
  REQUIRE(cp.del("/v1/capsules/" + copy2, env.a()).status == 204);

  // A paused capsule stays paused.
  REQUIRE(cp.post("/v1/capsules/" + src + "/pause", "{}", env.a()).status == 200);
  r = snapshot(cp, env.a(), src, "from-paused");
  CHECK(r.status == 201);
  CHECK(str(cp.get("/v1/capsules/" + src, env.a()).json().at("status")) == "paused");
  // A stopped capsule cannot be snapshotted.
  REQUIRE(cp.del("/v1/capsules/" + src, env.a()).status == 204);
  r = snapshot(cp, env.a(), src, "from-stopped");
  CHECK(r.status == 409);
  CHECK(r.error_code() == "invalid_state");

  // Delete: 204, gone from the list and from the host; again 404.
  r = cp.del("/v1/snapshots/mysnap", env.a());
  CHECK(r.status == 204);
  CHECK(listed(cp, env.a()).count("mysnap") == 0);
  CHECK(!fs::exists(env.agent_dir() + "/images/" + tid2));
  r = cp.del("/v1/snapshots/mysnap", env.a());
  CHECK(r.status == 404);
  r = cp.del("/v1/snapshots/..%2Fx", env.a());
  CHECK(r.status == 400);
  // Team beta's own mysnap is untouched.
  CHECK(listed(cp, env.b()).count("mysnap") == 1);

  // Capsules from a snapshot go to its host only: 503 when that host is not online or gone.
  REQUIRE(create_capsule(cp, env.a(), "from-paused").status == 201);
  {
    const std::string other_host = cp.create_host().first;  // registered never: not online
    auto pool = cp.pool();
    auto lease = pool->acquire();
    lease->exec("UPDATE templates SET host_id = $1 WHERE team_id = $2 AND name = 'from-paused'",
                other_host, env.a_team());
    r = create_capsule(cp, env.a(), "from-paused");
    CHECK(r.status == 503);
    CHECK(r.error_code() == "no_hosts_available");
    CHECK(r.error_message().find(other_host) != std::string::npos);
    lease->exec("UPDATE templates SET host_id = NULL WHERE team_id = $1 AND name = 'from-paused'",
                env.a_team());
    r = create_capsule(cp, env.a(), "from-paused");
    CHECK(r.status == 503);
    CHECK(r.error_code() == "no_hosts_available");
  }

  // The audit log has both.
  {
    auto pool = cp.pool();
    auto lease = pool->acquire();
    auto q = lease->exec(
        "SELECT count(*) FROM audit_logs WHERE resource_type = 'snapshot' AND "
        "resource_id = 'mysnap' AND action IN ('create', 'delete')");
    CHECK(q.as_int64(0, 0) == 4);  // alpha: create, overwrite, delete; beta: create
  }
}
