#include "api/host_routes.h"

#include <algorithm>
#include <memory>
#include <tuple>

#include "api/api_error.h"
#include "api/json_fields.h"
#include "auth/host_ca.h"
#include "auth/tokens.h"
#include "blocking.h"
#include "crypto/ca.h"
#include "crypto/ids.h"
#include "events/event.h"
#include "hosts/host_directory.h"
#include "log.h"
#include "store/audit.h"
#include "store/hosts.h"
#include "store/sql.h"
#include "store/teams.h"

namespace wrenn::cp {

namespace {

using json = boost::json::value;
using bhttp::status;
using bhttp::verb;
namespace jf = json_fields;

struct Deps {
  ServerContext& ctx;
  auth::Secrets secrets;
};

std::string parse_host_id(const std::string& text) {
  if (!ids::try_parse_id(ids::Kind::kHost, text))
    throw ApiError(ApiCode::kInvalidRequest, "invalid host ID");
  return text;
}

ApiError host_not_found() {
  return ApiError(ApiCode::kNotFound, "host not found");
}

bool is_hex64(std::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

// The caller as a created_by value: a user id, or "" (API keys are not users).
std::string creator(const Caller& c) {
  return c.kind == Caller::Kind::kUser ? c.actor_id : std::string();
}

Caller host_caller(const std::string& host_id) {
  Caller c;
  c.kind = Caller::Kind::kHost;
  c.actor_id = host_id;
  c.actor_name = host_id;
  return c;
}

// The agent's TLS server certificate for its registered address (CN = host id, IP SAN =
// the address's IP), recorded in the host's row (fingerprint, expiry) inside tx.
crypto::IssuedCert issue_agent_cert(Deps& d, pg::Connection& tx, const store::Host& h) {
  if (!d.ctx.host_tls) throw ApiError(ApiCode::kInternalError, "the host CA is not configured");
  auto addr = parse_host_address(h.address);
  if (!addr) throw ApiError(ApiCode::kHostUnavailable, "host " + h.id + " has no usable address");
  crypto::IssuedCert cert = d.ctx.host_tls->issue_host_cert(h.id, addr->first);
  const auto not_after = std::chrono::duration_cast<std::chrono::seconds>(
                             crypto::cert_not_after(cert.cert_pem).time_since_epoch())
                             .count();
  tx.exec(
      "UPDATE hosts SET cert_fingerprint = $2, cert_expires_at = to_timestamp($3) WHERE id = $1",
      h.id, crypto::cert_fingerprint_sha256(cert.cert_pem), static_cast<std::int64_t>(not_after));
  return cert;
}

// register / refresh response (field names as upstream: cert_pem, key_pem, ca_cert_pem).
boost::json::object credentials_json(Deps& d, const store::Host& h, const std::string& host_token,
                                     const std::string& refresh_token,
                                     const crypto::IssuedCert& cert) {
  boost::json::object o;
  o["host"] = store::host_json(h);
  o["host_id"] = h.id;
  o["token"] = host_token;
  o["host_token"] = host_token;
  o["refresh_token"] = refresh_token;
  o["cert_pem"] = cert.cert_pem;
  o["key_pem"] = cert.key_pem;
  o["ca_cert_pem"] = d.ctx.host_tls ? d.ctx.host_tls->ca_cert_pem() : std::string();
  return o;
}

// ---- POST /v1/hosts ----
asio::awaitable<void> create_host(Deps& d, RequestContext& rc) {
  auto body_task = rc.json_body();
  boost::json::object body = co_await std::move(body_task);
  const std::string type = jf::string_or(body, "type", "regular", 16);
  if (type != "regular" && type != "byoc")
    throw ApiError(ApiCode::kInvalidRequest, "type must be \"regular\" or \"byoc\"");
  std::string team_id = jf::string_or(body, "team_id", "", 64);
  if (type == "byoc" && team_id.empty())
    throw ApiError(ApiCode::kInvalidRequest, "team_id is required for a byoc host");
  if (type == "regular") team_id.clear();
  if (!team_id.empty() && !ids::try_parse_id(ids::Kind::kTeam, team_id))
    throw ApiError(ApiCode::kInvalidRequest, "invalid team ID");
  const std::string provider = jf::string_or(body, "provider", "", 128);
  const std::string az = jf::string_or(body, "availability_zone", "", 128);
  const Caller caller = rc.caller();

  auto task = run_blocking(d.ctx.workers, [&d, type, team_id, provider, az, caller] {
    return d.ctx.db.with_transaction([&](pg::Connection& c) {
      if (!team_id.empty()) {
        auto team = store::find_team(c, team_id);
        if (!team || team->deleted) throw ApiError(ApiCode::kNotFound, "team not found");
        if (!team->is_byoc)
          throw ApiError(ApiCode::kForbidden, "BYOC hosts are not enabled for this team");
      }
      store::Host h = store::create_host(c, type, team_id, provider, az, creator(caller));
      std::string token =
          store::create_registration_token(c, h.id, creator(caller), auth::kRegistrationTokenTtl);
      audit::Entry e;
      e.team_id = team_id;
      e.action = "create";
      e.resource_type = "host";
      e.resource_id = h.id;
      e.scope = "admin";
      e.metadata["type"] = type;
      audit::record(c, caller, e);
      boost::json::object o;
      o["host"] = store::host_json(h);
      o["registration_token"] = token;
      return o;
    });
  });
  boost::json::object out = co_await std::move(task);
  auto reply = rc.send_json(status::created, out);
  co_await std::move(reply);
}

// ---- POST /v1/hosts/register ----
asio::awaitable<void> register_host(Deps& d, RequestContext& rc) {
  auto body_task = rc.json_body();
  boost::json::object body = co_await std::move(body_task);
  const std::string token = jf::string_or(body, "token", "", 256);
  const std::string address = jf::string_or(body, "address", "", 128);
  const std::string agent_token = jf::string_or(body, "agent_token", "", 512);
  if (token.empty()) throw ApiError(ApiCode::kInvalidRequest, "token is required");
  if (address.empty()) throw ApiError(ApiCode::kInvalidRequest, "address is required");
  auto addr = parse_host_address(address);
  if (!addr)
    throw ApiError(ApiCode::kInvalidRequest,
                   "address must be ip:port of the agent API (e.g. 10.0.0.5:50051)");
  if (agent_token.empty()) throw ApiError(ApiCode::kInvalidRequest, "agent_token is required");
  store::HostSpecs specs;
  specs.arch = jf::string_or(body, "arch", "", 32);
  specs.cpu_cores = jf::int_or(body, "cpu_cores", 0, 0, 1 << 16);
  specs.memory_mb = jf::int_or(body, "memory_mb", 0, 0, INT32_MAX);
  specs.disk_gb = jf::int_or(body, "disk_gb", 0, 0, INT32_MAX);
  specs.runtimes = jf::string_list(body, "runtimes", 16, 32);
  if (!is_hex64(token)) throw ApiError(ApiCode::kUnauthorized, "invalid or expired credentials");
  // Stored in canonical form ("[v6]:port" for IPv6).
  const std::string canonical = addr->first.find(':') != std::string::npos
                                    ? "[" + addr->first + "]:" + std::to_string(addr->second)
                                    : addr->first + ":" + std::to_string(addr->second);

  auto task = run_blocking(d.ctx.workers, [&d, token, canonical, agent_token, specs] {
    return d.ctx.db.with_transaction([&](pg::Connection& c) {
      auto host_id = store::consume_registration_token(c, token);
      if (!host_id) throw ApiError(ApiCode::kUnauthorized, "invalid or expired credentials");
      const std::string sealed = seal_agent_token(d.secrets.encryption_key, *host_id, agent_token);
      if (!store::register_host(c, *host_id, specs, canonical, sealed))
        throw ApiError(ApiCode::kNotFound, "host not found or already registered");
      std::string refresh = store::issue_refresh_token(c, *host_id, auth::kRefreshTokenTtl);
      audit::Entry e;
      e.action = "register";
      e.resource_type = "host";
      e.resource_id = *host_id;
      e.scope = "admin";
      e.metadata["address"] = canonical;
      auto host = store::get_host(c, *host_id);
      e.team_id = host->team_id;
      audit::record(c, host_caller(*host_id), e);
      crypto::IssuedCert cert = issue_agent_cert(d, c, *host);
      return std::make_tuple(*host, refresh, cert);
    });
  });
  auto [host, refresh, cert] = co_await std::move(task);
  d.ctx.hosts.evict(host.id);
  d.ctx.hooks.host_event(HostEvent{"host.registered", host.id, host.team_id});
  log::info("host registered", {{"host_id", host.id}, {"address", host.address}});
  const std::string jwt = auth::sign_host_token(d.secrets.jwt_secret, host.id);
  auto reply = rc.send_json(status::created, credentials_json(d, host, jwt, refresh, cert));
  co_await std::move(reply);
}

// ---- POST /v1/hosts/{id}/heartbeat ----
asio::awaitable<void> heartbeat(Deps& d, RequestContext& rc) {
  const std::string id = parse_host_id(rc.param("id"));
  if (id != rc.caller().actor_id) throw ApiError(ApiCode::kForbidden, "host ID mismatch");
  auto task = run_blocking(d.ctx.workers, [&d, id] {
    return d.ctx.db.with_transaction([&](pg::Connection& c) {
      auto before = store::heartbeat(c, id);
      if (!before) throw host_not_found();
      std::string team;
      if (*before == "unreachable") {
        auto h = store::get_host(c, id);
        team = h ? h->team_id : "";
        audit::Entry e;
        e.team_id = team;
        e.action = "marked_up";
        e.resource_type = "host";
        e.resource_id = id;
        e.scope = "admin";
        audit::record(c, Caller{}, e);
        events::record(c, events::host_event("host.up", id, team));
      }
      return std::make_pair(*before, team);
    });
  });
  auto [before, team] = co_await std::move(task);
  if (before == "unreachable") {
    log::info("host is back online", {{"host_id", id}});
    d.ctx.hooks.host_event(HostEvent{"host.up", id, team});
  }
  auto reply = rc.send_empty();
  co_await std::move(reply);
}

// ---- POST /v1/hosts/auth/refresh ----
asio::awaitable<void> refresh(Deps& d, RequestContext& rc) {
  auto body_task = rc.json_body();
  boost::json::object body = co_await std::move(body_task);
  const std::string token = jf::string_or(body, "refresh_token", "", 256);
  if (token.empty()) throw ApiError(ApiCode::kInvalidRequest, "refresh_token is required");
  if (!is_hex64(token)) throw ApiError(ApiCode::kUnauthorized, "invalid or expired credentials");
  auto task = run_blocking(d.ctx.workers, [&d, token] {
    return d.ctx.db.with_transaction([&](pg::Connection& c) {
      auto host_id = store::use_refresh_token(c, token);
      if (!host_id) throw ApiError(ApiCode::kUnauthorized, "invalid or expired credentials");
      auto host = store::get_host(c, *host_id);
      if (!host) throw host_not_found();
      // A fresh certificate on every refresh (as upstream): the agent swaps it in, so a
      // host that keeps refreshing never runs into its certificate's expiry.
      crypto::IssuedCert cert = issue_agent_cert(d, c, *host);
      return std::make_tuple(*host, store::issue_refresh_token(c, *host_id, auth::kRefreshTokenTtl),
                             cert);
    });
  });
  auto [host, fresh, cert] = co_await std::move(task);
  const std::string jwt = auth::sign_host_token(d.secrets.jwt_secret, host.id);
  auto reply = rc.send_json(status::ok, credentials_json(d, host, jwt, fresh, cert));
  co_await std::move(reply);
}

// ---- GET /v1/hosts ----
asio::awaitable<void> list_hosts(Deps& d, RequestContext& rc) {
  const Caller caller = rc.caller();
  auto task = run_blocking(d.ctx.workers, [&d, caller] {
    auto lease = d.ctx.db.acquire();
    auto hosts = store::list_hosts(*lease, caller.is_admin ? std::string() : caller.team_id);
    boost::json::array a;
    for (const auto& h : hosts) a.push_back(store::host_json(h, caller.is_admin));
    return a;
  });
  boost::json::array out = co_await std::move(task);
  auto reply = rc.send_json(status::ok, out);
  co_await std::move(reply);
}

// ---- GET /v1/hosts/{id} ----
asio::awaitable<void> get_host(Deps& d, RequestContext& rc) {
  const std::string id = parse_host_id(rc.param("id"));
  const Caller caller = rc.caller();
  auto task = run_blocking(d.ctx.workers, [&d, id, caller] {
    auto lease = d.ctx.db.acquire();
    auto h = store::get_host(*lease, id);
    if (!h || (!caller.is_admin && (h->type != "byoc" || h->team_id != caller.team_id)))
      throw host_not_found();
    return store::host_json(*h, caller.is_admin);
  });
  boost::json::object out = co_await std::move(task);
  auto reply = rc.send_json(status::ok, out);
  co_await std::move(reply);
}

// ---- GET /v1/hosts/{id}/delete-preview ----
asio::awaitable<void> delete_preview(Deps& d, RequestContext& rc) {
  const std::string id = parse_host_id(rc.param("id"));
  auto task = run_blocking(d.ctx.workers, [&d, id] {
    auto lease = d.ctx.db.acquire();
    auto h = store::get_host(*lease, id);
    if (!h) throw host_not_found();
    boost::json::array ids;
    for (auto& s : store::live_sandboxes_on_host(*lease, id)) ids.emplace_back(s);
    boost::json::object o;
    o["host"] = store::host_json(*h, true);
    o["sandbox_ids"] = std::move(ids);
    return o;
  });
  boost::json::object out = co_await std::move(task);
  auto reply = rc.send_json(status::ok, out);
  co_await std::move(reply);
}

// ---- DELETE /v1/hosts/{id} ----
asio::awaitable<void> delete_host(Deps& d, RequestContext& rc) {
  const std::string id = parse_host_id(rc.param("id"));
  const auto force_q = rc.query("force");
  const bool force = force_q && (*force_q == "true" || *force_q == "1");
  const Caller caller = rc.caller();
  auto task = run_blocking(d.ctx.workers, [&d, id, force, caller] {
    auto* directory = dynamic_cast<PgHostDirectory*>(&d.ctx.hosts);
    std::optional<store::Host> host;
    std::vector<std::string> live;
    {
      auto lease = d.ctx.db.acquire();
      host = store::get_host(*lease, id);
      if (!host) throw host_not_found();
      live = store::live_sandboxes_on_host(*lease, id);
    }
    auto conflict = [](const std::vector<std::string>& ids) {
      boost::json::array a;
      for (const auto& s : ids) a.emplace_back(s);
      return ApiError(ApiCode::kHasActiveSandboxes,
                      "host has active sandboxes; use ?force=true to destroy them and delete "
                      "the host")
          .with("sandbox_ids", std::move(a));
    };
    if (!live.empty() && !force) throw conflict(live);
    // Forced: destroy them on the agent first (best effort: an unreachable agent is not
    // waited for more than once).
    if (!live.empty() && directory && !host->address.empty() && host->status == "online") {
      try {
        auto client = directory->client_for(*host);
        for (const auto& sid : live) {
          try {
            client->destroy_sandbox(sid, std::chrono::seconds(20));
          } catch (const Error& e) {
            log::warn("destroying a sandbox of a deleted host failed",
                      {{"host_id", id}, {"sandbox_id", sid}, {"error", e.what()}});
            if (e.code() == Code::kUnavailable || e.code() == Code::kDeadlineExceeded) break;
          }
        }
      } catch (const std::exception& e) {
        log::warn("cannot reach the agent of a deleted host",
                  {{"host_id", id}, {"error", e.what()}});
      }
    }
    return d.ctx.db.with_transaction([&](pg::Connection& c) {
      if (c.exec("SELECT 1 FROM hosts WHERE id = $1 FOR UPDATE", id).empty())
        throw host_not_found();
      auto now_live = store::live_sandboxes_on_host(c, id);
      if (!now_live.empty() && !force) throw conflict(now_live);
      auto stopped = c.exec(
          "UPDATE sandboxes SET status = 'stopped' WHERE host_id = $1 "
          "AND status IN ('pending', 'starting', 'running', 'paused', 'missing') "
          "RETURNING id, team_id",
          id);
      std::vector<std::pair<std::string, std::string>> out;
      for (int i = 0; i < stopped.rows(); ++i)
        out.emplace_back(std::string(stopped.text(i, 0)), std::string(stopped.text(i, 1)));
      store::revoke_refresh_tokens(c, id);
      store::delete_host(c, id);
      audit::Entry e;
      e.team_id = host->team_id;
      e.action = "delete";
      e.resource_type = "host";
      e.resource_id = id;
      e.status = "warning";
      e.scope = "admin";
      if (force) e.metadata["force"] = true;
      e.metadata["sandboxes_stopped"] = static_cast<std::int64_t>(out.size());
      audit::record(c, caller, e);
      return std::make_pair(host->team_id, out);
    });
  });
  auto [team, stopped] = co_await std::move(task);
  d.ctx.hosts.evict(id);
  for (const auto& [sid, steam] : stopped) {
    SandboxEvent ev;
    ev.type = "capsule.destroyed";
    ev.sandbox_id = sid;
    ev.team_id = steam;
    ev.host_id = id;
    ev.actor = caller;
    d.ctx.hooks.sandbox_event(ev);
  }
  d.ctx.hooks.host_event(HostEvent{"host.deleted", id, team});
  log::info("host deleted",
            {{"host_id", id}, {"sandboxes_stopped", std::to_string(stopped.size())}});
  auto reply = rc.send_empty();
  co_await std::move(reply);
}

}  // namespace

void register_host_routes(ServerContext& ctx, const auth::Secrets& secrets) {
  auto d = std::make_shared<Deps>(Deps{ctx, secrets});
  auto route = [d](asio::awaitable<void> (*fn)(Deps&, RequestContext&)) {
    return [d, fn](RequestContext& rc) { return fn(*d, rc); };
  };
  Router& r = ctx.router;
  r.add(verb::post, "/v1/hosts", Access::kAdmin, route(create_host));
  r.add(verb::get, "/v1/hosts", Access::kTeam, route(list_hosts));
  r.add(verb::post, "/v1/hosts/register", Access::kPublic, route(register_host));
  r.add(verb::post, "/v1/hosts/auth/refresh", Access::kPublic, route(refresh));
  r.add(verb::get, "/v1/hosts/{id}", Access::kTeam, route(get_host));
  r.add(verb::delete_, "/v1/hosts/{id}", Access::kAdmin, route(delete_host));
  r.add(verb::get, "/v1/hosts/{id}/delete-preview", Access::kAdmin, route(delete_preview));
  r.add(verb::post, "/v1/hosts/{id}/heartbeat", Access::kHost, route(heartbeat));
}

}  // namespace wrenn::cp
