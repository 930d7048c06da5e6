#include "cp_fixture.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/sysinfo.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <stdexcept>
#include <thread>

#include "auth/tokens.h"
#include "crypto/hash.h"
#include "crypto/ids.h"
#include "crypto/random.h"
#include "pg/migrate.h"

extern char** environ;

namespace wrenn::test {

namespace fs = std::filesystem;
namespace bhttp = boost::beast::http;

bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds budget) {
  const auto deadline = std::chrono::steady_clock::now() + budget;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return pred();
}

boost::json::value HttpReply::json() const {
  return boost::json::parse(body);
}

std::string HttpReply::error_code() const {
  boost::system::error_code ec;
  auto v = boost::json::parse(body, ec);
  if (ec || !v.is_object()) return {};
  auto* e = v.as_object().if_contains("error");
  if (!e || !e->is_object()) return {};
  auto* c = e->as_object().if_contains("code");
  return c && c->is_string() ? std::string(c->as_string()) : std::string();
}

std::string HttpReply::error_message() const {
  boost::system::error_code ec;
  auto v = boost::json::parse(body, ec);
  if (ec || !v.is_object()) return {};
  auto* e = v.as_object().if_contains("error");
  if (!e || !e->is_object()) return {};
  auto* m = e->as_object().if_contains("message");
  return m && m->is_string() ? std::string(m->as_string()) : std::string();
}

CpProcess::CpProcess(CpOptions options) : options_(std::move(options)) {
  dir_ = tmp_.path() + "/cp";
  fs::create_directories(dir_);
  log_path_ = tmp_.path() + "/wrenn-cp.log";
  if (options_.embedded_pg) {
    conninfo_ = "host='" + dir_ + "/pg/run' port=5432 user='wrenn' dbname='wrenn'";
  } else {
    pg_ = std::make_unique<PgServer>();
    conninfo_ = pg_->conninfo();
    if (options_.migrate) {
      auto p = pg_->make_pool(1);
      pg::migrate(*p);
    }
  }
  start();
}

CpProcess::~CpProcess() {
  stop();
}

std::unique_ptr<pg::Pool> CpProcess::pool() const {
  pg::PoolOptions o;
  o.conninfo = conninfo_;
  o.max_size = 4;
  o.connect_timeout = std::chrono::seconds(2);
  return std::make_unique<pg::Pool>(o);
}

std::string CpProcess::log() const {
  return read_file(log_path_);
}

bool CpProcess::running() const {
  int status;
  return pid_ > 0 && ::waitpid(pid_, &status, WNOHANG) == 0;
}

std::vector<std::string> CpProcess::environment() const {
  static const char* kOwned[] = {"DATABASE_URL", "WRENN_DIR", "JWT_SECRET", "WRENN_ENCRYPTION_KEY",
                                 "WRENN_CP_LISTEN_ADDR"};
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    std::string_view kv(*e);
    bool owned = false;
    for (const char* k : kOwned)
      if (kv.starts_with(std::string(k) + "=")) owned = true;
    if (!owned) env.emplace_back(kv);
  }
  if (!options_.embedded_pg) env.push_back("DATABASE_URL=" + conninfo_);
  env.push_back("WRENN_DIR=" + dir_);
  if (!options_.jwt_secret.empty()) env.push_back("JWT_SECRET=" + options_.jwt_secret);
  if (!options_.encryption_key.empty())
    env.push_back("WRENN_ENCRYPTION_KEY=" + options_.encryption_key);
  for (const auto& [k, v] : options_.env) env.push_back(k + "=" + v);
  return env;
}

namespace {

pid_t spawn_process(const std::vector<std::string>& args, const std::vector<std::string>& env,
                    const std::string& log_path) {
  int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) throw std::runtime_error("cannot create " + log_path);
  std::vector<char*> argv, envp;
  std::vector<std::string> a = args, e = env;
  for (auto& s : a) argv.push_back(s.data());
  argv.push_back(nullptr);
  for (auto& s : e) envp.push_back(s.data());
  envp.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::execve(argv[0], argv.data(), envp.data());
    ::_exit(127);
  }
  ::close(fd);
  if (pid < 0) throw std::runtime_error("fork failed");
  return pid;
}

}  // namespace

void CpProcess::spawn() {
  std::vector<std::string> args = {bin_dir() + "/wrenn-cp",
                                   "serve",
                                   "--listen",
                                   "127.0.0.1:0",
                                   "--heartbeat-timeout",
                                   std::to_string(options_.heartbeat_timeout.count()),
                                   "--reconcile-interval",
                                   std::to_string(options_.reconcile_interval.count()),
                                   "--monitor-interval",
                                   std::to_string(options_.monitor_interval.count())};
  args.insert(args.end(), options_.extra_args.begin(), options_.extra_args.end());
  pid_ = spawn_process(args, environment(), log_path_);
}

