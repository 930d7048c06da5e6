#include "api/system_routes.h"

#include <cmath>
#include <cstdio>
#include <map>

#include "api/api_error.h"
#include "blocking.h"
#include "crypto/ids.h"
#include "server.h"
#include "store/audit.h"

namespace wrenn::cp {

namespace {

using bhttp::status;
using bhttp::verb;

std::string label_escape(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string number(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

bool is_rfc3339(std::string_view s) {
  // YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)
  auto digits = [&](std::size_t at, std::size_t n) {
    if (at + n > s.size()) return false;
    for (std::size_t i = at; i < at + n; ++i)
      if (s[i] < '0' || s[i] > '9') return false;
    return true;
  };
  if (!(digits(0, 4) && s.size() > 19 && s[4] == '-' && digits(5, 2) && s[7] == '-' &&
        digits(8, 2) && (s[10] == 'T' || s[10] == 't') && digits(11, 2) && s[13] == ':' &&
        digits(14, 2) && s[16] == ':' && digits(17, 2)))
    return false;
  std::size_t i = 19;
  if (i < s.size() && s[i] == '.') {
    ++i;
    std::size_t start = i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
    if (i == start) return false;
  }
  if (i < s.size() && (s[i] == 'Z' || s[i] == 'z')) return i + 1 == s.size();
  return i + 6 == s.size() && (s[i] == '+' || s[i] == '-') && digits(i + 1, 2) && s[i + 3] == ':' &&
         digits(i + 4, 2);
}

std::vector<std::string> split_list(const std::optional<std::string>& v) {
  std::vector<std::string> out;
  if (!v) return out;
  std::size_t i = 0;
  while (i <= v->size()) {
    std::size_t j = v->find(',', i);
    if (j == std::string::npos) j = v->size();
    std::string item = v->substr(i, j - i);
    if (!item.empty() && item.size() <= 64) out.push_back(item);
    i = j + 1;
  }
  return out;
}

asio::awaitable<void> health(RequestContext& rc) {
  boost::json::object o;
  o["status"] = "ok";
  o["version"] = cp_version();
  auto reply = rc.send_json(status::ok, o);
  co_await std::move(reply);
}

asio::awaitable<void> openapi(RequestContext& rc) {
  auto res = http::make_response(status::ok, "application/yaml", std::string(openapi_yaml()));
  auto reply = rc.send(std::move(res));
  co_await std::move(reply);
}

asio::awaitable<void> metrics(ServerContext& ctx, RequestContext& rc) {
  auto task = run_blocking(ctx.workers, [&ctx] {
    std::vector<std::pair<std::string, std::int64_t>> sandboxes, hosts;
    auto lease = ctx.db.acquire();
    auto s = lease->exec("SELECT status, count(*) FROM sandboxes GROUP BY status");
    for (int i = 0; i < s.rows(); ++i)
      sandboxes.emplace_back(std::string(s.text(i, 0)), s.as_int64(i, 1));
    auto h = lease->exec("SELECT status, count(*) FROM hosts GROUP BY status");
    for (int i = 0; i < h.rows(); ++i)
      hosts.emplace_back(std::string(h.text(i, 0)), h.as_int64(i, 1));
    return std::make_pair(sandboxes, hosts);
  });
  auto [sandboxes, hosts] = co_await std::move(task);
  std::string text = render_metrics(ctx.router.metrics(), sandboxes, hosts);
  auto res =
      http::make_response(status::ok, "text/plain; version=0.0.4; charset=utf-8", std::move(text));
  auto reply = rc.send(std::move(res));
  co_await std::move(reply);
}

asio::awaitable<void> audit_logs(ServerContext& ctx, RequestContext& rc) {
  audit::Query q;
  q.team_id = rc.caller().team_id;
  q.include_admin_scope =
      rc.caller().is_admin || rc.caller().role == "owner" || rc.caller().role == "admin";
  if (auto l = rc.query("limit")) {
    long n = 0;
    bool ok =
        !l->empty() && l->size() <= 9 && l->find_first_not_of("-0123456789") == std::string::npos;
    if (ok) {
      try {
        n = std::stol(*l);
      } catch (const std::exception&) {
        ok = false;
      }
    }
    if (!ok) throw ApiError(ApiCode::kInvalidRequest, "invalid query parameters: limit");
    q.limit = n < 1 ? 50 : static_cast<std::size_t>(std::min<long>(n, 200));
  }
  if (auto b = rc.query("before"); b && !b->empty()) {
    if (b->starts_with("log-")) {
      if (!ids::try_parse_id(ids::Kind::kAuditLog, *b))
        throw ApiError(ApiCode::kInvalidRequest, "invalid query parameters: before");
      q.before_id = *b;
    } else if (is_rfc3339(*b)) {
      q.before_time = *b;
    } else {
      throw ApiError(ApiCode::kInvalidRequest, "invalid query parameters: before");
    }
  }
  if (auto b = rc.query("before_id"); b && !b->empty()) {
    if (!ids::try_parse_id(ids::Kind::kAuditLog, *b))
      throw ApiError(ApiCode::kInvalidRequest, "invalid query parameters: before_id");
    if (q.before_id.empty() || q.before_id == *b) {
      q.before_id = *b;
    } else {
      throw ApiError(ApiCode::kInvalidRequest, "invalid query parameters: before_id");
    }
  }
  q.resource_types = split_list(rc.query("resource_type"));
  q.actions = split_list(rc.query("action"));
  auto task = run_blocking(ctx.workers, [&ctx, q] {
    auto lease = ctx.db.acquire();
    try {
      return audit::list(*lease, q);
    } catch (const Error& e) {
      if (e.code() == Code::kNotFound)
        throw ApiError(ApiCode::kInvalidRequest, "invalid query parameters: unknown cursor");
      throw;
    }
  });
  audit::Page page = co_await std::move(task);
  boost::json::object o;
  o["items"] = std::move(page.items);
  if (!page.next_before.empty()) {
    o["next_before"] = page.next_before;
    o["next_before_id"] = page.next_before;
  }
  auto reply = rc.send_json(status::ok, o);
  co_await std::move(reply);
}

}  // namespace

std::string render_metrics(const std::vector<RouteStats>& routes,
                           const std::vector<std::pair<std::string, std::int64_t>>& sandboxes,
                           const std::vector<std::pair<std::string, std::int64_t>>& hosts) {
  std::string out;
  out += "# HELP wrenn_cp_build_info The control plane's version.\n";
  out += "# TYPE wrenn_cp_build_info gauge\n";
  out += "wrenn_cp_build_info{version=\"" + label_escape(cp_version()) + "\"} 1\n";

  out += "# HELP wrenn_cp_http_requests_total HTTP requests by route pattern, method and status.\n";
  out += "# TYPE wrenn_cp_http_requests_total counter\n";
  for (const auto& r : routes)
    out += "wrenn_cp_http_requests_total{route=\"" + label_escape(r.route) + "\",method=\"" +
           label_escape(r.method) + "\",status=\"" + std::to_string(r.status) + "\"} " +
           std::to_string(r.count) + "\n";

  // The histogram per route and method (statuses summed).
  struct Agg {
    std::uint64_t count = 0;
    double sum = 0;
    std::array<std::uint64_t, kLatencyBuckets.size()> buckets{};
  };
  std::map<std::pair<std::string, std::string>, Agg> agg;
  for (const auto& r : routes) {
    Agg& a = agg[{r.route, r.method}];
    a.count += r.count;
    a.sum += r.seconds_sum;
    for (std::size_t i = 0; i < a.buckets.size(); ++i) a.buckets[i] += r.buckets[i];
  }
  out +=
      "# HELP wrenn_cp_http_request_duration_seconds HTTP request latency by route pattern and "
      "method.\n";
  out += "# TYPE wrenn_cp_http_request_duration_seconds histogram\n";
  for (const auto& [k, a] : agg) {
    const std::string labels =
        "route=\"" + label_escape(k.first) + "\",method=\"" + label_escape(k.second) + "\"";
    for (std::size_t i = 0; i < kLatencyBuckets.size(); ++i)
      out += "wrenn_cp_http_request_duration_seconds_bucket{" + labels + ",le=\"" +
             number(kLatencyBuckets[i]) + "\"} " + std::to_string(a.buckets[i]) + "\n";
    out += "wrenn_cp_http_request_duration_seconds_bucket{" + labels + ",le=\"+Inf\"} " +
           std::to_string(a.count) + "\n";
    out += "wrenn_cp_http_request_duration_seconds_sum{" + labels + "} " + number(a.sum) + "\n";
    out += "wrenn_cp_http_request_duration_seconds_count{" + labels + "} " +
           std::to_string(a.count) + "\n";
  }

  auto gauge = [&](const char* name, const char* help, const char* label,
                   std::vector<std::string> known,
                   const std::vector<std::pair<std::string, std::int64_t>>& values) {
    std::map<std::string, std::int64_t> m;
    for (const auto& k : known) m[k] = 0;
    for (const auto& [k, v] : values) m[k] = v;
    out += std::string("# HELP ") + name + " " + help + "\n";
    out += std::string("# TYPE ") + name + " gauge\n";
    for (const auto& [k, v] : m)
      out += std::string(name) + "{" + label + "=\"" + label_escape(k) + "\"} " +
             std::to_string(v) + "\n";
  };
  gauge("wrenn_cp_sandboxes", "Sandboxes (capsules) by state.", "state",
        {"pending", "starting", "running", "paused", "hibernated", "stopped", "missing", "error"},
        sandboxes);
  gauge("wrenn_cp_hosts", "Hosts by status.", "status",
        {"pending", "online", "unreachable", "draining", "offline"}, hosts);
  return out;
}

void register_system_routes(ServerContext& ctx) {
  ServerContext* c = &ctx;
  Router& r = ctx.router;
  r.add(verb::get, "/health", Access::kPublic, [](RequestContext& rc) { return health(rc); });
  r.add(verb::get, "/openapi.yaml", Access::kPublic,
        [](RequestContext& rc) { return openapi(rc); });
  r.add(verb::get, "/metrics", Access::kPublic,
        [c](RequestContext& rc) { return metrics(*c, rc); });
  r.add(verb::get, "/v1/audit-logs", Access::kTeam,
        [c](RequestContext& rc) { return audit_logs(*c, rc); });
}

}  // namespace wrenn::cp
