// The spec library (src/spec): golden spec sets, valid and invalid with the exact
// diagnostics, the repository's own specs/, canonical JSON, content hash, field changes.
//
// Golden cases live in golden/<case>/: the *.toml files of one set and, for invalid sets,
// expected.txt with the exact diagnostics (file names relative to the case directory).
// WRENN_UPDATE_GOLDEN=1 rewrites expected.txt from the current output (review the diff!).
#include "spec/spec.h"

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

namespace fs = std::filesystem;
namespace json = boost::json;
using namespace wrenn::spec;

namespace {

std::string read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<SourceFile> case_files(const std::string& name) {
  std::vector<SourceFile> files;
  for (auto& e : fs::directory_iterator(fs::path(WRENN_SPEC_GOLDEN_DIR) / name))
    if (e.path().extension() == ".toml")
      files.push_back({e.path().filename().string(), read(e.path())});
  REQUIRE(!files.empty());
  return files;
}

std::string render(const std::vector<Diagnostic>& d) {
  std::string out;
  for (auto& x : d) out += x.str() + "\n";
  return out;
}

// Parses golden/<name> and compares its diagnostics with golden/<name>/expected.txt.
void check_golden(const std::string& name) {
  ParseResult r = parse_spec_files(case_files(name));
  fs::path expected = fs::path(WRENN_SPEC_GOLDEN_DIR) / name / "expected.txt";
  std::string got = render(r.diagnostics);
  if (const char* u = std::getenv("WRENN_UPDATE_GOLDEN"); u && std::string(u) == "1")
    std::ofstream(expected, std::ios::binary) << got;
  CHECK_FALSE(r.ok());
  CHECK(got == read(expected));
}

const HostSpec& host(const SpecSet& s, const std::string& name) {
  for (auto& h : s.hosts)
    if (h.name == name) return h;
  FAIL("no host " << name);
  throw;
}
const TemplateSpec& tmpl(const SpecSet& s, const std::string& name) {
  for (auto& t : s.templates)
    if (t.name == name) return t;
  FAIL("no template " << name);
  throw;
}

}  // namespace

