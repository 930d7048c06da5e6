// The capsule routes end to end: a real wrenn-cp on a throwaway PostgreSQL with a real
// wrenn-agent running busybox sandboxes (test/support/cp_fixture.h), driven over HTTP the
// way the Python SDK drives it (reference §14): every endpoint it calls, the JSON field
// names and types it reads, the error codes it maps, team scoping, idempotent create, and
// a 256 MiB streamed upload and download with the control plane's memory held flat.
#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <catch2/catch.hpp>
#include <chrono>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "cp_fixture.h"
#include "crypto/encoding.h"
#include "envd_fixture.h"

using namespace wrenn;
using namespace wrenn::test;
using namespace std::chrono_literals;
namespace json = boost::json;
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;

namespace {

// ---- HTTP -----------------------------------------------------------------------------

struct Reply {
  unsigned status = 0;
  std::string body;
  std::map<std::string, std::string> headers;
  json::value json() const { return json::parse(body); }
  // The error envelope's code ("" when the body is not one).
  std::string code() const {
    boost::system::error_code ec;
    auto v = json::parse(body, ec);
    if (ec || !v.is_object() || !v.as_object().contains("error")) return "";
    return std::string(v.at("error").at("code").as_string());
  }
  std::string message() const {
    return std::string(json::parse(body).at("error").at("message").as_string());
  }
};

class Api {
 public:
  Api(unsigned short port, std::string key) : port_(port), key_(std::move(key)) {}

  Reply call(bhttp::verb method, const std::string& target, const std::string& body = "",
             std::map<std::string, std::string> headers = {}) const {
    headers["X-API-Key"] = key_;
    if (!body.empty() && !headers.count("Content-Type"))
      headers["Content-Type"] = "application/json";
    auto res = http_request(port_, method, target, body, headers);
    Reply r;
    r.status = res.result_int();
    r.body = res.body();
    for (const auto& f : res) r.headers[std::string(f.name_string())] = std::string(f.value());
    return r;
  }
  Reply post(const std::string& target, const json::value& body,
             std::map<std::string, std::string> headers = {}) const {
    return call(bhttp::verb::post, target, json::serialize(body), std::move(headers));
  }
  Reply get(const std::string& target) const { return call(bhttp::verb::get, target); }
  Reply del(const std::string& target) const { return call(bhttp::verb::delete_, target); }

  unsigned short port() const { return port_; }
  const std::string& key() const { return key_; }

 private:
  unsigned short port_;
  std::string key_;
};

std::string multipart(const std::string& boundary,
                      const std::vector<std::pair<std::string, std::string>>& parts) {
  std::string body;
  for (const auto& [name, data] : parts) {
    body += "--" + boundary + "\r\nContent-Disposition: form-data; name=\"" + name + "\"";
    if (name == "file") body += "; filename=\"upload\"\r\nContent-Type: application/octet-stream";
    body += "\r\n\r\n" + data + "\r\n";
  }
  body += "--" + boundary + "--\r\n";
  return body;
}

Reply write_file(const Api& api, const std::string& id, const std::string& path,
                 const std::string& data, const std::string& route = "files/write") {
  const std::string b = "----wrenn-test-boundary-7f3a";
  return api.call(bhttp::verb::post, "/v1/capsules/" + id + "/" + route,
                  multipart(b, {{"path", path}, {"file", data}}),
                  {{"Content-Type", "multipart/form-data; boundary=" + b}});
}

Reply read_file(const Api& api, const std::string& id, const std::string& path,
                const std::string& route = "files/read") {
  json::object o;
  o["path"] = path;
  return api.post("/v1/capsules/" + id + "/" + route, o);
}

// ---- Large streamed transfers ----------------------------------------------------------

// Deterministic, binary (NULs, every byte value), never repeating per MiB: block k is a
// random MiB with k written into its first 8 bytes.
class Pattern {
 public:
  static constexpr std::size_t kBlock = 1 << 20;
  Pattern() : base_(kBlock, '\0') {
    std::mt19937_64 rng(42);
    for (auto& c : base_) c = static_cast<char>(rng());
  }
  void fill(std::uint64_t offset, char* out, std::size_t n) const {
    for (std::size_t i = 0; i < n;) {
      std::uint64_t block = (offset + i) / kBlock;
      std::size_t pos = (offset + i) % kBlock;
      std::size_t take = std::min(n - i, kBlock - pos);
      std::memcpy(out + i, base_.data() + pos, take);
      for (std::size_t k = pos; k < 8 && k < pos + take; ++k)
        out[i + k - pos] = static_cast<char>(block >> (8 * k));
      i += take;
    }
  }

 private:
  std::string base_;
};

std::uint64_t proc_status_kib(pid_t pid, const std::string& field) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(field + ":", 0) == 0) return std::stoull(line.substr(field.size() + 1));
  return 0;
}