void CpProcess::start() {
  std::error_code ec;
  const std::size_t log_start = fs::exists(log_path_) ? fs::file_size(log_path_) : 0;
  spawn();
  port_ = 0;
  if (!options_.wait_ready) return;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    std::string l = log();
    l = l.substr(std::min(log_start, l.size()));
    auto pos = l.find("\"msg\":\"wrenn-cp listening\"");
    if (pos != std::string::npos) {
      auto p = l.find("\"port\":\"", pos);
      port_ = static_cast<unsigned short>(std::stoi(l.substr(p + 8)));
      admin_key_ = read_file(dir_ + "/admin-api-key");
      while (!admin_key_.empty() && std::isspace(static_cast<unsigned char>(admin_key_.back())))
        admin_key_.pop_back();
      return;
    }
    if (!running()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  throw std::runtime_error("wrenn-cp did not start; log:\n" + log());
}

int CpProcess::stop() {
  if (pid_ <= 0) return -1;
  int status = 0;
  if (::waitpid(pid_, &status, WNOHANG) == 0) {
    ::kill(pid_, SIGTERM);
    bool exited = false;
    for (int i = 0; i < 1500; ++i) {
      if (::waitpid(pid_, &status, WNOHANG) != 0) {
        exited = true;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (!exited) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
    }
  }
  pid_ = -1;
  return status;
}

std::pair<int, std::string> CpProcess::run_command(const std::vector<std::string>& args) const {
  std::vector<std::string> argv = {bin_dir() + "/wrenn-cp"};
  argv.insert(argv.end(), args.begin(), args.end());
  const std::string out = tmp_.path() + "/command-" + crypto::random_hex(4) + ".log";
  pid_t pid = spawn_process(argv, environment(), out);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, read_file(out)};
}

HttpReply CpProcess::request(bhttp::verb method, const std::string& target, const std::string& body,
                             const std::map<std::string, std::string>& headers) const {
  auto res = http_request(port_, method, target, body, headers);
  HttpReply r;
  r.status = res.result_int();
  r.body = res.body();
  for (const auto& f : res) {
    std::string name(f.name_string());
    for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    r.headers[name] = std::string(f.value());
  }
  return r;
}

HttpReply CpProcess::get(const std::string& target, const std::string& api_key) const {
  std::map<std::string, std::string> h;
  if (!api_key.empty()) h["X-API-Key"] = api_key;
  return request(bhttp::verb::get, target, "", h);
}

HttpReply CpProcess::post(const std::string& target, const std::string& body,
                          const std::string& api_key) const {
  std::map<std::string, std::string> h;
  if (!api_key.empty()) h["X-API-Key"] = api_key;
  h["Content-Type"] = "application/json";
  return request(bhttp::verb::post, target, body, h);
}

HttpReply CpProcess::del(const std::string& target, const std::string& api_key) const {
  std::map<std::string, std::string> h;
  if (!api_key.empty()) h["X-API-Key"] = api_key;
  return request(bhttp::verb::delete_, target, "", h);
}

TeamCreds CpProcess::create_team(const std::string& name) {
  TeamCreds t;
  t.team_id = ids::new_id(ids::Kind::kTeam);
  t.api_key = ids::new_api_key();
  std::string slug;
  for (char c : name)
    slug += std::isalnum(static_cast<unsigned char>(c))
                ? static_cast<char>(std::tolower(static_cast<unsigned char>(c)))
                : '-';
  slug = slug.substr(0, 40) + "-" + crypto::random_hex(4);
  auto p = pool();
  auto c = p->acquire();
  c->exec("INSERT INTO teams (id, name, slug) VALUES ($1, $2, $3)", t.team_id, name, slug);
  c->exec(
      "INSERT INTO team_api_keys (id, team_id, name, key_hash, key_prefix) "
      "VALUES ($1, $2, 'test', $3, $4)",
      ids::new_id(ids::Kind::kApiKey), t.team_id, crypto::sha256_hex(t.api_key),
      ids::api_key_prefix(t.api_key));
  return t;
}

std::pair<std::string, std::string> CpProcess::create_user(const std::string& team_id,
                                                           const std::string& role, bool is_admin) {
  const std::string user_id = ids::new_id(ids::Kind::kUser);
  const std::string email = "user-" + crypto::random_hex(6) + "@example.com";
  auto p = pool();
  auto c = p->acquire();
  c->exec("INSERT INTO users (id, email, name, is_admin) VALUES ($1, $2, 'Test User', $3)", user_id,
          email, is_admin);
  c->exec("INSERT INTO users_teams (user_id, team_id, role) VALUES ($1, $2, $3)", user_id, team_id,
          role);
  cp::auth::UserClaims claims;
  claims.user_id = user_id;
  claims.team_id = team_id;
  claims.role = role;
  claims.email = email;
  claims.name = "Test User";
  claims.is_admin = is_admin;
  return {user_id, cp::auth::sign_user_token(options_.jwt_secret, claims)};
}

std::pair<std::string, std::string> CpProcess::create_host() {
  auto r = post("/v1/hosts", R"({"type":"regular"})", admin_key_);
  if (r.status != 201) throw std::runtime_error("POST /v1/hosts: " + r.body);
  auto o = r.json().as_object();
  return {std::string(o.at("host").as_object().at("id").as_string()),
          std::string(o.at("registration_token").as_string())};
}

RegisteredHost CpProcess::register_agent(AgentProcess& agent, const std::string& runtime) {
  auto [host_id, token] = create_host();
  struct sysinfo si {};
  ::sysinfo(&si);
  boost::json::object body;
  body["token"] = token;
  body["address"] = "127.0.0.1:" + std::to_string(agent.port());
  body["agent_token"] = agent.token();
  body["arch"] = "x86_64";
  // Generous, so that placement never limits a test (the scheduler has tests of its own).
  body["cpu_cores"] = static_cast<std::int64_t>(std::max(16u, std::thread::hardware_concurrency()));
  body["memory_mb"] =
      static_cast<std::int64_t>(static_cast<unsigned long long>(si.totalram) * si.mem_unit >> 20);
  body["disk_gb"] = 1000;
  boost::json::array rts;
  rts.emplace_back(runtime);
  body["runtimes"] = std::move(rts);
  auto r = post("/v1/hosts/register", boost::json::serialize(body));
  if (r.status != 201) throw std::runtime_error("POST /v1/hosts/register: " + r.body);
  auto o = r.json().as_object();
  RegisteredHost h;
  h.host_id = host_id;
  h.host_token = std::string(o.at("token").as_string());
  h.refresh_token = std::string(o.at("refresh_token").as_string());
  h.cert_pem = std::string(o.at("cert_pem").as_string());
  h.ca_cert_pem = std::string(o.at("ca_cert_pem").as_string());
  // What the agent itself would have saved (registration.h), then the agent as it runs
  // when registered: TLS on the same port.
  boost::json::object creds;
  creds["host_id"] = host_id;
  creds["jwt"] = h.host_token;
  creds["refresh_token"] = h.refresh_token;
  creds["cp_url"] = url();
  creds["cert_pem"] = h.cert_pem;
  creds["key_pem"] = o.at("key_pem").as_string();
  creds["ca_cert_pem"] = h.ca_cert_pem;
  const std::string path = agent.dir() + "/host-credentials.json";
  {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) throw std::runtime_error("cannot create " + path);
    const std::string data = boost::json::serialize(creds);
    const bool ok = ::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size());
    ::close(fd);
    if (!ok) throw std::runtime_error("cannot write " + path);
  }
  auto args = agent.extra_args();
  args.insert(args.end(), {"--cp-url", url(), "--heartbeat-interval", "5"});
  agent.restart(args);
  if (!agent.tls())
    throw std::runtime_error("the agent did not come back with TLS:\n" + agent.log());
  return h;
}

