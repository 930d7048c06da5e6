#include "registration.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysinfo.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <boost/url/parse.hpp>
#include <cerrno>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "error.h"
#include "log.h"
#include "private_file.h"

namespace wrenn::agent {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;

namespace {

struct CpUrl {
  std::string host;
  std::string port;
  std::string prefix;  // "" or "/api"-like, without a trailing slash
};

CpUrl parse_cp_url(const std::string& url) {
  auto r = boost::urls::parse_uri(url);
  if (!r || r->scheme() != "http" || r->host().empty())
    throw Error(Code::kInvalidArgument,
                "control plane URL \"" + url +
                    "\" must look like http://host[:port] (https arrives with mutual TLS)");
  CpUrl u;
  u.host = std::string(r->host());
  if (u.host.size() >= 2 && u.host.front() == '[') u.host = u.host.substr(1, u.host.size() - 2);
  u.port = r->has_port() ? std::string(r->port()) : "80";
  u.prefix = std::string(r->encoded_path());
  while (!u.prefix.empty() && u.prefix.back() == '/') u.prefix.pop_back();
  return u;
}

struct HttpResult {
  unsigned status = 0;
  std::string body;
};

asio::awaitable<void> exchange(beast::tcp_stream& stream, tcp::resolver& resolver, const CpUrl& url,
                               bhttp::request<bhttp::string_body>& req,
                               std::chrono::milliseconds timeout, HttpResult& out) {
  auto eps = co_await resolver.async_resolve(url.host, url.port, asio::use_awaitable);
  stream.expires_after(timeout);
  co_await stream.async_connect(eps, asio::use_awaitable);
  co_await bhttp::async_write(stream, req, asio::use_awaitable);
  beast::flat_buffer buf;
  bhttp::response_parser<bhttp::string_body> parser;
  parser.body_limit(1 << 20);
  co_await bhttp::async_read(stream, buf, parser, asio::use_awaitable);
  out.status = parser.get().result_int();
  out.body = parser.get().body();
}

// One request on a fresh connection. Error(unavailable) when the control plane cannot be
// reached or does not answer in time.
HttpResult post(const CpUrl& url, const std::string& path, const std::string& body,
                const std::string& host_token, std::chrono::milliseconds timeout) {
  asio::io_context io;
  tcp::resolver resolver(io);
  beast::tcp_stream stream(io);
  bhttp::request<bhttp::string_body> req{bhttp::verb::post, url.prefix + path, 11};
  req.set(bhttp::field::host, url.host + ":" + url.port);
  req.set(bhttp::field::user_agent, "wrenn-agent");
  req.set(bhttp::field::content_type, "application/json");
  if (!host_token.empty()) req.set("X-Host-Token", host_token);
  req.body() = body;
  req.prepare_payload();
  HttpResult out;
  std::exception_ptr failure;
  asio::co_spawn(io, exchange(stream, resolver, url, req, timeout, out),
                 [&failure](std::exception_ptr e) { failure = e; });
  io.run();
  if (failure) {
    std::string why = "unknown error";
    try {
      std::rethrow_exception(failure);
    } catch (const std::exception& e) {
      why = e.what();
    }
    throw Error(Code::kUnavailable,
                "control plane " + url.host + ":" + url.port + " unreachable: " + why);
  }
  return out;
}

// The error message of a control-plane error envelope ("" when there is none).
std::string envelope_message(const std::string& body) {
  boost::system::error_code ec;
  auto v = boost::json::parse(body, ec);
  if (ec || !v.is_object()) return {};
  auto* err = v.as_object().if_contains("error");
  if (!err || !err->is_object()) return {};
  auto* msg = err->as_object().if_contains("message");
  return msg && msg->is_string() ? std::string(msg->as_string()) : std::string();
}

std::string get_string(const boost::json::object& o, std::string_view k) {
  auto* v = o.if_contains(k);
  return v && v->is_string() ? std::string(v->as_string()) : std::string();
}

// Host credentials from a register/refresh answer.
HostCredentials parse_credentials(const std::string& body, const std::string& cp_url) {
  boost::system::error_code ec;
  auto v = boost::json::parse(body, ec);
  if (ec || !v.is_object()) throw Error(Code::kInternal, "control plane answered with bad JSON");
  const auto& o = v.as_object();
  HostCredentials c;
  c.host_id = get_string(o, "host_id");
  if (c.host_id.empty())
    if (auto* h = o.if_contains("host"); h && h->is_object())
      c.host_id = get_string(h->as_object(), "id");
  c.host_token = get_string(o, "token");
  c.refresh_token = get_string(o, "refresh_token");
  c.cp_url = cp_url;
  c.cert_pem = get_string(o, "cert_pem");
  c.key_pem = get_string(o, "key_pem");
  c.ca_cert_pem = get_string(o, "ca_cert_pem");
  if (c.host_id.empty() || c.host_token.empty() || c.refresh_token.empty())
    throw Error(Code::kInternal, "control plane answer lacks host_id, token or refresh_token");
  return c;
}

}  // namespace

std::optional<HostCredentials> load_credentials(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return std::nullopt;
    throw errno_error(errno, "stat " + path);
  }
  if (st.st_mode & 077)
    throw Error(Code::kInvalidArgument, path + " is readable by group or others; chmod 600 it");
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  boost::system::error_code ec;
  auto v = boost::json::parse(ss.str(), ec);
  if (ec || !v.is_object()) throw Error(Code::kInvalidArgument, path + " is not valid JSON");
  const auto& o = v.as_object();
  HostCredentials c;
  c.host_id = get_string(o, "host_id");
  c.host_token = get_string(o, "jwt");
  c.refresh_token = get_string(o, "refresh_token");
  c.cp_url = get_string(o, "cp_url");
  c.cert_pem = get_string(o, "cert_pem");
  c.key_pem = get_string(o, "key_pem");
  c.ca_cert_pem = get_string(o, "ca_cert_pem");
  if (c.host_id.empty() || c.host_token.empty())
    throw Error(Code::kInvalidArgument, path + " lacks host_id or jwt");
  return c;
}