// POST …/files/stream/write with a multipart body of `size` pattern bytes, written in
// 1 MiB pieces (the test never holds the file either).
Reply stream_upload(const Api& api, const std::string& id, const std::string& path,
                    std::uint64_t size, const Pattern& pattern) {
  const std::string b = "wrenn-stream-boundary-0a1b2c";
  const std::string pre =
      "--" + b + "\r\nContent-Disposition: form-data; name=\"path\"\r\n\r\n" + path + "\r\n--" + b +
      "\r\nContent-Disposition: form-data; name=\"file\"; "
      "filename=\"upload.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n";
  const std::string post = "\r\n--" + b + "--\r\n";
  asio::io_context io;
  tcp::socket s(io);
  s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), api.port()));
  std::string head = "POST /v1/capsules/" + id +
                     "/files/stream/write HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: " + api.key() +
                     "\r\nContent-Type: multipart/form-data; boundary=" + b +
                     "\r\nContent-Length: " + std::to_string(pre.size() + size + post.size()) +
                     "\r\nConnection: close\r\n\r\n" + pre;
  asio::write(s, asio::buffer(head));
  std::string piece(Pattern::kBlock, '\0');
  for (std::uint64_t off = 0; off < size; off += piece.size()) {
    std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(piece.size(), size - off));
    pattern.fill(off, piece.data(), n);
    asio::write(s, asio::buffer(piece.data(), n));
  }
  asio::write(s, asio::buffer(post));
  beast::flat_buffer buf;
  bhttp::response<bhttp::string_body> res;
  bhttp::read(s, buf, res);
  Reply r;
  r.status = res.result_int();
  r.body = res.body();
  return r;
}

struct Download {
  unsigned status = 0;
  std::string content_type;
  bool chunked = false;
  std::uint64_t bytes = 0;
  bool matches = true;  // every byte equals the pattern
};

// POST …/files/stream/read, checking the body against the pattern as it arrives.
Download stream_download(const Api& api, const std::string& id, const std::string& path,
                         const Pattern& pattern) {
  asio::io_context io;
  beast::tcp_stream s(io);
  s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), api.port()));
  bhttp::request<bhttp::string_body> req(bhttp::verb::post,
                                         "/v1/capsules/" + id + "/files/stream/read", 11);
  req.set(bhttp::field::host, "127.0.0.1");
  req.set("X-API-Key", api.key());
  req.set(bhttp::field::content_type, "application/json");
  json::object o;
  o["path"] = path;
  req.body() = json::serialize(o);
  req.prepare_payload();
  bhttp::write(s, req);
  beast::flat_buffer buf;
  bhttp::response_parser<bhttp::buffer_body> p;
  p.body_limit(boost::none);
  bhttp::read_header(s, buf, p);
  Download d;
  d.status = p.get().result_int();
  d.content_type = std::string(p.get()[bhttp::field::content_type]);
  d.chunked = p.chunked();
  std::vector<char> chunk(256 * 1024), expect(256 * 1024);
  while (!p.is_done()) {
    p.get().body().data = chunk.data();
    p.get().body().size = chunk.size();
    beast::error_code ec;
    bhttp::read(s, buf, p, ec);
    if (ec == bhttp::error::need_buffer) ec = {};
    if (ec) throw beast::system_error(ec);
    std::size_t n = chunk.size() - p.get().body().size;
    pattern.fill(d.bytes, expect.data(), n);
    if (std::memcmp(chunk.data(), expect.data(), n) != 0) d.matches = false;
    d.bytes += n;
  }
  return d;
}

// ---- Fixture ---------------------------------------------------------------------------

// A control plane with one registered agent (in this test's own network namespace) whose
// "minimal" template is the busybox test image, and two teams with an API key each.
class Env {
 public:
  Env() {
    enter_private_netns();
    cp_ = std::make_unique<CpProcess>();
    const std::string dir = tmp_.path() + "/agent";
    std::filesystem::create_directories(dir + "/images");
    std::filesystem::create_directory_symlink(busybox_template(), dir + "/images/minimal");
    agent_ = std::make_unique<AgentProcess>(
        dir, std::vector<std::string>{"--warm-slots", "0", "--ready-disks", "0"});
    cp_->register_agent(*agent_);
    auto a = cp_->create_team("alpha");
    auto b = cp_->create_team("beta");
    a_ = std::make_unique<Api>(cp_->port(), a.api_key);
    b_ = std::make_unique<Api>(cp_->port(), b.api_key);
  }

  const Api& team_a() const { return *a_; }
  CpProcess& cp() { return *cp_; }
  // SIGKILL, then a new wrenn-cp on the same database (new port: the Apis follow).
  void kill_and_restart_cp() {
    ::kill(cp_->pid(), SIGKILL);
    cp_->stop();
    cp_->start();
    a_ = std::make_unique<Api>(cp_->port(), a_->key());
    b_ = std::make_unique<Api>(cp_->port(), b_->key());
  }
  const Api& team_b() const { return *b_; }
  pid_t cp_pid() const { return cp_->pid(); }
  // What the SDK sends by default ({} with the template left out), sized for the tests.
  json::object create_body(int memory_mb = 256) const {
    json::object o;
    o["memory_mb"] = memory_mb;
    return o;
  }
  // Sandbox ids on the agent.
  std::set<std::string> agent_sandboxes() const {
    auto client = agent_->client();
    std::set<std::string> ids;
    for (const auto& s : list_sandboxes(*client)) ids.insert(s.sandbox_id());
    return ids;
  }

