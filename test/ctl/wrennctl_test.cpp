// wrennctl end to end: the real binary (build/bin/wrennctl) run as a process against a
// real wrenn-cp on a throwaway PostgreSQL (test/support/cp_fixture.h). Checks the exit
// codes (0 no changes, 2 changes, 1 error), local validation with positions, the plan's
// symbols and field changes, idempotent apply, prune limited to the set's own members,
// the revision conflict, the unreachable-server and wrong-key messages, -o json, the
// config file precedence, get/delete/host token, and sandbox create/exec/rm on a
// registered agent. stdin is /dev/null, so wrennctl never sees a terminal.
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <catch2/catch.hpp>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "cp_fixture.h"

using namespace wrenn;
using namespace wrenn::test;
namespace json = boost::json;
namespace fs = std::filesystem;

namespace {

struct Run {
  int code = -1;
  std::string out;
  std::string err;
};

// Runs wrennctl with args; the environment has no WRENN_* variables and HOME is an empty
// directory (no user config) unless env sets them.
Run run_ctl(const std::vector<std::string>& args,
            const std::map<std::string, std::string>& env = {}) {
  TempDir tmp;
  const std::string out_path = tmp.path() + "/out", err_path = tmp.path() + "/err";
  const std::string bin = bin_dir() + "/wrennctl";
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    for (const char* v : {"WRENN_URL", "WRENN_API_KEY", "WRENN_CONFIG", "WRENN_CA_CERT"})
      unsetenv(v);
    setenv("HOME", tmp.path().c_str(), 1);
    for (auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
    int in = open("/dev/null", O_RDONLY);
    int o = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int e = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(in, 0);
    dup2(o, 1);
    dup2(e, 2);
    std::vector<char*> argv{const_cast<char*>(bin.c_str())};
    for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(bin.c_str(), argv.data());
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  Run r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = read_file(out_path);
  r.err = read_file(err_path);
  return r;
}

// A loopback port nothing listens on.
unsigned short closed_port() {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  socklen_t len = sizeof a;
  getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  close(s);
  return ntohs(a.sin_port);
}

bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

std::string team_toml(const std::string& name, const std::string& extra = "") {
  return "[[team]]\nname = \"" + name + "\"\n" + extra + "\n";
}

std::string acme_specs(int memory_mb = 256) {
  return team_toml("acme",
                   "display_name = \"Acme Corp\"\n[[team.members]]\n"
                   "email = \"zoe@acme.example\"\nrole = \"owner\"\n") +
         "[[host]]\nname = \"edge-1\"\naddress = \"10.0.0.9:7443\"\nlabels = { zone = \"a\" }\n\n"
         "[[template]]\nname = \"py\"\nteam = \"acme\"\nimage = \"busybox\"\n"
         "build = [\"echo hi > /etc/hi\"]\nmemory_mb = " +
         std::to_string(memory_mb) +
         "\n\n"
         "[[channel]]\nname = \"alerts\"\nteam = \"acme\"\nprovider = \"webhook\"\n"
         "target = \"https://hooks.example.com/wrenn\"\n"
         "secrets = { signing_key = { env = \"CTL_TEST_SIGNING\" } }\n"
         "events = [\"capsule.create\"]\n";
}

// A control plane and a scratch directory for spec trees.
struct Fixture {
  CpProcess cp{options()};
  TempDir tmp;

  static CpOptions options() {
    CpOptions o;
    o.env.push_back({"CTL_TEST_SIGNING", "s3cret-signing-value"});
    return o;
  }
  // DIR (created) with the given files, replacing what was there.
  std::string specs(const std::string& name, const std::map<std::string, std::string>& files) {
    const std::string dir = tmp.path() + "/" + name;
    fs::remove_all(dir);
    fs::create_directories(dir);
    for (auto& [f, text] : files) write_file(dir + "/" + f, text);
    return dir;
  }
  Run ctl(std::vector<std::string> args, const std::map<std::string, std::string>& env = {}) {
    args.insert(args.begin(), {"--server", cp.url(), "--api-key", cp.admin_api_key()});
    return run_ctl(args, env);
  }
  bool team_exists(const std::string& slug) {
    auto db = cp.pool();
    auto c = db->acquire();
    return c->exec("SELECT 1 FROM teams WHERE slug = $1 AND deleted_at IS NULL", slug).rows() == 1;
  }
};

}  // namespace

TEST_CASE("wrennctl help and usage errors exit as documented", "[ctl]") {
  auto r = run_ctl({"--help"});
  CHECK(r.code == 0);
  CHECK(contains(r.out, "Usage: wrennctl"));
  for (std::string cmd : {"diff", "apply", "get", "delete", "host", "sandbox"}) {
    r = run_ctl({cmd, "--help"});
    CHECK(r.code == 0);
    CHECK(contains(r.out, "Usage"));
  }
  r = run_ctl({"frobnicate"});
  CHECK(r.code == 1);
  CHECK(contains(r.err, "unknown command \"frobnicate\""));
  r = run_ctl({"diff"});
  CHECK(r.code == 1);
  CHECK(contains(r.err, "-f DIR is required"));
  r = run_ctl({"get", "widgets"});
  CHECK(r.code == 1);
  CHECK(contains(r.err, "unknown kind \"widget"));
  r = run_ctl({"diff", "-f", "/nonexistent/specs"});
  CHECK(r.code == 1);
  CHECK(contains(r.err, "not a directory"));
}

TEST_CASE("invalid specs are reported locally with positions", "[ctl]") {
  TempDir tmp;
  write_file(tmp.path() + "/a.toml", "[[team]]\nname = \"acme\"\nnmae = \"x\"\n");
  write_file(tmp.path() + "/b.toml",
             "[[template]]\nname = \"py\"\nteam = \"ghost\"\nimage = \"busybox\"\n");
  // The server is unreachable: the local diagnostics are what the user sees.
  auto r = run_ctl(
      {"diff", "-f", tmp.path(), "--server", "http://127.0.0.1:" + std::to_string(closed_port())});
  CHECK(r.code == 1);
  CHECK(contains(r.err, tmp.path() + "/a.toml:3:1: unknown key \"nmae\""));
  CHECK(contains(r.err, tmp.path() + "/b.toml:3:"));
  CHECK(contains(r.err, "ghost"));
  CHECK(contains(r.err, "2 problems in the specs"));
  CHECK_FALSE(contains(r.err, "cannot reach"));
}

TEST_CASE("an unreachable control plane is named with a hint", "[ctl]") {
  TempDir tmp;
  write_file(tmp.path() + "/a.toml", team_toml("acme"));
  const std::string url = "http://127.0.0.1:" + std::to_string(closed_port());
  auto r = run_ctl({"diff", "-f", tmp.path(), "--server", url});
  CHECK(r.code == 1);
  CHECK(contains(r.err, "error: cannot reach the control plane at " + url +
                            ": connection refused; is wrenn-cp running? set --server or "
                            "WRENN_URL"));
  r = run_ctl({"get", "hosts"}, {{"WRENN_URL", url}});
  CHECK(r.code == 1);
  CHECK(contains(r.err, "cannot reach the control plane at " + url));
}

TEST_CASE("diff apply and a second apply follow the exit codes", "[ctl]") {
  Fixture f;
  const std::string dir = f.specs("acme", {{"acme.toml", acme_specs()}});

  auto r = f.ctl({"diff", "-f", dir});
  INFO(r.err);
  CHECK(r.code == 2);
  CHECK(contains(r.out, "+ team acme\n"));
  CHECK(contains(r.out, "+ host edge-1\n"));
  CHECK(contains(r.out, "+ template acme/py\n"));
  CHECK(contains(r.out, "+ channel alerts\n"));
  CHECK(contains(r.out, "    display_name = \"Acme Corp\"\n"));
  CHECK(contains(r.out, "Plan: 4 to create, 0 to update, 0 to delete, 0 drifted.\n"));
  CHECK_FALSE(contains(r.out, "\033["));  // not a terminal: no colour

  // No terminal and no --yes: refused, nothing applied.
  r = f.ctl({"apply", "-f", dir});
  CHECK(r.code == 1);
  CHECK(contains(r.err, "stdin is not a terminal; pass --yes"));
  CHECK_FALSE(f.team_exists("acme"));

  r = f.ctl({"apply", "-f", dir, "--yes"});
  INFO(r.err);
  CHECK(r.code == 0);
  CHECK(
      contains(r.out, "Applied: 4 created, 0 updated, 0 deleted, 0 drift repaired, revision 1.\n"));
  CHECK(f.team_exists("acme"));

  r = f.ctl({"apply", "-f", dir, "--yes"});
  CHECK(r.code == 0);
  CHECK(contains(r.out, "No changes. The fleet matches " + dir + " (apply set acme).\n"));
  CHECK_FALSE(contains(r.out, "Applied"));
  r = f.ctl({"apply", "-f", dir});  // nothing to do: no question, no --yes needed
  CHECK(r.code == 0);
  r = f.ctl({"diff", "-f", dir});
  CHECK(r.code == 0);
  CHECK(contains(r.out, "No changes."));

  // A field change: ~ with old -> new, and -o json is the server's plan.
  write_file(dir + "/acme.toml", acme_specs(1024));
  r = f.ctl({"diff", "-f", dir});
  CHECK(r.code == 2);
  CHECK(contains(r.out, "~ template acme/py\n    memory_mb: 256 -> 1024\n"));
  CHECK(contains(r.out, "Plan: 0 to create, 1 to update, 0 to delete, 0 drifted.\n"));
  r = f.ctl({"diff", "-f", dir, "-o", "json"});
  CHECK(r.code == 2);
  json::value plan = json::parse(r.out);
  CHECK(plan.at("apply_set").as_string() == "acme");
  CHECK(plan.at("revision").as_int64() == 1);
  CHECK(plan.at("summary").at("update").as_int64() == 1);
  CHECK(plan.at("entries").as_array().size() == 1);

  // --set overrides the directory's name; an invalid name is the server's clear error.
  r = f.ctl({"diff", "-f", dir, "--set", "Bad Name"});
  CHECK(r.code == 1);
  CHECK(contains(r.err, "apply_set \"Bad Name\" is invalid"));
}

TEST_CASE("a wrong or missing API key is refused clearly", "[ctl]") {
  Fixture f;
  const std::string dir = f.specs("acme", {{"a.toml", team_toml("acme")}});
  auto r = run_ctl({"diff", "-f", dir, "--server", f.cp.url(), "--api-key", "wrn_wrong"});
  CHECK(r.code == 1);
  CHECK(contains(r.err, "the API key was refused by the control plane at " + f.cp.url() +
                            " (key from --api-key)"));
  r = run_ctl({"get", "hosts"}, {{"WRENN_URL", f.cp.url()}, {"WRENN_API_KEY", "wrn_wrong"}});
  CHECK(r.code == 1);
  CHECK(contains(r.err, "(key from WRENN_API_KEY)"));
  r = run_ctl({"get", "hosts", "--server", f.cp.url()});
  CHECK(r.code == 1);
  CHECK(contains(r.err, "requires an API key"));
  // A team's key is not an admin key: the envelope's message is printed.
  auto team = f.cp.create_team("plain");
  r = run_ctl({"get", "hosts", "--server", f.cp.url(), "--api-key", team.api_key});
  CHECK(r.code == 1);
  CHECK(contains(r.err, "error: "));
  CHECK(contains(r.err, "admin"));
}

TEST_CASE("prune deletes only the set's own members", "[ctl]") {
  Fixture f;
  const std::string alpha =
      f.specs("alpha", {{"teams.toml", team_toml("a-one") + team_toml("a-two")}});
  const std::string beta = f.specs("beta", {{"teams.toml", team_toml("b-one")}});
  REQUIRE(f.ctl({"apply", "-f", alpha, "--yes"}).code == 0);
  REQUIRE(f.ctl({"apply", "-f", beta, "--yes"}).code == 0);
  f.cp.create_team("rest-made");  // through the REST API, in no set

  write_file(alpha + "/teams.toml", team_toml("a-one"));
  auto r = f.ctl({"diff", "-f", alpha});
  CHECK(r.code == 0);  // without --prune nothing would change
  CHECK(contains(r.out,
                 "1 resource of this set is no longer declared; --prune deletes it:\n"
                 "    team a-two\n"));
  r = f.ctl({"diff", "-f", alpha, "--prune"});
  CHECK(r.code == 2);
  CHECK(contains(r.out, "- team a-two\n"));
  CHECK_FALSE(contains(r.out, "b-one"));
  CHECK(contains(r.out, "Plan: 0 to create, 0 to update, 1 to delete, 0 drifted.\n"));
  r = f.ctl({"apply", "-f", alpha, "--prune", "--yes"});
  CHECK(r.code == 0);
  CHECK(contains(r.out, "1 deleted"));

  CHECK(f.team_exists("a-one"));
  CHECK_FALSE(f.team_exists("a-two"));
  CHECK(f.team_exists("b-one"));
  auto db = f.cp.pool();
  auto c = db->acquire();
  CHECK(c->exec("SELECT 1 FROM teams WHERE slug LIKE 'rest-made%' AND deleted_at IS NULL").rows() ==
        1);
  CHECK(f.ctl({"diff", "-f", alpha, "--prune"}).code == 0);
}

TEST_CASE("an apply at a stale revision is refused with the conflict", "[ctl]") {
  Fixture f;
  const std::string one = f.specs("one", {{"a.toml", team_toml("t-one")}});
  const std::string two = f.specs("two", {{"a.toml", team_toml("t-two")}});
  auto r = f.ctl({"diff", "-f", one, "-o", "json"});
  REQUIRE(r.code == 2);
  const std::int64_t stale = json::parse(r.out).at("revision").as_int64();
  // Another apply lands in between (another process, another set).
  REQUIRE(f.ctl({"apply", "-f", two, "--yes"}).code == 0);
  r = f.ctl({"apply", "-f", one, "--yes", "--revision", std::to_string(stale)});
  CHECK(r.code == 1);
  CHECK(contains(r.err, "the fleet changed since this plan"));
  CHECK(contains(r.err, "nothing was applied"));
  CHECK_FALSE(f.team_exists("t-one"));
  // Planned afresh it goes through.
  CHECK(f.ctl({"apply", "-f", one, "--yes"}).code == 0);
  CHECK(f.team_exists("t-one"));
}

TEST_CASE("config file flags and environment follow their precedence", "[ctl]") {
  Fixture f;
  const std::string bad = "http://127.0.0.1:" + std::to_string(closed_port());
  const std::string cfg = f.tmp.path() + "/config.toml";
  write_file(cfg, "server = \"" + bad + "\"\napi_key = \"" + f.cp.admin_api_key() + "\"\n");

  // file only: its (unreachable) server is used
  auto r = run_ctl({"get", "apply-sets"}, {{"WRENN_CONFIG", cfg}});
  CHECK(r.code == 1);
  CHECK(contains(r.err, "cannot reach the control plane at " + bad));
  // env beats the file (the file's key still applies)
  r = run_ctl({"get", "apply-sets"}, {{"WRENN_CONFIG", cfg}, {"WRENN_URL", f.cp.url()}});
  CHECK(r.code == 0);
  CHECK(contains(r.out, "No apply sets yet."));
  // the flag beats the environment
  r = run_ctl({"get", "apply-sets", "--server", bad},
              {{"WRENN_CONFIG", cfg}, {"WRENN_URL", f.cp.url()}});
  CHECK(r.code == 1);
  CHECK(contains(r.err, bad));
  r = run_ctl({"get", "apply-sets", "--server", f.cp.url()}, {{"WRENN_CONFIG", cfg}});
  CHECK(r.code == 0);
  // the file in ~/.config/wrenn/config.toml (HOME)
  const std::string home = f.tmp.path() + "/home";
  fs::create_directories(home + "/.config/wrenn");
  write_file(home + "/.config/wrenn/config.toml",
             "server = \"" + f.cp.url() + "\"\napi_key = \"" + f.cp.admin_api_key() + "\"\n");
  r = run_ctl({"get", "apply-sets"}, {{"HOME", home}});
  CHECK(r.code == 0);
  // the env key beats the file's
  r = run_ctl({"get", "apply-sets"}, {{"HOME", home}, {"WRENN_API_KEY", "wrn_wrong"}});
  CHECK(r.code == 1);
  CHECK(contains(r.err, "the API key was refused"));
  // a broken file is named with its position
  write_file(cfg, "server = \"x\"\ncolour = true\n");
  r = run_ctl({"get", "apply-sets"}, {{"WRENN_CONFIG", cfg}});
  CHECK(r.code == 1);
  CHECK(contains(r.err, cfg + ":2:1: unknown key \"colour\""));
  r = run_ctl({"get", "apply-sets"}, {{"WRENN_CONFIG", f.tmp.path() + "/missing.toml"}});
  CHECK(r.code == 1);
  CHECK(contains(r.err, "does not exist"));
}

TEST_CASE("get lists live status and delete and host token work", "[ctl]") {
  Fixture f;
  const std::string dir = f.specs("acme", {{"acme.toml", acme_specs()}});
  REQUIRE(f.ctl({"apply", "-f", dir, "--yes"}).code == 0);

  auto r = f.ctl({"get", "hosts"});
  CHECK(r.code == 0);
  CHECK(contains(r.out, "NAME"));
  CHECK(contains(r.out, "LAST-HEARTBEAT"));
  CHECK(contains(r.out, "FREE-MEM"));
  CHECK(contains(r.out, "edge-1"));
  CHECK(contains(r.out, "awaiting-registration"));
  r = f.ctl({"get", "hosts", "-o", "wide"});
  CHECK(r.code == 0);
  CHECK(contains(r.out, "10.0.0.9:7443"));
  r = f.ctl({"get", "host", "edge-1"});
  CHECK(r.code == 0);
  CHECK(contains(r.out, "awaiting registration"));
  CHECK(contains(r.out, "host token edge-1"));
  r = f.ctl({"host", "token", "edge-1"});
  CHECK(r.code == 0);
  CHECK(contains(r.out, "wrenn-agent --cp-url " + f.cp.url() + " --listen 10.0.0.9:7443 --token "));

  r = f.ctl({"get", "templates"});
  CHECK(r.code == 0);
  CHECK(contains(r.out, "HOSTS-READY"));
  CHECK(contains(r.out, "acme/py"));
  CHECK(contains(r.out, "0/0"));  // no registered host: nothing built yet
  CHECK(contains(r.out, "py"));
  r = f.ctl({"get", "template", "acme/py"});
  CHECK(r.code == 0);
  CHECK(contains(r.out, "Builds:"));
  CHECK(contains(r.out, "memory_mb = 256"));
  r = f.ctl({"get", "teams", "-o", "json"});
  CHECK(r.code == 0);
  const json::value teams_json = json::parse(r.out);
  const json::array& teams = teams_json.at("resources").as_array();
  REQUIRE(teams.size() == 1);
  CHECK(teams[0].at("name").as_string() == "acme");
  CHECK(teams[0].at("live").at("members").as_int64() == 1);
  r = f.ctl({"get", "channels"});
  CHECK(r.code == 0);
  CHECK(contains(r.out, "https://hooks.example.com/wrenn"));
  CHECK_FALSE(contains(r.out, "s3cret"));
  r = f.ctl({"get", "apply-sets"});
  CHECK(r.code == 0);
  CHECK(contains(r.out, "acme"));
  r = f.ctl({"get", "apply-set", "acme"});
  CHECK(r.code == 0);
  CHECK(contains(r.out, "template"));

  r = f.ctl({"delete", "template", "acme/py"});
  CHECK(r.code == 1);
  CHECK(contains(r.err, "pass --yes"));
  r = f.ctl({"delete", "template", "acme/py", "--yes"});
  CHECK(r.code == 0);
  CHECK(contains(r.out, "Deleted template acme/py"));
  r = f.ctl({"get", "template", "acme/py"});
  CHECK(r.code == 1);
  CHECK(contains(r.err, "not declared"));
  // The spec still declares it: the plan creates it again.
  r = f.ctl({"diff", "-f", dir});
  CHECK(r.code == 2);
  CHECK(contains(r.out, "+ template acme/py"));
}

TEST_CASE("sandbox create exec and rm through a registered agent", "[ctl]") {
  enter_private_netns();
  Fixture f;
  const std::string agent_dir = f.tmp.path() + "/agent";
  fs::create_directories(agent_dir + "/images");
  fs::create_directory_symlink(busybox_template(), agent_dir + "/images/minimal");
  auto agent = f.cp.start_agent(agent_dir, {"--warm-slots", "0", "--ready-disks", "0"});

  auto r = f.ctl({"sandbox", "create", "--timeout", "300"});
  INFO(r.err);
  REQUIRE(r.code == 0);
  std::string id = r.out;
  while (!id.empty() && id.back() == '\n') id.pop_back();
  REQUIRE_FALSE(id.empty());

  r = f.ctl({"sandbox", "ls"});
  CHECK(r.code == 0);
  CHECK(contains(r.out, id));
  r = f.ctl({"sandbox", "exec", id, "--", "sh", "-c", "echo out; echo err >&2; exit 3"});
  CHECK(r.code == 3);
  CHECK(r.out == "out\n");
  CHECK(r.err == "err\n");
  r = f.ctl({"sandbox", "exec", id, "--", "echo", "hello world"});
  CHECK(r.code == 0);
  CHECK(r.out == "hello world\n");
  r = f.ctl({"sandbox", "exec", "sb-nonexistent", "--", "true"});
  CHECK(r.code == 1);
  CHECK(contains(r.err, "error: "));

  r = f.ctl({"sandbox", "rm", id});
  CHECK(r.code == 0);
  CHECK(contains(r.out, "Removed " + id));
  r = f.ctl({"sandbox", "ls", "-o", "json"});
  CHECK(r.code == 0);
  const json::value list = json::parse(r.out);
  for (auto& c : list.as_array())
    if (c.at("id").as_string() == id) CHECK(c.at("status").as_string() != "running");
}

TEST_CASE("https verifies the server certificate and --ca-cert trusts a private CA", "[ctl]") {
  // A TLS server with a self-signed certificate for localhost and 127.0.0.1 (openssl
  // s_server answers any request with an HTML page: the handshake is what is checked).
  TempDir tmp;
  const std::string cert = tmp.path() + "/cert.pem", key = tmp.path() + "/key.pem";
  const std::string gen =
      "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
      "-keyout " +
      key + " -out " + cert +
      " -days 1 -subj /CN=localhost -addext "
      "subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null";
  REQUIRE(std::system(gen.c_str()) == 0);
  const std::string port = std::to_string(closed_port());
  pid_t server = fork();
  REQUIRE(server >= 0);
  if (server == 0) {
    int null = open("/dev/null", O_RDWR);
    dup2(null, 0);
    dup2(null, 1);
    dup2(null, 2);
    execlp("openssl", "openssl", "s_server", "-accept", port.c_str(), "-cert", cert.c_str(), "-key",
           key.c_str(), "-www", static_cast<char*>(nullptr));
    _exit(127);
  }
  const std::string ip_url = "https://127.0.0.1:" + port;
  REQUIRE(wait_until([&] {
    return !contains(run_ctl({"get", "hosts", "--server", ip_url, "--api-key", "k"}).err,
                     "connection refused");
  }));
  auto r = run_ctl({"get", "hosts", "--server", ip_url, "--api-key", "k"});
  CHECK(r.code == 1);
  CHECK(contains(r.err, "TLS certificate verification failed"));
  // Trusted: the handshake succeeds (the page is not the API's JSON).
  r = run_ctl({"get", "hosts", "--server", ip_url, "--api-key", "k", "--ca-cert", cert});
  CHECK(r.code == 1);
  CHECK(contains(r.err, "invalid JSON"));
  r = run_ctl({"get", "hosts", "--api-key", "k"},
              {{"WRENN_URL", "https://localhost:" + port}, {"WRENN_CA_CERT", cert}});
  CHECK(contains(r.err, "invalid JSON"));
  // Trusted CA but a name the certificate does not carry.
  r = run_ctl({"get", "hosts", "--server", "https://127.0.0.2:" + port, "--api-key", "k",
               "--ca-cert", cert});
  CHECK(r.code == 1);
  CHECK(contains(r.err, "TLS certificate verification failed"));
  kill(server, SIGTERM);
  waitpid(server, nullptr, 0);
}