void save_credentials(const std::string& path, const HostCredentials& c) {
  boost::json::object o;
  o["host_id"] = c.host_id;
  o["jwt"] = c.host_token;
  o["refresh_token"] = c.refresh_token;
  o["cp_url"] = c.cp_url;
  if (c.has_certificate()) {
    o["cert_pem"] = c.cert_pem;
    o["key_pem"] = c.key_pem;
    o["ca_cert_pem"] = c.ca_cert_pem;
  }
  const std::string data = boost::json::serialize(o) + "\n";
  write_private_file(path, data, {.fsync = true, .owner = {}});
}

MachineSpecs collect_specs(const std::string& state_dir) {
  MachineSpecs s;
  utsname u{};
  if (::uname(&u) == 0) s.arch = u.machine;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) == 0) s.cpu_cores = CPU_COUNT(&set);
  if (s.cpu_cores <= 0) s.cpu_cores = ::sysconf(_SC_NPROCESSORS_ONLN);
  struct sysinfo si {};
  if (::sysinfo(&si) == 0)
    s.memory_mb = static_cast<std::int64_t>(static_cast<unsigned long long>(si.totalram) *
                                            si.mem_unit / (1024 * 1024));
  struct statvfs vfs {};
  if (::statvfs(state_dir.c_str(), &vfs) == 0)
    s.disk_gb = static_cast<std::int64_t>(static_cast<unsigned long long>(vfs.f_blocks) *
                                          vfs.f_frsize / (1024ULL * 1024 * 1024));
  return s;
}

std::string address_with_port(const std::string& address, std::uint16_t port) {
  if (address.empty()) return address;
  if (address.front() == '[') {
    if (address.find("]:") != std::string::npos) return address;
    return address + ":" + std::to_string(port);
  }
  const auto colons = std::count(address.begin(), address.end(), ':');
  if (colons == 1) return address;
  if (colons > 1) return "[" + address + "]:" + std::to_string(port);  // bare IPv6
  return address + ":" + std::to_string(port);
}

CpRegistration::CpRegistration(RegistrationOptions options)
    : options_(std::move(options)),
      credentials_path_(options_.state_dir + "/host-credentials.json") {}

CpRegistration::~CpRegistration() {
  stop();
}

void CpRegistration::start() {
  (void)parse_cp_url(options_.cp_url);
  creds_ = load_credentials(credentials_path_);
  if (creds_) {
    if (!options_.token.empty())
      log::info("already registered; ignoring --register",
                {{"host_id", creds_->host_id}, {"credentials", credentials_path_}});
  } else if (options_.token.empty()) {
    throw Error(Code::kFailedPrecondition,
                "not registered with the control plane: " + credentials_path_ +
                    " is missing; start once with --register <token> (from POST /v1/hosts)");
  } else if (options_.address.empty()) {
    throw Error(Code::kInvalidArgument, "--address ip:port is required to register");
  }
  thread_ = std::thread([this] { run(); });
}

void CpRegistration::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::string CpRegistration::host_id() const {
  std::lock_guard lock(mu_);
  return creds_ ? creds_->host_id : std::string();
}

bool CpRegistration::refresh(std::optional<HostCredentials>& creds) {
  const CpUrl url = parse_cp_url(options_.cp_url);
  boost::json::object rb;
  rb["refresh_token"] = creds->refresh_token;
  HttpResult rr =
      post(url, "/v1/hosts/auth/refresh", boost::json::serialize(rb), "", options_.request_timeout);
  if (rr.status != 200) {
    log::error("the control plane refused the refresh token; heartbeats stop",
               {{"status", std::to_string(rr.status)}, {"error", envelope_message(rr.body)}});
    return false;
  }
  creds = parse_credentials(rr.body, options_.cp_url);
  adopt(*creds);
  return true;
}