 private:
  TempDir tmp_;
  std::unique_ptr<CpProcess> cp_;
  std::unique_ptr<AgentProcess> agent_;
  std::unique_ptr<Api> a_, b_;
};

std::string create_capsule(const Api& api, const json::object& body = {}) {
  Reply r = api.post("/v1/capsules", body);
  INFO(r.body);
  REQUIRE(r.status == 201);
  return std::string(r.json().at("id").as_string());
}

json::object exec(const Api& api, const std::string& id, const std::string& script,
                  json::object extra = {}) {
  json::object o = std::move(extra);
  o["cmd"] = "/bin/sh";
  json::array args;
  args.emplace_back("-c");
  args.emplace_back(script);
  o["args"] = std::move(args);
  Reply r = api.post("/v1/capsules/" + id + "/exec", o);
  INFO(r.body);
  REQUIRE(r.status == 200);
  return r.json().as_object();
}

// The array of a reply (the body, or its field `key`), by value.
json::array items(const Reply& r, const char* key = nullptr) {
  json::value v = r.json();
  return key ? v.at(key).as_array() : v.as_array();
}

// A JSON string's text ("<kind>" for anything else, so comparisons fail visibly).
std::string str(const json::value& v) {
  return v.is_string() ? std::string(v.as_string()) : "<" + json::serialize(v) + ">";
}

bool is_rfc3339_seconds(const json::value& v) {
  if (!v.is_string()) return false;
  std::string s(v.as_string());
  // 2026-05-01T12:00:00Z
  return s.size() == 20 && s[4] == '-' && s[7] == '-' && s[10] == 'T' && s[13] == ':' &&
         s[16] == ':' && s[19] == 'Z';
}

void check_capsule_shape(const json::value& v) {
  const auto& o = v.as_object();
  CHECK(o.at("id").as_string().starts_with("cl-"));
  CHECK(o.at("id").as_string().size() == 28);
  CHECK(o.at("status").is_string());
  CHECK(o.at("template").is_string());
  CHECK(o.at("vcpus").is_int64());
  CHECK(o.at("memory_mb").is_int64());
  CHECK(o.at("timeout_sec").is_int64());
  CHECK(is_rfc3339_seconds(o.at("created_at")));
  CHECK(is_rfc3339_seconds(o.at("last_updated")));
  for (auto key : {"started_at", "last_active_at"})
    if (o.contains(key)) CHECK(is_rfc3339_seconds(o.at(key)));
  for (const auto& kv : o) CHECK_FALSE(kv.value().is_null());  // nullables are omitted
}

}  // namespace

// ---- Test cases ---------------------------------------------------------------------------