TEST_CASE("valid golden set parses with defaults applied", "[spec]") {
  ParseResult r = parse_spec_files(case_files("valid"));
  INFO(render(r.diagnostics));
  REQUIRE(r.ok());
  REQUIRE(r.set.hosts.size() == 2);
  REQUIRE(r.set.templates.size() == 2);
  REQUIRE(r.set.teams.size() == 1);
  REQUIRE(r.set.channels.size() == 2);

  const HostSpec& web = host(r.set, "web-1");
  CHECK(web.address == "10.0.0.11:7443");
  CHECK(web.runtime == "auto");
  CHECK(web.state == "active");
  CHECK(web.labels == std::map<std::string, std::string>{{"role", "web"}, {"zone", "b"}});
  CHECK_FALSE(web.capacity.vcpus.has_value());
  CHECK_FALSE(web.capacity.max_sandboxes.has_value());
  CHECK(web.origin.at.file == "fleet.toml");
  CHECK(web.origin.at.line == 2);
  CHECK(web.origin.of("address").line == 4);
  CHECK(web.origin.of("address").column == 11);

  const HostSpec& gpu = host(r.set, "gpu-1");
  CHECK(gpu.address == "[fd00::2]:7443");
  CHECK(gpu.runtime == "firecracker");
  CHECK(gpu.state == "cordoned");
  CHECK(gpu.capacity.vcpus == 32);
  CHECK(gpu.capacity.memory_mb == 65536);
  CHECK_FALSE(gpu.capacity.disk_gb.has_value());
  CHECK(gpu.origin.of("capacity.memory_mb").line == 13);

  const TemplateSpec& py = tmpl(r.set, "python");
  CHECK(py.team == "acme");
  CHECK(py.base == "minimal");  // the seed template resolves without being declared
  CHECK(py.image.empty());
  CHECK(py.vcpus == 1);
  CHECK(py.memory_mb == 1024);
  CHECK(py.disk_mb == 8192);
  CHECK(py.user == "wrenn-user");
  CHECK(py.workdir == "/home/wrenn-user");
  CHECK(py.env ==
        std::map<std::string, std::string>{{"LANG", "C.UTF-8"}, {"PYTHONUNBUFFERED", "1"}});
  CHECK(py.build == std::vector<std::string>{"apk add python3", "python3 -m ensurepip"});
  CHECK(py.start == "python3 -m http.server 8000");
  REQUIRE(py.ready.has_value());
  CHECK(py.ready->command == "wget -q -O- http://127.0.0.1:8000/");
  CHECK(py.ready->timeout_sec == 60);
  CHECK(py.ready->interval_ms == 500);
  CHECK(py.present_on == std::map<std::string, std::string>{{"role", "web"}});

  const TemplateSpec& ml = tmpl(r.set, "python-ml");
  CHECK(ml.base == "python");
  CHECK(ml.vcpus == 4);
  CHECK(ml.memory_mb == 512);
  CHECK(ml.disk_mb == 4096);
  CHECK(ml.user == "root");
  CHECK(ml.workdir.empty());
  CHECK(ml.build.empty());
  CHECK_FALSE(ml.ready.has_value());
  CHECK(ml.present_on.empty());

  const TeamSpec& acme = r.set.teams[0];
  CHECK(acme.name == "acme");
  CHECK(acme.display_name == "Acme Corp");
  REQUIRE(acme.members.size() == 2);
  CHECK(acme.members[0].email == "al@acme.example");   // sorted by email
  CHECK(acme.members[0].role == "member");             // default role
  CHECK(acme.members[1].email == "zoe@acme.example");  // lower-cased
  CHECK(acme.members[1].role == "owner");
  CHECK(acme.limits.concurrent_sandboxes == 20);
  CHECK(acme.limits.vcpus == 40);
  CHECK_FALSE(acme.limits.memory_mb.has_value());
  REQUIRE(acme.api_keys.size() == 1);
  CHECK(acme.api_keys[0].name == "ci");
  CHECK(acme.api_keys[0].sha256 ==
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08");

  const ChannelSpec& slack = r.set.channels[0];
  CHECK(slack.name == "acme-alerts");
  CHECK(slack.provider == "slack");
  CHECK(slack.target.empty());
  REQUIRE(slack.secrets.count("webhook_url") == 1);
  CHECK(slack.secrets.at("webhook_url").env == "ACME_SLACK_WEBHOOK");
  CHECK(slack.events == std::vector<std::string>{"capsule.create", "host.down"});  // sorted
  const ChannelSpec& hook = r.set.channels[1];
  CHECK(hook.target == "https://hooks.acme.example/wrenn");
  CHECK(hook.secrets.at("signing_key").file == "/etc/wrenn/secrets/acme-hook");
}

TEST_CASE("valid golden set has the exact canonical JSON", "[spec]") {
  ParseResult r = parse_spec_files(case_files("valid"));
  REQUIRE(r.ok());
  CHECK(canonical_json(to_json(host(r.set, "web-1"))) ==
        R"({"address":"10.0.0.11:7443","capacity":{"disk_gb":null,"max_sandboxes":null,)"
        R"("memory_mb":null,"vcpus":null},"labels":{"role":"web","zone":"b"},"name":"web-1",)"
        R"("runtime":"auto","state":"active"})");
  CHECK(canonical_json(to_json(tmpl(r.set, "python-ml"))) ==
        R"({"base":"python","build":[],"disk_mb":4096,"env":{},"image":null,"memory_mb":512,)"
        R"("name":"python-ml","present_on":{},"ready":null,"start":"","team":"acme",)"
        R"("user":"root","vcpus":4,"workdir":""})");
  CHECK(canonical_json(to_json(r.set.teams[0])) ==
        R"({"api_keys":[{"name":"ci","sha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b8)"
        R"(22cd15d6c15b0f00a08"}],"display_name":"Acme Corp","limits":{"concurrent_sandboxes")"
        R"(:20,"memory_mb":null,"vcpus":40},"members":[{"email":"al@acme.example","role":)"
        R"("member"},{"email":"zoe@acme.example","role":"owner"}],"name":"acme"})");
  CHECK(canonical_json(to_json(r.set.channels[0])) ==
        R"({"events":["capsule.create","host.down"],"name":"acme-alerts","provider":"slack",)"
        R"("secrets":{"webhook_url":{"env":"ACME_SLACK_WEBHOOK"}},"target":"","team":"acme"})");
}

