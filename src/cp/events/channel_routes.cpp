#include "events/channel_routes.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <memory>
#include <set>

#include "api/api_error.h"
#include "api/json_fields.h"
#include "blocking.h"
#include "crypto/ids.h"
#include "crypto/random.h"
#include "error.h"
#include "events/channel_store.h"
#include "events/event.h"
#include "events/providers.h"
#include "events/sender.h"
#include "events/targets.h"
#include "spec/spec.h"
#include "store/audit.h"

namespace wrenn::cp {

namespace {

namespace json = boost::json;
namespace jf = json_fields;
using bhttp::status;
using bhttp::verb;

constexpr std::size_t kMaxBody = 64 * 1024;
constexpr std::size_t kMaxValue = 4096;

struct Deps {
  ServerContext& ctx;
  auth::Secrets secrets;
};

events::ProviderSettings provider_settings(const CpConfig& config) {
  events::ProviderSettings s;
  s.telegram_api_url = config.telegram_api_url;
  s.allow_private = config.allow_private_targets;
  return s;
}

// ---- request parsing (pure) ----

const std::vector<std::string> kProviders = {"webhook",     "slack",    "discord", "teams",
                                             "google-chat", "telegram", "matrix"};

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (std::size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + v[i];
  return out;
}

std::string parse_provider(const json::object& body) {
  std::string p = jf::string_or(body, "provider", "", 64);
  if (p.empty()) throw ApiError(ApiCode::kInvalidRequest, "provider is required");
  if (p == "googlechat") p = "google-chat";  // upstream's spelling
  if (std::find(kProviders.begin(), kProviders.end(), p) == kProviders.end())
    throw ApiError(ApiCode::kInvalidRequest,
                   "unknown provider \"" + p + "\": one of " + join(kProviders));
  return p;
}

// Trimmed, lowercased, spaces to '-', then the team slug rule (as channel names in specs).
std::string parse_name(const json::object& body) {
  const std::string raw = jf::string_or(body, "name", "", 256);
  std::size_t b = 0, e = raw.size();
  while (b < e && std::isspace(static_cast<unsigned char>(raw[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(raw[e - 1]))) --e;
  std::string name;
  for (std::size_t i = b; i < e; ++i) {
    const char c = raw[i];
    name += c == ' ' ? '-' : static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  if (name.empty()) throw ApiError(ApiCode::kInvalidRequest, "name is required");
  bool ok = name.size() <= 63;
  for (std::size_t i = 0; ok && i < name.size(); ++i) {
    const char c = name[i];
    ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (i > 0 && c == '-');
  }
  if (!ok)
    throw ApiError(ApiCode::kInvalidRequest,
                   "name \"" + raw +
                       "\" is invalid: use 1-63 letters, digits, spaces and '-', starting with a "
                       "letter or digit");
  return name;
}

// Our event names, sorted, from ours or upstream's.
std::vector<std::string> parse_events(const json::object& body) {
  if (!body.contains("events") || body.at("events").is_null())
    throw ApiError(ApiCode::kInvalidRequest, "events is required: at least one event");
  std::set<std::string> out;
  for (const auto& e : jf::string_list(body, "events", 64, 128)) {
    auto canonical = events::canonical_event_type(e);
    if (!canonical) {
      std::vector<std::string> names(events::kEventTypes.begin(), events::kEventTypes.end());
      throw ApiError(ApiCode::kInvalidRequest,
                     "unknown event \"" + e + "\": events are " + join(names));
    }
    out.insert(*canonical);
  }
  if (out.empty()) throw ApiError(ApiCode::kInvalidRequest, "events must name at least one event");
  return {out.begin(), out.end()};
}

struct ProviderKeys {
  std::vector<std::string> required, optional;
};

ProviderKeys provider_keys(const std::string& p) {
  if (p == "webhook") return {{"url"}, {"secret"}};
  if (p == "telegram") return {{"bot_token", "chat_id"}, {}};
  if (p == "matrix") return {{"access_token", "room_id"}, {"homeserver_url"}};
  return {{"webhook_url"}, {}};
}

// A configuration from config:{…} (values are strings; keys per provider). A webhook's
// "secret" becomes its signing_key secret.
events::ChannelConfig parse_config(const std::string& provider, const json::value* v) {
  if (!v || !v->is_object())
    throw ApiError(ApiCode::kInvalidRequest, "config must be an object of strings");
  const ProviderKeys keys = provider_keys(provider);
  std::map<std::string, std::string> values;
  for (const auto& [k, val] : v->as_object()) {
    const std::string key(k);
    if (std::find(keys.required.begin(), keys.required.end(), key) == keys.required.end() &&
        std::find(keys.optional.begin(), keys.optional.end(), key) == keys.optional.end()) {
      std::vector<std::string> all = keys.required;
      all.insert(all.end(), keys.optional.begin(), keys.optional.end());
      throw ApiError(ApiCode::kInvalidRequest, "unknown config key \"" + key + "\" for provider " +
                                                   provider + " (it takes " + join(all) + ")");
    }
    if (!val.is_string() || val.as_string().size() > kMaxValue)
      throw ApiError(ApiCode::kInvalidRequest, "config." + key + " must be a string of at most " +
                                                   std::to_string(kMaxValue) + " bytes");
    if (!val.as_string().empty()) values[key] = std::string(val.as_string());
  }
  for (const auto& k : keys.required)
    if (!values.count(k))
      throw ApiError(ApiCode::kInvalidRequest,
                     "config." + k + " is required for provider " + provider);
  events::ChannelConfig c;
  c.provider = provider;
  if (provider == "webhook") {
    c.target = values["url"];
    if (values.count("secret")) c.secrets["signing_key"] = values["secret"];
  } else if (provider == "telegram") {
    c.target = values["chat_id"];
    c.secrets["bot_token"] = values["bot_token"];
  } else if (provider == "matrix") {
    c.target = values["room_id"];
    c.secrets["access_token"] = values["access_token"];
    std::string hs = values.count("homeserver_url") ? values["homeserver_url"]
                                                    : spec::default_matrix_homeserver(c.target);
    while (!hs.empty() && hs.back() == '/') hs.pop_back();
    if (!hs.empty()) c.options["homeserver"] = hs;
  } else {
    c.secrets["webhook_url"] = values["webhook_url"];
  }
  return c;
}

// validate() speaks of the stored fields (target, secrets.*, options.*): name the keys of
// the caller's config instead.
std::string config_names(std::string msg, const std::string& provider) {
  static const std::pair<std::string_view, std::string_view> kKeys[] = {
      {"secrets.webhook_url", "config.webhook_url"},
      {"secrets.bot_token", "config.bot_token"},
      {"secrets.access_token", "config.access_token"},
      {"options.homeserver", "config.homeserver_url"}};
  for (const auto& [from, to] : kKeys)
    for (auto pos = msg.find(from); pos != std::string::npos; pos = msg.find(from, pos + to.size()))
      msg.replace(pos, from.size(), to);
  const std::string_view target = provider == "webhook"    ? "config.url"
                                  : provider == "telegram" ? "config.chat_id"
                                  : provider == "matrix"   ? "config.room_id"
                                                           : "";
  if (!target.empty() && msg.rfind("target", 0) == 0) msg.replace(0, 6, target);
  return msg;
}

// validate() and the SSRF check of the destination (resolves names: a worker thread's job).
void check_config(const events::ChannelConfig& c, const events::ProviderSettings& settings) {
  try {
    events::validate(c, settings);
  } catch (const ApiError& e) {
    throw ApiError(e.code(), config_names(e.what(), c.provider));
  }
  const std::string url = events::destination_url(c, settings);
  if (!url.empty()) events::check_url(url, events::TargetPolicy{settings.allow_private});
}

std::string new_signing_secret() {
  return crypto::random_hex(32);  // 64 hex characters
}

// ---- responses ----

json::object channel_json(const events::ChannelRow& row) {
  json::array evs;
  for (const auto& e : row.events) evs.emplace_back(e);
  return json::object{{"id", row.id},
                      {"team_id", row.team_id},
                      {"name", row.name},
                      {"provider", row.provider},
                      {"events", std::move(evs)},
                      {"apply_set", row.apply_set ? json::value(*row.apply_set) : nullptr},
                      {"read_only", row.apply_set.has_value()},
                      {"created_at", row.created_at},
                      {"updated_at", row.updated_at}};
}

std::string checked_id(const std::string& id) {
  if (!ids::try_parse_id(ids::Kind::kChannel, id))
    throw ApiError(ApiCode::kInvalidRequest, "invalid channel ID \"" + id + "\"");
  return id;
}

events::ChannelRow must_get(pg::Connection& c, const Caller& caller, const std::string& id) {
  auto row = events::get_channel(c, caller.team_id, id);
  if (!row) throw ApiError(ApiCode::kNotFound, "channel " + id + " not found");
  return std::move(*row);
}

void check_writable(const events::ChannelRow& row) {
  if (row.apply_set)
    throw ApiError(ApiCode::kConflict, "channel \"" + row.name + "\" is declared in apply set \"" +
                                           *row.apply_set +
                                           "\" and read-only here: change it in the specs");
}

void audit_channel(pg::Connection& tx, const Caller& caller, const events::ChannelRow& row,
                   std::string_view action, std::string_view status) {
  json::object meta{{"name", row.name}, {"provider", row.provider}};
  audit::record(tx, caller, action, "channel", row.id, status, meta);
}

// ---- handlers ----

asio::awaitable<void> create(Deps& d, RequestContext& rc) {
  auto body_task = rc.json_body(kMaxBody);
  json::object body = co_await std::move(body_task);
  const std::string name = parse_name(body);
  const std::string provider = parse_provider(body);
  events::ChannelConfig cfg = parse_config(provider, body.if_contains("config"));
  const std::vector<std::string> evs = parse_events(body);
  const Caller caller = rc.caller();
  auto task = run_blocking(d.ctx.workers, [&d, name, evs, caller, cfg = std::move(cfg)]() mutable {
    const events::ProviderSettings settings = provider_settings(d.ctx.config);
    check_config(cfg, settings);
    std::string secret;
    if (cfg.provider == "webhook") {
      if (!cfg.secrets.count("signing_key")) cfg.secrets["signing_key"] = new_signing_secret();
      secret = cfg.secrets["signing_key"];
    }
    events::ChannelRow row;
    row.id = ids::new_id(ids::Kind::kChannel);
    row.team_id = caller.team_id;
    row.name = name;
    row.provider = cfg.provider;
    row.target = cfg.target;
    row.events = evs;
    row.options = cfg.options;
    row.secrets_sealed = events::seal_secrets(d.secrets.encryption_key, row.id, cfg.secrets);
    return d.ctx.db.with_transaction([&](pg::Connection& tx) {
      if (events::channel_name_taken(tx, caller.team_id, name))
        throw ApiError(ApiCode::kConflict, "channel name \"" + name + "\" already exists");
      events::insert_channel(tx, row);
      audit_channel(tx, caller, row, "create", "success");
      json::object out = channel_json(*events::get_channel(tx, caller.team_id, row.id));
      if (!secret.empty()) out["secret"] = secret;
      return out;
    });
  });
  json::object out = co_await std::move(task);
  auto reply = rc.send_json(status::created, std::move(out));
  co_await std::move(reply);
}

asio::awaitable<void> list(Deps& d, RequestContext& rc) {
  const Caller caller = rc.caller();
  auto task = run_blocking(d.ctx.workers, [&d, caller] {
    auto conn = d.ctx.db.acquire();
    json::array out;
    for (const auto& row : events::list_channels(*conn, caller.team_id))
      out.push_back(channel_json(row));
    return out;
  });
  json::array out = co_await std::move(task);
  auto reply = rc.send_json(status::ok, std::move(out));
  co_await std::move(reply);
}

asio::awaitable<void> get(Deps& d, RequestContext& rc) {
  const std::string id = checked_id(rc.param("id"));
  const Caller caller = rc.caller();
  auto task = run_blocking(d.ctx.workers, [&d, caller, id] {
    auto conn = d.ctx.db.acquire();
    return channel_json(must_get(*conn, caller, id));
  });
  json::object out = co_await std::move(task);
  auto reply = rc.send_json(status::ok, std::move(out));
  co_await std::move(reply);
}

// PATCH {name?, events?, config?} and PUT …/config {config}.
asio::awaitable<void> update(Deps& d, RequestContext& rc, bool config_only) {
  const std::string id = checked_id(rc.param("id"));
  auto body_task = rc.json_body(kMaxBody);
  json::object body = co_await std::move(body_task);
  std::optional<std::string> name;
  std::optional<std::vector<std::string>> evs;
  const json::value* config = body.if_contains("config");
  if (config && config->is_null()) config = nullptr;
  if (config_only) {
    if (!config) throw ApiError(ApiCode::kInvalidRequest, "config is required");
  } else {
    for (const auto& [k, v] : body)
      if (k != "name" && k != "events" && k != "config")
        throw ApiError(ApiCode::kInvalidRequest,
                       "unknown field \"" + std::string(k) + "\": name, events or config");
    if (body.contains("name") && !body.at("name").is_null()) name = parse_name(body);
    if (body.contains("events") && !body.at("events").is_null()) evs = parse_events(body);
  }
  std::optional<json::value> config_copy;
  if (config) config_copy = *config;
  const Caller caller = rc.caller();
  auto task = run_blocking(d.ctx.workers, [&d, id, name, evs, config_copy, caller, config_only] {
    const events::ProviderSettings settings = provider_settings(d.ctx.config);
    return d.ctx.db.with_transaction([&](pg::Connection& tx) {
      tx.exec("SELECT 1 FROM channels WHERE id = $1 AND team_id = $2 FOR UPDATE", id,
              caller.team_id);
      events::ChannelRow row = must_get(tx, caller, id);
      check_writable(row);
      if (name) {
        if (events::channel_name_taken(tx, caller.team_id, *name, id))
          throw ApiError(ApiCode::kConflict, "channel name \"" + *name + "\" already exists");
        row.name = *name;
      }
      if (evs) row.events = *evs;
      if (config_copy) {
        events::ChannelConfig cfg = parse_config(row.provider, &*config_copy);
        check_config(cfg, settings);
        if (row.provider == "webhook" && !cfg.secrets.count("signing_key")) {
          // A webhook keeps its signing secret unless the new config has one.
          const events::ChannelConfig old = events::open_config(row, d.secrets.encryption_key);
          if (auto it = old.secrets.find("signing_key"); it != old.secrets.end())
            cfg.secrets["signing_key"] = it->second;
          else
            cfg.secrets["signing_key"] = new_signing_secret();
        }
        row.target = cfg.target;
        row.options = cfg.options;
        row.secrets_sealed = events::seal_secrets(d.secrets.encryption_key, row.id, cfg.secrets);
      }
      events::update_channel(tx, row);
      audit_channel(tx, caller, row, config_only ? "rotate_config" : "update", "info");
      return channel_json(must_get(tx, caller, id));
    });
  });
  json::object out = co_await std::move(task);
  auto reply = rc.send_json(status::ok, std::move(out));
  co_await std::move(reply);
}

asio::awaitable<void> patch(Deps& d, RequestContext& rc) {
  return update(d, rc, false);
}
asio::awaitable<void> put_config(Deps& d, RequestContext& rc) {
  return update(d, rc, true);
}

asio::awaitable<void> rotate_secret(Deps& d, RequestContext& rc) {
  const std::string id = checked_id(rc.param("id"));
  const Caller caller = rc.caller();
  auto task = run_blocking(d.ctx.workers, [&d, id, caller] {
    return d.ctx.db.with_transaction([&](pg::Connection& tx) {
      tx.exec("SELECT 1 FROM channels WHERE id = $1 AND team_id = $2 FOR UPDATE", id,
              caller.team_id);
      events::ChannelRow row = must_get(tx, caller, id);
      check_writable(row);
      if (row.provider != "webhook")
        throw ApiError(ApiCode::kInvalidRequest,
                       "channel \"" + row.name + "\" is a " + row.provider +
                           " channel: only webhook channels have a signing secret");
      events::ChannelConfig cfg = events::open_config(row, d.secrets.encryption_key);
      const std::string secret = new_signing_secret();
      cfg.secrets["signing_key"] = secret;
      row.secrets_sealed = events::seal_secrets(d.secrets.encryption_key, row.id, cfg.secrets);
      events::update_channel(tx, row);
      audit_channel(tx, caller, row, "rotate_secret", "info");
      json::object out = channel_json(must_get(tx, caller, id));
      out["secret"] = secret;
      return out;
    });
  });
  json::object out = co_await std::move(task);
  auto reply = rc.send_json(status::ok, std::move(out));
  co_await std::move(reply);
}

asio::awaitable<void> remove(Deps& d, RequestContext& rc) {
  const std::string id = checked_id(rc.param("id"));
  const Caller caller = rc.caller();
  auto task = run_blocking(d.ctx.workers, [&d, id, caller] {
    d.ctx.db.with_transaction([&](pg::Connection& tx) {
      auto row = events::get_channel(tx, caller.team_id, id);
      if (!row) return 0;
      check_writable(*row);
      if (events::delete_channel(tx, caller.team_id, id))
        audit_channel(tx, caller, *row, "delete", "warning");
      return 0;
    });
    return 0;
  });
  co_await std::move(task);
  auto reply = rc.send_empty(status::no_content);
  co_await std::move(reply);
}

struct TestResult {
  bool ok = false;
  unsigned http_status = 0;
  std::string error;
};

asio::awaitable<void> test(Deps& d, RequestContext& rc) {
  auto body_task = rc.json_body(kMaxBody);
  json::object body = co_await std::move(body_task);
  const std::string provider = parse_provider(body);
  events::ChannelConfig cfg = parse_config(provider, body.if_contains("config"));
  const Caller caller = rc.caller();
  auto task = run_blocking(d.ctx.workers, [&d, caller, cfg = std::move(cfg)] {
    const events::ProviderSettings settings = provider_settings(d.ctx.config);
    check_config(cfg, settings);
    events::Event ev;
    ev.type = "channel.test";
    ev.team_id = caller.team_id;
    ev.actor = events::actor_of(caller);
    ev.resource_id = "test";
    ev.resource_type = "channel";
    const std::string timestamp = events::now_rfc3339();
    const json::object payload = events::payload(ev, timestamp);
    const std::string text = json::serialize(payload);
    const std::string delivery = ids::uuid_string(ids::new_uuid());
    const events::OutboundRequest req =
        events::request(cfg, payload, text, delivery, timestamp, settings);
    events::SendOptions opts;
    opts.policy.allow_private = d.ctx.config.allow_private_targets;
    opts.ca_file = d.ctx.config.channel_ca_file;
    const events::SendResult res = events::send(req, opts);
    return TestResult{res.ok, res.status, res.error};
  });
  TestResult r = co_await std::move(task);
  if (!r.ok)
    throw ApiError(ApiCode::kDeliveryFailed,
                   "the " + provider + " endpoint did not accept the " + "test event: " + r.error);
  auto reply = rc.send_json(
      status::ok,
      json::object{{"status", "ok"}, {"http_status", static_cast<std::int64_t>(r.http_status)}});
  co_await std::move(reply);
}

asio::awaitable<void> deliveries(Deps& d, RequestContext& rc) {
  const std::string id = checked_id(rc.param("id"));
  std::int64_t limit = 50;
  if (auto l = rc.query("limit")) {
    char* end = nullptr;
    const long long n = std::strtoll(l->c_str(), &end, 10);
    if (l->empty() || *end != '\0' || n < 1 || n > 200)
      throw ApiError(ApiCode::kInvalidRequest, "limit must be an integer from 1 to 200");
    limit = n;
  }
  const std::string before = rc.query("before").value_or("");
  if (!before.empty() && !ids::try_parse_id(ids::Kind::kDelivery, before))
    throw ApiError(ApiCode::kInvalidRequest, "before must be a delivery ID (dl-…)");
  const Caller caller = rc.caller();
  auto task = run_blocking(d.ctx.workers, [&d, id, caller, limit, before] {
    auto conn = d.ctx.db.acquire();
    must_get(*conn, caller, id);
    return events::list_deliveries(*conn, id, static_cast<std::size_t>(limit), before);
  });
  json::array out = co_await std::move(task);
  auto reply = rc.send_json(status::ok, std::move(out));
  co_await std::move(reply);
}

}  // namespace

void register_channel_routes(ServerContext& ctx, const auth::Secrets& secrets) {
  auto d = std::make_shared<Deps>(Deps{ctx, secrets});
  auto route = [d](asio::awaitable<void> (*fn)(Deps&, RequestContext&)) {
    return [d, fn](RequestContext& rc) { return fn(*d, rc); };
  };
  Router& r = ctx.router;
  r.add(verb::post, "/v1/channels", Access::kTeam, route(create));
  r.add(verb::get, "/v1/channels", Access::kTeam, route(list));
  r.add(verb::post, "/v1/channels/test", Access::kTeam, route(test));
  r.add(verb::get, "/v1/channels/{id}", Access::kTeam, route(get));
  r.add(verb::patch, "/v1/channels/{id}", Access::kTeam, route(patch));
  r.add(verb::delete_, "/v1/channels/{id}", Access::kTeam, route(remove));
  r.add(verb::put, "/v1/channels/{id}/config", Access::kTeam, route(put_config));
  r.add(verb::post, "/v1/channels/{id}/rotate-secret", Access::kTeam, route(rotate_secret));
  r.add(verb::get, "/v1/channels/{id}/deliveries", Access::kTeam, route(deliveries));
}

}  // namespace wrenn::cp