TEST_CASE("capsules: create get list pause resume ping destroy with the SDK's shapes") {
  Env env;
  const Api& api = env.team_a();

  // An empty body is not JSON (the SDK always sends at least {}).
  Reply r = api.call(bhttp::verb::post, "/v1/capsules");
  CHECK(r.status == 400);
  CHECK(r.code() == "invalid_request");
  CHECK(r.message() == "invalid JSON body");
  r = api.post("/v1/capsules", json::parse(R"({"template":"../x"})"));
  CHECK(r.status == 400);
  CHECK(r.code() == "invalid_request");
  r = api.post("/v1/capsules", json::parse(R"({"vcpus":1000})"));
  CHECK(r.status == 400);
  CHECK(r.message() == "vcpus must be between 0 and 64");
  r = api.post("/v1/capsules", json::parse(R"({"template":"no-such-template"})"));
  CHECK(r.status == 404);
  CHECK(r.code() == "not_found");

  r = api.post("/v1/capsules", env.create_body());
  INFO(r.body);
  REQUIRE(r.status == 201);
  json::value cap = r.json();
  check_capsule_shape(cap);
  const std::string id(cap.at("id").as_string());
  CHECK(cap.at("status") == "running");
  CHECK(cap.as_object().contains("started_at"));
  CHECK(cap.as_object().contains("last_active_at"));
  CHECK(cap.at("timeout_sec").as_int64() == 0);
  const std::string base = "/v1/capsules/" + id;

  r = api.get(base);
  REQUIRE(r.status == 200);
  check_capsule_shape(r.json());
  CHECK(r.json().at("status") == "running");
  CHECK(str(r.json().at("id")) == id);
  r = api.get("/api" + base);  // the dashboard's prefix
  CHECK(r.status == 200);

  r = api.get("/v1/capsules");
  REQUIRE(r.status == 200);
  REQUIRE(r.json().is_array());
  bool listed = false;
  for (const auto& c : items(r)) {
    check_capsule_shape(c);
    listed = listed || str(c.at("id")) == id;
  }
  CHECK(listed);

  // Pause / resume answer with the Capsule in its new state; wrong states are 409.
  r = api.post(base + "/resume", json::object());
  CHECK(r.status == 409);
  CHECK(r.code() == "invalid_state");
  r = api.post(base + "/pause", json::object());
  INFO(r.body);
  REQUIRE(r.status == 200);
  check_capsule_shape(r.json());
  CHECK(r.json().at("status") == "paused");
  r = api.post(base + "/pause", json::object());
  CHECK(r.status == 409);
  CHECK(r.code() == "invalid_state");
  r = api.post(base + "/ping", json::object());
  CHECK(r.status == 409);
  r = api.post(base + "/exec", json::parse(R"({"cmd":"true"})"));
  CHECK(r.status == 409);
  CHECK(r.code() == "invalid_state");
  CHECK(r.message() == "capsule is not running (status: paused)");
  r = api.post(base + "/resume", json::object());
  INFO(r.body);
  REQUIRE(r.status == 200);
  CHECK(r.json().at("status") == "running");
  CHECK(exec(api, id, "echo back").at("stdout") == "back\n");

  // Ping: 204, and last_active_at moves.
  std::this_thread::sleep_for(1100ms);
  const std::string before(api.get(base).json().at("last_active_at").as_string());
  r = api.post(base + "/ping", json::object());
  CHECK(r.status == 204);
  CHECK(r.body.empty());
  CHECK(std::string(api.get(base).json().at("last_active_at").as_string()) > before);

  // Destroy: 204, idempotent; the capsule stays readable as stopped and leaves the list.
  r = api.del(base);
  CHECK(r.status == 204);
  r = api.del(base);
  CHECK(r.status == 204);
  r = api.get(base);
  REQUIRE(r.status == 200);
  CHECK(r.json().at("status") == "stopped");
  for (const auto& c : items(api.get("/v1/capsules"))) CHECK(str(c.at("id")) != id);
  CHECK(env.agent_sandboxes().count(id) == 0);  // gone from the host too
  r = api.post(base + "/exec", json::parse(R"({"cmd":"true"})"));
  CHECK(r.status == 409);

  // Unknown and malformed ids.
  for (auto bad : {"/v1/capsules/cl-0000000000000000000000000", "/v1/capsules/nonsense",
                   "/v1/capsules/cl-ZZZ"}) {
    r = api.get(bad);
    CHECK(r.status == 404);
    CHECK(r.code() == "not_found");
    CHECK(r.message() == "capsule not found");
  }
}

TEST_CASE("capsules: another team's capsule is not found and create is idempotent") {
  Env env;
  const Api& a = env.team_a();
  const Api& b = env.team_b();
  const std::string id = create_capsule(a, env.create_body());
  const std::string base = "/v1/capsules/" + id;

  // Team B sees nothing of team A's capsule, whatever it tries.
  for (const auto& [method, path] : std::vector<std::pair<bhttp::verb, std::string>>{
           {bhttp::verb::get, base},
           {bhttp::verb::delete_, base},
           {bhttp::verb::post, base + "/pause"},
           {bhttp::verb::post, base + "/ping"},
           {bhttp::verb::post, base + "/exec"},
           {bhttp::verb::get, base + "/processes"},
           {bhttp::verb::delete_, base + "/processes/1"},
           {bhttp::verb::post, base + "/files/read"},
           {bhttp::verb::post, base + "/files/list"},
           {bhttp::verb::post, base + "/files/write"}}) {
    Reply r = b.call(method, path, R"({"cmd":"true","path":"/etc/hostname"})");
    INFO(path);
    CHECK(r.status == 404);
    CHECK(r.code() == "not_found");
  }
  for (const auto& c : items(b.get("/v1/capsules"))) CHECK(str(c.at("id")) != id);
  CHECK(a.get(base).json().at("status") == "running");  // B's DELETE did nothing

  // No key, a wrong key.
  CHECK(Api(a.port(), "").get(base).status == 401);
  CHECK(Api(a.port(), "wrn_00000000000000000000000000000000").get(base).status == 401);

  // Idempotency-Key: the same request twice is one capsule; another body is 409.
  json::object body = env.create_body();
  const std::map<std::string, std::string> key{{"Idempotency-Key", "retry-me-1"}};
  Reply first = a.post("/v1/capsules", body, key);
  INFO(first.body);
  REQUIRE(first.status == 201);
  const std::string idem(first.json().at("id").as_string());
  Reply again = a.post("/v1/capsules", body, key);
  INFO(again.body);
  REQUIRE((again.status == 200 || again.status == 201));
  CHECK(str(again.json().at("id")) == idem);
  CHECK(again.json().at("status") == "running");
  json::object other = body;
  other["timeout_sec"] = 77;
  Reply conflict = a.post("/v1/capsules", other, key);
  CHECK(conflict.status == 409);
  CHECK(conflict.code() == "conflict");
  // Keys are per team: B may use the same one for its own capsule.
  Reply theirs = b.post("/v1/capsules", body, key);
  REQUIRE(theirs.status == 201);
  CHECK(str(theirs.json().at("id")) != idem);
  int with_key = 0;
  for (const auto& c : items(a.get("/v1/capsules"))) with_key += str(c.at("id")) == idem;
  CHECK(with_key == 1);
  CHECK(env.agent_sandboxes().count(idem) == 1);
}