TEST_CASE("invalid golden unknown key suggests the closest key", "[spec][golden]") {
  check_golden("unknown_key");
}
TEST_CASE("invalid golden wrong type", "[spec][golden]") {
  check_golden("wrong_type");
}
TEST_CASE("invalid golden missing required field", "[spec][golden]") {
  check_golden("missing_required");
}
TEST_CASE("invalid golden duplicate name across two files names both", "[spec][golden]") {
  check_golden("duplicate_across_files");
}
TEST_CASE("invalid golden dangling references", "[spec][golden]") {
  check_golden("dangling_reference");
}
TEST_CASE("invalid golden base cycle", "[spec][golden]") {
  check_golden("base_cycle");
}
TEST_CASE("invalid golden bad enum values", "[spec][golden]") {
  check_golden("bad_enum");
}
TEST_CASE("invalid golden inline secret refused", "[spec][golden]") {
  check_golden("inline_secret");
}
TEST_CASE("invalid golden bad sha256", "[spec][golden]") {
  check_golden("bad_sha256");
}
TEST_CASE("invalid golden TOML syntax error with position", "[spec][golden]") {
  check_golden("syntax_error");
}
TEST_CASE("invalid golden bad names sizes and emails", "[spec][golden]") {
  check_golden("bad_values");
}

TEST_CASE("the repository specs dir parses without diagnostics", "[spec]") {
  ParseResult r = load_spec_dir(WRENN_SPECS_DIR);
  INFO(render(r.diagnostics));
  REQUIRE(r.ok());
  // As seeded by sql/0001_init.sql.
  REQUIRE(r.set.teams.size() == 1);
  CHECK(r.set.teams[0].name == "platform");
  CHECK(r.set.teams[0].display_name == "Platform");
  const TemplateSpec& minimal = tmpl(r.set, "minimal");
  CHECK(minimal.team == "platform");
  CHECK(minimal.image == "busybox");
  CHECK(minimal.vcpus == 1);
  CHECK(minimal.memory_mb == 512);
  CHECK(minimal.user == "root");
}

TEST_CASE("load_spec_dir reports a missing directory", "[spec]") {
  ParseResult r = load_spec_dir("/nonexistent/wrenn-specs");
  REQUIRE(r.diagnostics.size() == 1);
  CHECK(r.diagnostics[0].file == "/nonexistent/wrenn-specs");
  CHECK(r.diagnostics[0].message.find("cannot read the spec directory") == 0);
}

TEST_CASE("image builders match the images dir", "[spec]") {
  std::set<std::string> dirs;
  for (auto& e : fs::directory_iterator(WRENN_IMAGES_DIR))
    if (e.is_directory() && fs::exists(e.path() / "build.sh"))
      dirs.insert(e.path().filename().string());
  CHECK(dirs == std::set<std::string>(kImageBuilders.begin(), kImageBuilders.end()));
}

TEST_CASE("content hash is stable under key order and spelled-out defaults", "[spec]") {
  std::string a = R"(
[[team]]
name = "acme"
limits = { vcpus = 8, concurrent_sandboxes = 4 }
members = [{ email = "b@x.example" }, { email = "a@x.example", role = "admin" }]
)";
  std::string b = R"(
[[team]]
members = [{ role = "admin", email = "A@X.example" }, { email = "b@x.example", role = "member" }]
display_name = "acme"
name = "acme"
[team.limits]
concurrent_sandboxes = 4
vcpus = 8
)";
  ParseResult ra = parse_spec_files({{"a.toml", a}});
  ParseResult rb = parse_spec_files({{"b.toml", b}});
  REQUIRE(ra.ok());
  REQUIRE(rb.ok());
  std::string ha = content_hash(to_json(ra.set.teams[0]));
  CHECK(ha == content_hash(to_json(rb.set.teams[0])));
  CHECK(ha.size() == 64);
  CHECK(ha == content_hash(json::parse(canonical_json(to_json(ra.set.teams[0])))));

  std::string c = R"(
[[team]]
name = "acme"
limits = { vcpus = 9, concurrent_sandboxes = 4 }
members = [{ email = "b@x.example" }, { email = "a@x.example", role = "admin" }]
)";
  ParseResult rc = parse_spec_files({{"c.toml", c}});
  REQUIRE(rc.ok());
  CHECK(ha != content_hash(to_json(rc.set.teams[0])));
}

TEST_CASE("canonical_json sorts keys at every level", "[spec]") {
  json::value v = json::parse(R"({"b":{"z":1,"a":[{"y":2,"x":1}]},"a":null})");
  CHECK(canonical_json(v) == R"({"a":null,"b":{"a":[{"x":1,"y":2}],"z":1}})");
}

