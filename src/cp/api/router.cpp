#include "api/router.h"

#include <algorithm>
#include <chrono>
#include <mutex>
#include <tuple>

#include "api/api_error.h"
#include "crypto/random.h"
#include "error.h"
#include "log.h"

namespace wrenn::cp {

namespace {

struct Segment {
  bool param = false;
  std::string text;  // literal text, or the parameter's name
};

struct Route {
  bhttp::verb method;
  std::string pattern;
  std::vector<Segment> segments;
  Access access;
  RouteHandler handler;
};

std::vector<std::string_view> split_path(std::string_view path) {
  std::vector<std::string_view> out;
  if (path.empty() || path == "/") return out;
  std::size_t i = path.front() == '/' ? 1 : 0;
  while (i <= path.size()) {
    std::size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    out.push_back(path.substr(i, j - i));
    i = j + 1;
  }
  return out;
}

// "/api/v1/x/" -> "/v1/x"; "/api" -> "/".
std::string_view normalize(std::string_view path) {
  if (path == "/api") return "/";
  if (path.starts_with("/api/")) path.remove_prefix(4);
  while (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
  return path;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string percent_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      int hi = hex_value(s[i + 1]), lo = hex_value(s[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

bool matches(const Route& r, const std::vector<std::string_view>& segs,
             std::map<std::string, std::string>* params) {
  if (r.segments.size() != segs.size()) return false;
  for (std::size_t i = 0; i < segs.size(); ++i) {
    const Segment& s = r.segments[i];
    if (s.param) {
      if (segs[i].empty()) return false;
    } else if (s.text != segs[i]) {
      return false;
    }
  }
  if (params) {
    for (std::size_t i = 0; i < segs.size(); ++i)
      if (r.segments[i].param) (*params)[r.segments[i].text] = percent_decode(segs[i]);
  }
  return true;
}

// True when a is more specific than b (the first segment where they differ in kind is
// literal in a).
bool more_specific(const Route& a, const Route& b) {
  for (std::size_t i = 0; i < a.segments.size() && i < b.segments.size(); ++i) {
    if (a.segments[i].param != b.segments[i].param) return !a.segments[i].param;
  }
  return false;
}

std::string error_name(std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    return ex.what();
  } catch (...) {
  }
  return "unknown exception";
}

bool internal_error(std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    return is_internal(ex);
  } catch (...) {
  }
  return true;
}

bhttp::response<bhttp::string_body> envelope_response(const ApiError& e) {
  return http::make_response(static_cast<bhttp::status>(e.status()), "application/json",
                             error_body(e));
}

}  // namespace

// ---- RequestContext ----

RequestContext::RequestContext(http::Exchange& ex, std::map<std::string, std::string> params,
                               std::string route, std::string request_id)
    : ex_(ex),
      params_(std::move(params)),
      route_(std::move(route)),
      request_id_(std::move(request_id)) {}

const std::string& RequestContext::param(const std::string& name) const {
  static const std::string kEmpty;
  auto it = params_.find(name);
  return it == params_.end() ? kEmpty : it->second;
}

asio::awaitable<boost::json::object> RequestContext::json_body(std::size_t limit) {
  std::string body;
  bool too_large = false;
  try {
    auto read = ex_.read_all(limit);
    body = co_await std::move(read);
  } catch (const Error& e) {
    if (e.code() != Code::kResourceExhausted) throw;
    too_large = true;
  }
  if (too_large)
    throw ApiError(ApiCode::kTooLarge,
                   "request body exceeds the limit of " + std::to_string(limit) + " bytes");
  boost::system::error_code ec;
  boost::json::value v = boost::json::parse(body, ec);
  if (ec || !v.is_object()) throw ApiError(ApiCode::kInvalidRequest, "invalid JSON body");
  co_return std::move(v.as_object());
}

asio::awaitable<void> RequestContext::send(bhttp::response<bhttp::string_body> res) {
  res.set("X-Request-Id", request_id_);
  status_ = res.result_int();
  auto op1 = ex_.send(std::move(res));
  co_await std::move(op1);
}

asio::awaitable<void> RequestContext::send_header(bhttp::response<bhttp::empty_body> res) {
  res.set("X-Request-Id", request_id_);
  status_ = res.result_int();
  auto op2 = ex_.send_header(std::move(res));
  co_await std::move(op2);
}

asio::awaitable<void> RequestContext::send_json(bhttp::status status, boost::json::value body) {
  std::string text = boost::json::serialize(body);
  text += '\n';
  auto res = http::make_response(status, "application/json", std::move(text));
  auto op = send(std::move(res));
  co_await std::move(op);
}

asio::awaitable<void> RequestContext::send_empty(bhttp::status status) {
  auto res = http::make_response(status, "", "");
  auto op = send(std::move(res));
  co_await std::move(op);
}

// ---- Router ----

struct Router::Impl {
  explicit Impl(Authenticator& a) : auth(a) {}
  Authenticator& auth;
  std::vector<Route> routes;

  mutable std::mutex mu;
  std::map<std::tuple<std::string, std::string, unsigned>, RouteStats> stats;

  void record(bhttp::verb method, const std::string& route, unsigned status, double seconds) {
    std::string m(bhttp::to_string(method));
    std::lock_guard lock(mu);
    RouteStats& s = stats[std::make_tuple(m, route, status)];
    if (s.count == 0) {
      s.method = m;
      s.route = route;
      s.status = status;
    }
    ++s.count;
    s.seconds_sum += seconds;
    for (std::size_t i = 0; i < kLatencyBuckets.size(); ++i)
      if (seconds <= kLatencyBuckets[i]) ++s.buckets[i];
  }
};

Router::Router(Authenticator& auth) : impl_(std::make_shared<Impl>(auth)) {}

void Router::add(bhttp::verb method, std::string pattern, Access access, RouteHandler handler) {
  if (pattern.empty() || pattern.front() != '/')
    throw Error(Code::kInvalidArgument, "route pattern must start with /: " + pattern);
  Route r;
  r.method = method;
  r.access = access;
  r.handler = std::move(handler);
  std::string norm(normalize(pattern));
  for (std::string_view s : split_path(norm)) {
    Segment seg;
    if (s.size() >= 2 && s.front() == '{' && s.back() == '}') {
      seg.param = true;
      seg.text = std::string(s.substr(1, s.size() - 2));
    } else {
      seg.text = std::string(s);
    }
    r.segments.push_back(std::move(seg));
  }
  for (const Route& o : impl_->routes) {
    if (o.method != method || o.segments.size() != r.segments.size()) continue;
    bool same = true;
    for (std::size_t i = 0; i < o.segments.size() && same; ++i)
      same = o.segments[i].param == r.segments[i].param &&
             (o.segments[i].param || o.segments[i].text == r.segments[i].text);
    if (same)
      throw Error(Code::kAlreadyExists, std::string("route ") +
                                            std::string(bhttp::to_string(method)) + " " + pattern +
                                            " is already registered");
  }
  r.pattern = std::move(norm);
  impl_->routes.push_back(std::move(r));
}

asio::awaitable<void> Router::serve(http::Exchange& ex) {
  const auto start = std::chrono::steady_clock::now();
  std::shared_ptr<Impl> impl = impl_;
  const std::string request_id = crypto::random_hex(8);
  const std::string path(normalize(ex.path()));
  const auto segs = split_path(path);

  const Route* best = nullptr;
  std::vector<bhttp::verb> allowed;
  for (const Route& r : impl->routes) {
    if (!matches(r, segs, nullptr)) continue;
    if (r.method != ex.method()) {
      allowed.push_back(r.method);
      continue;
    }
    if (!best || more_specific(r, *best)) best = &r;
  }
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };

  if (!best) {
    RequestContext rc(ex, {}, "unmatched", request_id);
    if (allowed.empty()) {
      auto res = envelope_response(ApiError(ApiCode::kNotFound, "no such endpoint"));
      auto op3 = rc.send(std::move(res));
      co_await std::move(op3);
    } else {
      std::string allow;
      for (auto m : allowed) {
        if (!allow.empty()) allow += ", ";
        allow += std::string(bhttp::to_string(m));
      }
      auto res = envelope_response(
          ApiError(ApiCode::kMethodNotAllowed, "method not allowed; use " + allow));
      res.set(bhttp::field::allow, allow);
      auto op4 = rc.send(std::move(res));
      co_await std::move(op4);
    }
    impl->record(ex.method(), "unmatched", rc.status(), elapsed());
    co_return;
  }

  std::map<std::string, std::string> params;
  matches(*best, segs, &params);
  RequestContext rc(ex, std::move(params), best->pattern, request_id);
  std::exception_ptr failure;
  try {
    auto auth_task = impl->auth.authenticate(ex, best->access);
    Caller caller = co_await std::move(auth_task);
    rc.set_caller(std::move(caller));
    auto task = best->handler(rc);
    co_await std::move(task);
  } catch (...) {
    failure = std::current_exception();
  }

  if (failure && (ex.responded() || rc.status() != 0)) {
    // Too late for an envelope: make the server drop the connection.
    log::warn(
        "request failed after the response started",
        {{"route", best->pattern}, {"request_id", request_id}, {"error", error_name(failure)}});
    impl->record(ex.method(), best->pattern, rc.status(), elapsed());
    throw Error(Code::kCanceled, "response aborted");
  }
  if (!failure && !ex.responded() && rc.status() == 0) {
    log::error("handler returned without responding",
               {{"route", best->pattern}, {"request_id", request_id}});
    failure = std::make_exception_ptr(ApiError(ApiCode::kInternalError, "no response"));
  }
  if (failure) {
    ApiError api = to_api_error(failure);
    if (internal_error(failure)) {
      log::error("request failed", {{"route", best->pattern},
                                    {"method", std::string(bhttp::to_string(ex.method()))},
                                    {"request_id", request_id},
                                    {"error", error_name(failure)}});
    } else if (api.status() >= 500) {
      log::warn("request failed", {{"route", best->pattern},
                                   {"request_id", request_id},
                                   {"code", std::string(api_code_name(api.code()))},
                                   {"error", api.what()}});
    }
    auto res = envelope_response(api);
    if (api.status() == 401 && best->access != Access::kHost)
      res.set(bhttp::field::www_authenticate, "Bearer");
    auto op5 = rc.send(std::move(res));
    co_await std::move(op5);
  }
  impl->record(ex.method(), best->pattern, rc.status(), elapsed());
}

std::vector<RouteStats> Router::metrics() const {
  std::lock_guard lock(impl_->mu);
  std::vector<RouteStats> out;
  out.reserve(impl_->stats.size());
  for (const auto& [k, v] : impl_->stats) out.push_back(v);
  return out;
}

}  // namespace wrenn::cp