TEST_CASE("capsules: a failed create is recorded as error and a crash mid-create converges") {
  Env env;
  const Api& api = env.team_a();
  auto pool = env.cp().pool();
  // A template the database knows but the host does not have: the agent refuses.
  pool->acquire()->exec(
      "INSERT INTO templates (id, team_id, name, type) VALUES "
      "('tmpl-00000000000000000000000g1', 'team-0000000000000000000000000', 'ghost', 'base')");
  json::object ghost = env.create_body();
  ghost["template"] = "ghost";
  const std::map<std::string, std::string> ghost_key{{"Idempotency-Key", "ghost-1"}};
  Reply r = api.post("/v1/capsules", ghost, ghost_key);
  CHECK(r.status == 404);
  CHECK(r.code() == "not_found");
  auto rows =
      pool->acquire()->exec("SELECT id, status FROM sandboxes WHERE idempotency_key = 'ghost-1'");
  REQUIRE(rows.rows() == 1);
  const std::string failed(rows.text(0, 0));
  CHECK(rows.text(0, 1) == "error");
  CHECK(str(api.get("/v1/capsules/" + failed).json().at("status")) == "error");
  for (const auto& c : items(api.get("/v1/capsules"))) CHECK(str(c.at("id")) != failed);
  CHECK(env.agent_sandboxes().count(failed) == 0);
  auto audit = pool->acquire()->exec(
      "SELECT status FROM audit_logs WHERE resource_id = $1 AND action = 'create'", failed);
  REQUIRE(audit.rows() == 1);
  CHECK(audit.text(0, 0) == "error");
  // A retry of the failed request is told so (a new key makes a new attempt).
  r = api.post("/v1/capsules", ghost, ghost_key);
  CHECK(r.status == 409);
  CHECK(r.code() == "conflict");

  // The control plane dies while a create is in flight. Afterwards the row exists (the
  // first commit precedes the agent call); a retry with the same key finishes the job:
  // one capsule, running, recorded, on the host.
  json::object body = env.create_body();
  const std::map<std::string, std::string> key{{"Idempotency-Key", "crash-1"}};
  std::thread client([&] {
    try {
      api.post("/v1/capsules", body, key);
    } catch (const std::exception&) {
      // the connection dies with the control plane
    }
  });
  bool seen = false;
  for (int i = 0; i < 10000 && !seen; ++i) {
    seen =
        pool->acquire()->exec("SELECT 1 FROM sandboxes WHERE idempotency_key = 'crash-1'").rows() ==
        1;
    if (!seen) std::this_thread::sleep_for(1ms);
  }
  env.kill_and_restart_cp();
  client.join();
  REQUIRE(seen);
  const std::string status_after_crash(
      pool->acquire()
          ->exec("SELECT status FROM sandboxes WHERE idempotency_key = 'crash-1'")
          .text(0, 0));
  INFO("status right after the crash: " << status_after_crash);
  CHECK((status_after_crash == "pending" || status_after_crash == "running"));
  Reply retry = env.team_a().post("/v1/capsules", body, key);
  INFO(retry.body);
  REQUIRE((retry.status == 200 || retry.status == 201));
  const std::string id = str(retry.json().at("id"));
  CHECK(str(retry.json().at("status")) == "running");
  CHECK(pool->acquire()
            ->exec("SELECT count(*) FROM sandboxes WHERE idempotency_key = 'crash-1'")
            .text(0, 0) == "1");
  CHECK(env.agent_sandboxes().count(id) == 1);
  CHECK(str(exec(env.team_a(), id, "echo alive").at("stdout")) == "alive\n");
}