TEST_CASE("field_changes lists leaf changes by dotted path", "[spec]") {
  ParseResult r = parse_spec_files({{"a.toml", R"(
[[host]]
name = "h"
address = "10.0.0.1:7443"
labels = { "topology.zone" = "a", role = "web" }
[[team]]
name = "t"
limits = { vcpus = 8 }
)"},
                                    {"b.toml", R"(
[[host]]
name = "h2"
address = "10.0.0.2:7443"
state = "draining"
labels = { "topology.zone" = "b", gpu = "yes" }
capacity = { max_sandboxes = 10 }
[[team]]
name = "t2"
limits = { vcpus = 16, memory_mb = 4096 }
)"}});
  REQUIRE(r.ok());
  auto team_changes = field_changes(to_json(r.set.teams[0]), to_json(r.set.teams[1]));
  REQUIRE(team_changes.size() == 4);
  CHECK(team_changes[0] == FieldChange{"display_name", "t", "t2"});
  CHECK(team_changes[1] == FieldChange{"limits.memory_mb", nullptr, 4096});
  CHECK(team_changes[2] == FieldChange{"limits.vcpus", 8, 16});
  CHECK(team_changes[3] == FieldChange{"name", "t", "t2"});

  auto host_changes = field_changes(to_json(r.set.hosts[0]), to_json(r.set.hosts[1]));
  std::vector<std::string> paths;
  for (auto& c : host_changes) paths.push_back(c.path);
  CHECK(paths == std::vector<std::string>{"address", "capacity.max_sandboxes",
                                          "labels.\"topology.zone\"", "labels.gpu", "labels.role",
                                          "name", "state"});
  CHECK(host_changes[4] == FieldChange{"labels.role", "web", nullptr});
  CHECK(host_changes[3] == FieldChange{"labels.gpu", nullptr, "yes"});

  CHECK(field_changes(to_json(r.set.hosts[0]), to_json(r.set.hosts[0])).empty());
  // Arrays are compared as whole values.
  auto arr = field_changes(json::object{{"build", json::array{"a", "b"}}},
                           json::object{{"build", json::array{"b", "a"}}});
  REQUIRE(arr.size() == 1);
  CHECK(arr[0].path == "build");
}

TEST_CASE("diagnostics are sorted by file line and column", "[spec]") {
  ParseResult r = parse_spec_files({{"z.toml", "[[host]]\nname = 1\n"},
                                    {"a.toml", "[[team]]\nname = \"a\"\nfoo = 1\nbar = 2\n"}});
  REQUIRE(r.diagnostics.size() == 4);
  CHECK(r.diagnostics[0].str() == "a.toml:3:1: unknown key \"foo\" in team \"a\"");
  CHECK(r.diagnostics[1].str() == "a.toml:4:1: unknown key \"bar\" in team \"a\"");
  CHECK(r.diagnostics[2].file == "z.toml");
  CHECK(r.diagnostics[3].file == "z.toml");
}

TEST_CASE("shared addresses and api key hashes are refused", "[spec]") {
  const std::string hash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
  ParseResult r = parse_spec_files(
      {{"a.toml",
        "[[host]]\nname = \"h1\"\naddress = \"10.0.0.1:7443\"\n"
        "[[host]]\nname = \"h2\"\naddress = \"10.0.0.1:7443\"\n"
        "[[team]]\nname = \"t1\"\napi_keys = [{ name = \"ci\", sha256 = \"" +
            hash + "\" }]\n" +
            "[[team]]\nname = \"t2\"\napi_keys = [{ name = \"deploy\", sha256 = \"" + hash +
            "\" }]\n"}});
  REQUIRE(r.diagnostics.size() == 2);
  CHECK(r.diagnostics[0].str() ==
        "a.toml:6:11: host \"h2\": address \"10.0.0.1:7443\" is already host \"h1\"'s (at "
        "a.toml:3:11)");
  CHECK(r.diagnostics[1].str() ==
        "a.toml:10:1: team \"t2\": api key \"deploy\" has the same sha256 as api key \"ci\" of "
        "team \"t1\" (one key cannot belong to two places)");
}

TEST_CASE("a declared platform template reserves its name for other teams", "[spec]") {
  ParseResult r =
      parse_spec_files({{"a.toml",
                         "[[template]]\nname = \"py\"\nteam = \"platform\"\nimage = \"debian\"\n"
                         "[[team]]\nname = \"acme\"\n"
                         "[[template]]\nname = \"py\"\nteam = \"acme\"\nbase = \"minimal\"\n"}});
  REQUIRE(r.diagnostics.size() == 1);
  CHECK(r.diagnostics[0].str() ==
        "a.toml:8:8: template \"py\" of team \"acme\": the name is reserved by the platform "
        "template at a.toml:2:8");
}
