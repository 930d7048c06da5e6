#include "envd.h"

#include <sys/statfs.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>
#include <cmath>
#include <ctime>
#include <fstream>
#include <sstream>

#include "error.h"
#include "files_http.h"
#include "filesystem_service.h"
#include "http_errors.h"
#include "log.h"
#include "paths.h"
#include "process_service.h"

namespace wrenn::envd {

namespace bhttp = http::bhttp;
namespace json = boost::json;

namespace {

constexpr std::size_t kInitBodyLimit = 1 << 20;

void add_cors(bhttp::response<bhttp::string_body>& res) {
  res.set(bhttp::field::access_control_allow_origin, "*");
  res.set(bhttp::field::access_control_allow_methods, "HEAD, GET, POST, PUT, PATCH, DELETE");
  res.set(bhttp::field::access_control_allow_headers, "*");
  res.set(bhttp::field::access_control_expose_headers,
          "location, cache-control, x-content-type-options, connect-content-encoding, connect-protocol-version, "
          "grpc-encoding, grpc-message, grpc-status, grpc-status-details-bin");
  res.set(bhttp::field::access_control_max_age, "7200");
}

bhttp::response<bhttp::string_body> no_store(bhttp::status st) {
  auto res = http::make_response(st, "", "");
  res.set(bhttp::field::cache_control, "no-store");
  return res;
}

asio::awaitable<void> send_json(http::Exchange& ex, bhttp::status st, const json::value& v) {
  auto res = http::make_response(st, "application/json", json::serialize(v));
  res.set(bhttp::field::cache_control, "no-store");
  co_await ex.send(std::move(res));
}

// /init timestamp: a number of seconds (integer or fraction, JSON number or string) or an
// RFC 3339 string. Returns nanoseconds since the epoch.
long long parse_init_timestamp(const json::value& v) {
  auto from_seconds = [](double s) {
    if (!std::isfinite(s) || s < 0 || s > 1e11) throw Error(Code::kInvalidArgument, "timestamp is out of range");
    return static_cast<long long>(s * 1e9);
  };
  if (v.is_int64()) return from_seconds(static_cast<double>(v.as_int64()));
  if (v.is_uint64()) return from_seconds(static_cast<double>(v.as_uint64()));
  if (v.is_double()) return from_seconds(v.as_double());
  if (!v.is_string()) throw Error(Code::kInvalidArgument, "timestamp must be seconds or an RFC 3339 string");
  std::string s(v.as_string());
  char* end = nullptr;
  double d = std::strtod(s.c_str(), &end);
  if (!s.empty() && end && *end == '\0') return from_seconds(d);
  // RFC 3339: YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)
  std::tm tm{};
  int consumed = 0;
  if (std::sscanf(s.c_str(), "%4d-%2d-%2d%*1[Tt ]%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
                  &tm.tm_min, &tm.tm_sec, &consumed) != 6)
    throw Error(Code::kInvalidArgument, "timestamp \"" + s + "\" is neither seconds nor RFC 3339");
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  long long ns = 0;
  const char* p = s.c_str() + consumed;
  if (*p == '.') {
    ++p;
    long long scale = 100000000;
    while (*p >= '0' && *p <= '9') {
      ns += (*p - '0') * scale;
      scale /= 10;
      ++p;
    }
  }
  long offset = 0;
  if (*p == 'Z' || *p == 'z') {
    ++p;
  } else if (*p == '+' || *p == '-') {
    int hh = 0, mm = 0;
    if (std::sscanf(p + 1, "%2d:%2d", &hh, &mm) != 2)
      throw Error(Code::kInvalidArgument, "timestamp \"" + s + "\" has a malformed UTC offset");
    offset = (hh * 3600 + mm * 60) * (*p == '+' ? 1 : -1);
    p += 6;
  } else {
    throw Error(Code::kInvalidArgument, "timestamp \"" + s + "\" lacks a UTC offset");
  }
  if (*p != '\0') throw Error(Code::kInvalidArgument, "timestamp \"" + s + "\" has trailing characters");
  time_t secs = timegm(&tm) - offset;
  return static_cast<long long>(secs) * 1000000000LL + ns;
}

bool read_cpu(unsigned long long& total, unsigned long long& idle) {
  std::ifstream f("/proc/stat");
  std::string cpu;
  unsigned long long v[8] = {};
  if (!(f >> cpu) || cpu != "cpu") return false;
  for (auto& x : v) f >> x;
  idle = v[3] + v[4];
  total = 0;
  for (auto x : v) total += x;
  return true;
}

}  // namespace

Envd::Envd(boost::asio::io_context& io, Options opts)
    : io_(io), opts_(std::move(opts)), state_(opts_.etc_dir), processes_(io) {
  state_.set_env("WRENN_SANDBOX", "true");
  register_process_service(router_, state_, processes_);
  register_filesystem_service(router_, state_, io_);
  router_.set_interceptor([this](connect::CallContext& ctx) {
    if (state_.token_set() && !state_.token_matches(ctx.header("x-access-token")))
      throw Error(Code::kUnauthenticated, "missing or wrong X-Access-Token");
  });
}

void Envd::start() {
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(opts_.host, ec);
  if (ec) throw Error(Code::kInvalidArgument, "--host \"" + opts_.host + "\" is not an IP address");
  server_ = std::make_unique<http::Server>(io_, [this](http::Exchange& ex) { return handle(ex); });
  server_->listen({addr, opts_.port});
  // Sandbox marker for processes that check where they run.
  ::mkdir(opts_.run_dir.c_str(), 0755);
  if (std::ofstream m(opts_.run_dir + "/.WRENN_SANDBOX"); m) m << "true";
  read_cpu(last_cpu_total_, last_cpu_idle_);
  asio::co_spawn(
      io_,
      [this]() -> asio::awaitable<void> {
        asio::steady_timer t(io_);
        for (;;) {
          t.expires_after(std::chrono::seconds(1));
          auto [ec] = co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
          if (ec || !server_) co_return;
          unsigned long long total, idle;
          if (read_cpu(total, idle) && total > last_cpu_total_) {
            double dt = static_cast<double>(total - last_cpu_total_);
            double di = static_cast<double>(idle - last_cpu_idle_);
            cpu_used_pct_ = std::round((1.0 - di / dt) * 10000.0) / 100.0;
            last_cpu_total_ = total;
            last_cpu_idle_ = idle;
          }
        }
      },
      asio::detached);
  log::info("envd listening", {{"addr", opts_.host + ":" + std::to_string(port())}, {"version", kVersion}});
}

void Envd::stop() {
  if (server_) server_->stop();
}

unsigned short Envd::port() const { return server_ ? server_->local_endpoint().port() : opts_.port; }

void Envd::restore_if_needed(http::Exchange& ex) {
  if (server_ && server_->snapshot_prepared()) {
    server_->restore_after_snapshot(ex.connection_id());
    log::info("restored after snapshot: closed connections that predate it");
  }
}

asio::awaitable<void> Envd::handle(http::Exchange& ex) {
  auto path = ex.path();
  if (ex.method() == bhttp::verb::options) {
    bhttp::response<bhttp::string_body> res{bhttp::status::no_content, 11};
    add_cors(res);
    co_await ex.send(std::move(res));
    co_return;
  }
  if (router_.handles(path)) {
    co_await router_.serve(ex);
    co_return;
  }
  if (path == "/health") {
    restore_if_needed(ex);
    json::object o{{"version", kVersion}};
    co_await send_json(ex, bhttp::status::ok, o);
    co_return;
  }
  if (path == "/files") {
    co_await serve_files(ex, state_);
    co_return;
  }
  if (path == "/init") {
    co_await handle_init(ex);
    co_return;
  }
  // Every other endpoint requires the access token once one is set (the upstream never
  // enforced this).
  if (state_.token_set() && !state_.token_matches(ex.header("x-access-token"))) {
    co_await send_http_error(ex, 401, "missing or wrong X-Access-Token");
    co_return;
  }
  if (path == "/metrics" && ex.method() == bhttp::verb::get) {
    co_await handle_metrics(ex);
  } else if (path == "/envs" && ex.method() == bhttp::verb::get) {
    json::object o;
    for (auto& [k, v] : state_.env()) o[k] = v;
    co_await send_json(ex, bhttp::status::ok, o);
  } else if (path == "/snapshot/prepare" && ex.method() == bhttp::verb::post) {
    server_->prepare_for_snapshot(ex.connection_id());
    ex.close_after();
    co_await ex.send(no_store(bhttp::status::no_content));
    log::info("prepared for snapshot: keep-alive off, idle connections closed");
  } else if (path == "/metrics" || path == "/envs" || path == "/snapshot/prepare") {
    co_await send_http_error(ex, 405, "method " + std::string(ex.request().method_string()) + " not allowed on " +
                                          std::string(path));
  } else {
    co_await send_http_error(ex, 404, "no such endpoint: " + std::string(path));
  }
}

asio::awaitable<void> Envd::handle_init(http::Exchange& ex) {
  if (ex.method() != bhttp::verb::post) {
    co_await send_http_error(ex, 405, "/init takes POST");
    co_return;
  }
  std::optional<Error> failure;
  try {
    std::string body = co_await ex.read_all(kInitBodyLimit);
    json::object req;
    if (!body.empty()) {
      boost::system::error_code ec;
      auto v = json::parse(body, ec);
      if (ec) throw Error(Code::kInvalidArgument, "/init body is not valid JSON: " + ec.message());
      if (!v.is_object()) throw Error(Code::kInvalidArgument, "/init body must be a JSON object");
      req = std::move(v.as_object());
    }
    auto get_string = [&req](const char* key) -> std::optional<std::string> {
      auto* v = req.if_contains(key);
      if (!v || v->is_null()) return std::nullopt;
      if (!v->is_string()) throw Error(Code::kInvalidArgument, std::string(key) + " must be a string");
      return std::string(v->as_string());
    };
    auto token = get_string("accessToken");
    // Authorisation: nothing set yet, the caller holds the current token (header), or the
    // body repeats the current token.
    if (state_.token_set() && !state_.token_matches(ex.header("x-access-token")) &&
        !(token && state_.token_matches(*token))) {
      if (token && token->empty()) throw Error(Code::kUnauthenticated, "access token reset not authorized");
      throw Error(Code::kUnauthenticated, "access token mismatch");
    }
    bool apply = true;
    std::optional<long long> ts;
    if (auto* t = req.if_contains("timestamp"); t && !t->is_null()) {
      ts = parse_init_timestamp(*t);
      if (state_.last_init_ns && *ts <= *state_.last_init_ns) apply = false;  // stale
    }
    if (apply) {
      // Validate everything before changing anything.
      auto user = get_string("defaultUser");
      if (user && !user->empty() && !state_.users().find(*user))
        throw Error(Code::kInvalidArgument, "defaultUser \"" + *user + "\" does not exist in the sandbox");
      auto workdir = get_string("defaultWorkdir");
      if (workdir && !workdir->empty()) {
        if ((*workdir)[0] != '/') throw Error(Code::kInvalidArgument, "defaultWorkdir must be an absolute path");
        User any;
        *workdir = resolve_path(*workdir, any, std::nullopt);
      }
      std::vector<std::pair<std::string, std::string>> envs;
      if (auto* e = req.if_contains("envVars"); e && !e->is_null()) {
        if (!e->is_object()) throw Error(Code::kInvalidArgument, "envVars must be an object of strings");
        for (auto& [k, v] : e->as_object()) {
          if (!v.is_string()) throw Error(Code::kInvalidArgument, "envVars." + std::string(k) + " must be a string");
          if (k.empty() || std::string_view(k).find('=') != std::string_view::npos)
            throw Error(Code::kInvalidArgument, "envVars has an invalid name \"" + std::string(k) + "\"");
          envs.emplace_back(std::string(k), std::string(v.as_string()));
        }
      }
      for (auto& [k, v] : envs) state_.set_env(k, v);
      if (token) state_.set_token(*token);
      if (user && !user->empty()) state_.set_default_user(*user);
      if (workdir) state_.set_default_workdir(workdir->empty() ? std::nullopt : std::optional(*workdir));
      if (ts) state_.last_init_ns = ts;
    }
    restore_if_needed(ex);
  } catch (const Error& e) {
    failure = e;
  }
  if (failure) {
    co_await send_http_error(ex, *failure);
    co_return;
  }
  co_await ex.send(no_store(bhttp::status::no_content));
}

asio::awaitable<void> Envd::handle_metrics(http::Exchange& ex) {
  struct statfs sf {};
  if (::statfs("/", &sf) != 0) {
    co_await send_http_error(ex, 500, "statfs /: " + std::string(std::strerror(errno)));
    co_return;
  }
  unsigned long long mem_total = 0, mem_avail = 0;
  std::ifstream mi("/proc/meminfo");
  std::string key;
  unsigned long long val;
  std::string unit;
  while (mi >> key >> val >> unit) {
    if (key == "MemTotal:") mem_total = val * 1024;
    if (key == "MemAvailable:") mem_avail = val * 1024;
  }
  unsigned long long mem_used = mem_total > mem_avail ? mem_total - mem_avail : 0;
  unsigned long long disk_total = static_cast<unsigned long long>(sf.f_blocks) * sf.f_bsize;
  unsigned long long disk_free = static_cast<unsigned long long>(sf.f_bavail) * sf.f_bsize;
  json::object o;
  o["ts"] = static_cast<std::int64_t>(std::time(nullptr));
  o["cpu_count"] = static_cast<std::uint64_t>(::sysconf(_SC_NPROCESSORS_ONLN));
  o["cpu_used_pct"] = cpu_used_pct_;
  o["mem_total_mib"] = mem_total >> 20;
  o["mem_used_mib"] = mem_used >> 20;
  o["mem_total"] = mem_total;
  o["mem_used"] = mem_used;
  o["disk_used"] = disk_total > disk_free ? disk_total - disk_free : 0;
  o["disk_total"] = disk_total;
  co_await send_json(ex, bhttp::status::ok, o);
}

}  // namespace wrenn::envd