TEST_CASE("capsules: exec foreground and background with process list and kill") {
  Env env;
  const Api& api = env.team_a();
  const std::string id = create_capsule(api, env.create_body());
  const std::string base = "/v1/capsules/" + id;

  // The SDK's commands.run: /bin/sh -c, with its fields.
  json::object r = exec(api, id, "echo out; echo err >&2; exit 42");
  CHECK(str(r.at("sandbox_id")) == id);
  CHECK(r.at("cmd") == "/bin/sh");
  CHECK(r.at("stdout") == "out\n");
  CHECK(r.at("stderr") == "err\n");
  CHECK(r.at("exit_code").as_int64() == 42);
  CHECK(r.at("duration_ms").is_int64());
  CHECK(r.at("encoding") == "utf-8");

  // The default working directory is the user's home (the SDK's git helpers rely on /root),
  // and cmd is looked up in PATH.
  CHECK(str(exec(api, id, "pwd").at("stdout")) == "/root\n");
  Reply echo = api.post(base + "/exec", json::parse(R"({"cmd":"echo","args":["a b","c"]})"));
  REQUIRE(echo.status == 200);
  CHECK(str(echo.json().at("stdout")) == "a b c\n");
  CHECK(str(echo.json().at("cmd")) == "echo");

  // envs and cwd are honoured in the foreground (upstream ignored them).
  json::object extra;
  json::object envs;
  envs["GREETING"] = "hello there";
  extra["envs"] = envs;
  extra["cwd"] = "/tmp";
  r = exec(api, id, "echo \"$GREETING\"; pwd", extra);
  CHECK(r.at("stdout") == "hello there\n/tmp\n");

  // Binary output: both streams base64.
  r = exec(api, id, "printf '\\000\\377\\376'; echo text >&2");
  CHECK(r.at("encoding") == "base64");
  CHECK(crypto::base64_decode(std::string(r.at("stdout").as_string())) ==
        std::string("\x00\xff\xfe", 3));
  CHECK(crypto::base64_decode(std::string(r.at("stderr").as_string())) == "text\n");

  // duration and the caller's timeout (no other cap): 1 s sleep ~ 1000 ms; a 1 s limit on
  // a 30 s sleep is 504 agent_error and the command is gone.
  r = exec(api, id, "sleep 1");
  CHECK(r.at("duration_ms").as_int64() >= 900);
  json::object slow;
  slow["cmd"] = "/bin/sleep";
  slow["args"] = json::array{"30"};
  slow["timeout_sec"] = 1;
  Reply t = api.post(base + "/exec", slow);
  CHECK(t.status == 504);
  CHECK(t.code() == "agent_error");
  Reply bad = api.post(base + "/exec", json::parse(R"({"args":["x"]})"));
  CHECK(bad.status == 400);
  CHECK(bad.code() == "invalid_request");
  bad = api.post(base + "/exec", json::parse(R"({"cmd":"/no/such/binary"})"));
  CHECK(bad.status >= 400);

  // Background: 202 with pid and the caller's tag; generated tags are proc-<8 hex>.
  json::object bg;
  bg["cmd"] = "/bin/sh";
  bg["args"] = json::array{"-c", "sleep 300"};
  bg["background"] = true;
  bg["tag"] = "bg-test";
  Reply started = api.post(base + "/exec", bg);
  INFO(started.body);
  REQUIRE(started.status == 202);
  const auto pid = started.json().at("pid").as_int64();
  CHECK(pid > 0);
  CHECK(started.json().at("tag") == "bg-test");
  CHECK(str(started.json().at("sandbox_id")) == id);
  CHECK(started.json().at("cmd") == "/bin/sh");
  bg.erase("tag");
  Reply second = api.post(base + "/exec", bg);
  REQUIRE(second.status == 202);
  const std::string tag2(second.json().at("tag").as_string());
  CHECK(tag2.size() == 13);
  CHECK(tag2.rfind("proc-", 0) == 0);

  Reply list = api.get(base + "/processes");
  REQUIRE(list.status == 200);
  bool found = false;
  for (const auto& p : items(list, "processes")) {
    CHECK(p.at("pid").is_int64());
    CHECK(p.at("cmd").is_string());
    if (p.at("pid").as_int64() == pid) {
      found = true;
      CHECK(p.at("tag") == "bg-test");
      CHECK(p.at("args").as_array().size() == 2);
    }
  }
  CHECK(found);

  // Kill by pid (the SDK) and by tag; unknown ones are 404.
  Reply k = api.del(base + "/processes/" + std::to_string(pid));
  CHECK(k.status == 204);
  k = api.del(base + "/processes/" + tag2 + "?signal=SIGTERM");
  CHECK(k.status == 204);
  k = api.del(base + "/processes/no-such-tag");
  CHECK(k.status == 404);
  CHECK(k.code() == "not_found");
  bool gone = false;
  for (int i = 0; i < 50 && !gone; ++i) {
    gone = true;
    for (const auto& p : items(api.get(base + "/processes"), "processes"))
      if (p.at("pid").as_int64() == pid ||
          (p.as_object().contains("tag") && str(p.at("tag")) == tag2))
        gone = false;
    if (!gone) std::this_thread::sleep_for(100ms);
  }
  CHECK(gone);
}