void CpRegistration::adopt(const HostCredentials& creds) {
  save_credentials(credentials_path_, creds);
  {
    std::lock_guard lock(mu_);
    creds_ = creds;
  }
  if (creds.has_certificate() && options_.on_credentials) {
    try {
      options_.on_credentials(creds);
    } catch (const std::exception& e) {
      log::error("cannot use the TLS certificate from the control plane", {{"error", e.what()}});
    }
  }
}

bool CpRegistration::wait(std::chrono::milliseconds d) {
  std::unique_lock lock(mu_);
  return !cv_.wait_for(lock, d, [this] { return stopping_; });
}

void CpRegistration::run() {
  const CpUrl url = parse_cp_url(options_.cp_url);
  const auto timeout = options_.request_timeout;
  std::optional<HostCredentials> creds;
  {
    std::lock_guard lock(mu_);
    creds = creds_;
  }

  // Registration.
  if (!creds) {
    const MachineSpecs specs = collect_specs(options_.state_dir);
    boost::json::object body;
    body["token"] = options_.token;
    body["address"] = options_.address;
    body["agent_token"] = options_.agent_token;
    body["arch"] = specs.arch;
    body["cpu_cores"] = specs.cpu_cores;
    body["memory_mb"] = specs.memory_mb;
    body["disk_gb"] = specs.disk_gb;
    boost::json::array rts;
    for (const auto& r : options_.runtimes) rts.emplace_back(r);
    body["runtimes"] = std::move(rts);
    const std::string text = boost::json::serialize(body);
    auto backoff = std::chrono::milliseconds(500);
    for (;;) {
      try {
        HttpResult res = post(url, "/v1/hosts/register", text, "", timeout);
        if (res.status == 201 || res.status == 200) {
          creds = parse_credentials(res.body, options_.cp_url);
          adopt(*creds);
          log::info("registered with the control plane", {{"host_id", creds->host_id},
                                                          {"address", options_.address},
                                                          {"credentials", credentials_path_}});
          break;
        }
        log::error("the control plane refused the registration",
                   {{"status", std::to_string(res.status)}, {"error", envelope_message(res.body)}});
        return;
      } catch (const std::exception& e) {
        log::warn("registration failed; retrying", {{"error", e.what()}});
      }
      if (!wait(backoff)) return;
      backoff = std::min<std::chrono::milliseconds>(backoff * 2, std::chrono::seconds(30));
    }
  }

  // Registered before mutual TLS: get a certificate now.
  if (!creds->has_certificate()) {
    bool refreshed = false;
    auto backoff = std::chrono::milliseconds(500);
    while (!refreshed) {
      try {
        log::info("no TLS certificate in the credentials; refreshing to get one",
                  {{"host_id", creds->host_id}});
        if (!refresh(creds)) return;
        refreshed = true;
      } catch (const std::exception& e) {
        log::warn("refresh failed; retrying", {{"error", e.what()}});
      }
      if (!refreshed && !wait(backoff)) return;
      backoff = std::min<std::chrono::milliseconds>(backoff * 2, std::chrono::seconds(30));
    }
  }

  // Heartbeats.
  std::uint64_t failures = 0;
  for (;;) {
    try {
      const std::string path = "/v1/hosts/" + creds->host_id + "/heartbeat";
      HttpResult res = post(url, path, "{}", creds->host_token, timeout);
      if (res.status == 401 || res.status == 403) {
        log::info("host token refused; refreshing it", {{"host_id", creds->host_id}});
        if (!refresh(creds)) return;
        res = post(url, path, "{}", creds->host_token, timeout);
      }
      if (res.status == 404) {
        log::warn(
            "the control plane deleted this host; heartbeats stop and its credentials are removed",
            {{"host_id", creds->host_id}, {"credentials", credentials_path_}});
        ::unlink(credentials_path_.c_str());
        return;
      }
      if (res.status == 204 || res.status == 200) {
        if (failures > 0)
          log::info("heartbeats reach the control plane again",
                    {{"after_failures", std::to_string(failures)}});
        failures = 0;
        ++heartbeats_;
      } else {
        ++failures;
        log::warn("heartbeat refused",
                  {{"status", std::to_string(res.status)}, {"error", envelope_message(res.body)}});
      }
    } catch (const std::exception& e) {
      if (failures++ % 10 == 0) log::warn("heartbeat failed", {{"error", e.what()}});
    }
    if (!wait(options_.heartbeat_interval)) return;
  }
}

}  // namespace wrenn::agent