CpAgent CpProcess::start_agent(const std::string& dir, std::vector<std::string> extra_args,
                               unsigned heartbeat_interval_s) {
  auto [host_id, token] = create_host();
  return start_agent_with_token(dir, host_id, token, std::move(extra_args), heartbeat_interval_s);
}

boost::json::object CpProcess::host(const std::string& host_id) const {
  auto r = get("/v1/hosts/" + host_id, admin_key_);
  if (r.status != 200) throw std::runtime_error("GET /v1/hosts/" + host_id + ": " + r.body);
  return r.json().as_object();
}

CpAgent CpProcess::start_agent_with_token(const std::string& dir, const std::string& host_id,
                                          const std::string& token,
                                          std::vector<std::string> extra_args,
                                          unsigned heartbeat_interval_s) {
  std::vector<std::string> args = {
      "--cp-url",  url(),       "--register",           token,
      "--address", "127.0.0.1", "--heartbeat-interval", std::to_string(heartbeat_interval_s)};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  CpAgent out;
  out.agent = std::make_unique<AgentProcess>(dir, args);
  out.host_id = host_id;
  // Online once the control plane answered; the credentials (renamed into place) once the
  // agent has the answer too.
  const bool online = wait_until([&] {
    auto h = host(host_id);
    return h.at("status").as_string() == "online" && h.contains("address") &&
           fs::exists(dir + "/host-credentials.json");
  });
  if (!online)
    throw std::runtime_error("the agent did not register; agent log:\n" + out.agent->log() +
                             "\ncontrol plane log:\n" + log());
  return out;
}

}  // namespace wrenn::test