TEST_CASE("capsules: files write read list mkdir remove and their errors") {
  Env env;
  const Api& api = env.team_a();
  const std::string id = create_capsule(api, env.create_body());
  const std::string base = "/v1/capsules/" + id;

  std::string binary;
  for (int i = 0; i < 70000; ++i) binary += static_cast<char>((i * 7) & 0xff);
  Reply w = write_file(api, id, "/tmp/deep/er/data.bin", binary);  // creates the parents
  INFO(w.body);
  CHECK(w.status == 204);
  Reply r = read_file(api, id, "/tmp/deep/er/data.bin");
  REQUIRE(r.status == 200);
  CHECK(r.headers["Content-Type"] == "application/octet-stream");
  CHECK(r.body == binary);
  // Overwrite; the stream routes read the same bytes; an empty file.
  CHECK(write_file(api, id, "/tmp/deep/er/data.bin", "short").status == 204);
  CHECK(read_file(api, id, "/tmp/deep/er/data.bin", "files/stream/read").body == "short");
  CHECK(write_file(api, id, "/tmp/empty", "", "files/stream/write").status == 204);
  r = read_file(api, id, "/tmp/empty");
  CHECK(r.status == 200);
  CHECK(r.body.empty());

  // files/write takes the file part before the path field too (stream/write does not).
  const std::string b = "bnd";
  Reply rev = api.call(bhttp::verb::post, base + "/files/write",
                       multipart(b, {{"file", "reversed"}, {"path", "/tmp/rev.txt"}}),
                       {{"Content-Type", "multipart/form-data; boundary=" + b}});
  CHECK(rev.status == 204);
  CHECK(read_file(api, id, "/tmp/rev.txt").body == "reversed");
  rev = api.call(bhttp::verb::post, base + "/files/stream/write",
                 multipart(b, {{"file", "reversed"}, {"path", "/tmp/rev2.txt"}}),
                 {{"Content-Type", "multipart/form-data; boundary=" + b}});
  CHECK(rev.status == 400);
  Reply bad = api.call(bhttp::verb::post, base + "/files/write", "{}");
  CHECK(bad.status == 400);
  CHECK(bad.code() == "invalid_request");
  bad = api.call(bhttp::verb::post, base + "/files/write", multipart(b, {{"file", "x"}}),
                 {{"Content-Type", "multipart/form-data; boundary=" + b}});
  CHECK(bad.status == 400);
  bad = write_file(api, id, "relative/path", "x");
  CHECK(bad.status == 400);

  // Missing file: 404 not_found (upstream said 502).
  r = read_file(api, id, "/tmp/does-not-exist");
  CHECK(r.status == 404);
  CHECK(r.code() == "not_found");
  r = read_file(api, id, "/tmp/does-not-exist", "files/stream/read");
  CHECK(r.status == 404);
  r = read_file(api, id, "tmp/relative");
  CHECK(r.status == 400);
  r = api.post(base + "/files/read", json::parse(R"({"path":"/a\u0000b"})"));
  CHECK(r.status == 400);

  // mkdir: 200 {entry}; again: 409 conflict (the SDK's make_dir relies on it).
  Reply m = api.post(base + "/files/mkdir", json::parse(R"({"path":"/tmp/newdir/sub"})"));
  INFO(m.body);
  REQUIRE(m.status == 200);
  const json::object entry = m.json().at("entry").as_object();
  CHECK(entry.at("name") == "sub");
  CHECK(entry.at("path") == "/tmp/newdir/sub");
  CHECK(entry.at("type") == "directory");
  m = api.post(base + "/files/mkdir", json::parse(R"({"path":"/tmp/newdir/sub"})"));
  CHECK(m.status == 409);
  CHECK(m.code() == "conflict");

  // list with depth 1 and 2: FileEntry fields and types.
  CHECK(write_file(api, id, "/tmp/newdir/sub/f.txt", "12345").status == 204);
  Reply l = api.post(base + "/files/list", json::parse(R"({"path":"/tmp/newdir","depth":1})"));
  REQUIRE(l.status == 200);
  auto entries = l.json().at("entries").as_array();
  REQUIRE(entries.size() == 1);
  CHECK(entries[0].at("name") == "sub");
  l = api.post(base + "/files/list", json::parse(R"({"path":"/tmp/newdir","depth":2})"));
  REQUIRE(l.status == 200);
  entries = l.json().at("entries").as_array();
  REQUIRE(entries.size() == 2);
  const auto& f = entries[1].as_object();
  CHECK(f.at("name") == "f.txt");
  CHECK(f.at("path") == "/tmp/newdir/sub/f.txt");
  CHECK(f.at("type") == "file");
  CHECK(f.at("size").as_int64() == 5);
  CHECK(f.at("mode").is_int64());
  CHECK(f.at("permissions").as_string().size() == 10);
  CHECK(f.at("owner").is_string());
  CHECK(f.at("group").is_string());
  CHECK(f.at("modified_at").as_int64() > 1700000000);
  CHECK_FALSE(f.contains("symlink_target"));
  l = api.post(base + "/files/list", json::parse(R"({"path":"/tmp/nope"})"));
  CHECK(l.status == 404);

  // remove: recursive, 204.
  CHECK(api.post(base + "/files/remove", json::parse(R"({"path":"/tmp/newdir"})")).status == 204);
  CHECK(read_file(api, id, "/tmp/newdir/sub/f.txt").status == 404);
}

TEST_CASE("capsules: 256 MiB stream upload and download in constant control-plane memory") {
  Env env;
  const Api& api = env.team_a();
  const std::string id = create_capsule(api, env.create_body(1024));
  const Pattern pattern;
  constexpr std::uint64_t kSize = 256ull << 20;
  const pid_t cp = env.cp_pid();
  // Warm up (first-use allocations), then measure from here.
  REQUIRE(write_file(api, id, "/tmp/warm", std::string(1 << 20, 'w')).status == 204);
  REQUIRE(read_file(api, id, "/tmp/warm").status == 200);
  const std::uint64_t rss_before = proc_status_kib(cp, "VmRSS");

  auto t0 = std::chrono::steady_clock::now();
  Reply up = stream_upload(api, id, "/tmp/big.bin", kSize, pattern);
  INFO(up.body);
  REQUIRE(up.status == 204);
  auto t1 = std::chrono::steady_clock::now();
  Download down = stream_download(api, id, "/tmp/big.bin", pattern);
  auto t2 = std::chrono::steady_clock::now();
  CHECK(down.status == 200);
  CHECK(down.content_type == "application/octet-stream");
  CHECK(down.chunked);
  CHECK(down.bytes == kSize);
  CHECK(down.matches);

  const std::uint64_t hwm_after = proc_status_kib(cp, "VmHWM");
  [[maybe_unused]] const std::uint64_t growth_kib =
      hwm_after > rss_before ? hwm_after - rss_before : 0;
  WARN("256 MiB upload " << std::chrono::duration<double>(t1 - t0).count() << " s, download "
                         << std::chrono::duration<double>(t2 - t1).count()
                         << " s; control plane RSS " << rss_before / 1024 << " MiB before, peak "
                         << hwm_after / 1024 << " MiB");
#ifndef WRENN_SANITIZE_BUILD
  CHECK(growth_kib < 64 * 1024);
#endif
  // The file in the sandbox has the size that was sent.
  CHECK(str(exec(api, id, "wc -c < /tmp/big.bin").at("stdout")) == std::to_string(kSize) + "\n");
}

TEST_CASE(
    "capsules: PostgreSQL restarted while requests run - the control plane recovers by itself") {
  Env env;
  const Api& api = env.team_a();
  const std::string before = create_capsule(api, env.create_body());

  // Clients keep calling while the database goes away and comes back. Every answer is
  // either a success or an error envelope (never a hang, a crash or a half answer).
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0}, malformed{0};
  std::vector<std::thread> clients;
  std::mutex created_mu;
  std::vector<std::string> created;
  for (int t = 0; t < 3; ++t)
    clients.emplace_back([&, t] {
      while (!stop) {
        try {
          Reply r = t == 0 ? api.post("/v1/capsules", env.create_body())
                           : api.get("/v1/capsules/" + before);
          if (r.status / 100 == 2) {
            ++ok;
            if (t == 0) {
              std::lock_guard g(created_mu);
              created.push_back(str(r.json().at("id")));
            }
          } else if (!r.code().empty()) {
            ++failed;
          } else {
            ++malformed;
          }
        } catch (const std::exception&) {
          ++malformed;
        }
        std::this_thread::sleep_for(20ms);
      }
    });
  std::this_thread::sleep_for(300ms);
  env.cp().pg()->stop();
  std::this_thread::sleep_for(1500ms);
  env.cp().pg()->start();
  // Recovered without a restart of wrenn-cp: reads and creates work again.
  CHECK(wait_until([&] { return api.get("/v1/capsules/" + before).status == 200; }, 20s));
  std::this_thread::sleep_for(500ms);
  stop = true;
  for (auto& c : clients) c.join();
  INFO("ok " << ok << ", error envelopes " << failed << ", malformed " << malformed);
  CHECK(failed > 0);  // the outage was seen
  CHECK(malformed == 0);
  CHECK(::kill(env.cp_pid(), 0) == 0);
  const std::string after = create_capsule(api, env.create_body());
  CHECK(str(exec(api, after, "echo back").at("stdout")) == "back\n");

  // Nothing is half-recorded: every capsule a client was told about is running and on the
  // host; every other row settled to error (its create failed) or is a running capsule
  // the host has.
  auto agent_ids = env.agent_sandboxes();
  for (const auto& id : created) {
    INFO(id);
    CHECK(str(api.get("/v1/capsules/" + id).json().at("status")) == "running");
    CHECK(agent_ids.count(id) == 1);
  }
  auto rows = env.cp().pool()->acquire()->exec("SELECT id, status FROM sandboxes");
  for (int i = 0; i < rows.rows(); ++i) {
    const std::string id(rows.text(i, 0)), status(rows.text(i, 1));
    INFO(id << " " << status);
    if (status == "running") CHECK(agent_ids.count(id) == 1);
    CHECK((status == "running" || status == "error" || status == "pending"));
  }
}
