#include "fleet/fleet_store.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "api/api_error.h"
#include "crypto/encoding.h"
#include "crypto/ids.h"
#include "error.h"
#include "events/channel_store.h"
#include "events/targets.h"
#include "store/sql.h"

namespace wrenn::cp::fleet {

namespace json = boost::json;
using store::kPlatformTeamId;

namespace {

json::object parse_object(std::string_view text) {
  if (text.empty()) return {};
  json::value v = json::parse(text);
  return v.is_object() ? v.get_object() : json::object{};
}

json::object labels_object(const std::map<std::string, std::string>& m) {
  json::object o;
  for (auto& [k, v] : m) o[k] = v;
  return o;
}

json::object optional_fields(
    std::initializer_list<std::pair<const char*, std::optional<std::int64_t>>> f) {
  json::object o;
  for (auto& [k, v] : f)
    if (v) o[k] = *v;
  return o;
}

std::string ids_array(const std::vector<std::string>& ids) {
  return store::text_array(ids);
}

std::string team_id_by_slug(pg::Connection& tx, const std::string& slug) {
  auto r = tx.exec("SELECT id FROM teams WHERE slug = $1 AND deleted_at IS NULL", slug);
  if (r.empty()) throw ApiError(ApiCode::kNotFound, "team \"" + slug + "\" does not exist");
  return std::string(r.text(0, 0));
}

// Rethrows a database refusal as an ApiError naming the resource.
template <class F>
auto naming(const std::string& what, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const pg::SqlError& e) {
    if (e.code() == Code::kAlreadyExists || e.code() == Code::kInvalidArgument ||
        e.code() == Code::kFailedPrecondition) {
      std::string why = e.constraint().empty() ? std::string(e.what()) : e.constraint();
      if (e.constraint() == "templates_platform_name")
        why = "the name is reserved by a platform template";
      else if (e.constraint() == "team_api_keys_key_hash_key")
        why =
            "an API key with this hash already exists (another team or a key made through "
            "the API)";
      else if (e.constraint() == "users_teams_one_owner")
        why = "a team has at most one owner";
      throw ApiError(ApiCode::kConflict, what + ": " + why);
    }
    throw;
  }
}

}  // namespace

json::object Recorded::spec() const {
  return parse_object(spec_text);
}

std::map<std::pair<std::string, std::string>, Recorded> load_recorded(pg::Connection& c,
                                                                      bool specs) {
  auto r = c.exec(std::string("SELECT kind, name, apply_set, resource_id, ") +
                  (specs ? "spec::text" : "''") + ", spec_hash, generation FROM fleet_resources");
  std::map<std::pair<std::string, std::string>, Recorded> out;
  for (int i = 0; i < r.rows(); ++i) {
    Recorded rec;
    rec.kind = r.text(i, 0);
    rec.name = r.text(i, 1);
    rec.apply_set = r.text(i, 2);
    rec.resource_id = r.text(i, 3);
    rec.spec_text = r.text(i, 4);
    rec.spec_hash = r.text(i, 5);
    rec.generation = r.as_int64(i, 6);
    auto key = std::pair{rec.kind, rec.name};
    out.emplace_hint(out.end(), std::move(key), std::move(rec));
  }
  return out;
}

void load_specs(pg::Connection& c,
                std::map<std::pair<std::string, std::string>, Recorded>& recorded,
                const std::vector<std::pair<std::string, std::string>>& keys) {
  if (keys.empty()) return;
  std::vector<std::string> kinds, names;
  for (auto& [k, n] : keys) {
    kinds.push_back(k);
    names.push_back(n);
  }
  auto r = c.exec(
      "SELECT f.kind, f.name, f.spec::text FROM fleet_resources f "
      "JOIN unnest($1::text[], $2::text[]) AS k(kind, name) ON k.kind = f.kind AND k.name = f.name",
      store::text_array(kinds), store::text_array(names));
  for (int i = 0; i < r.rows(); ++i) {
    auto it = recorded.find({std::string(r.text(i, 0)), std::string(r.text(i, 1))});
    if (it != recorded.end()) it->second.spec_text = r.text(i, 2);
  }
}

std::int64_t fleet_revision(pg::Connection& c, bool lock) {
  auto r = c.exec(lock ? "SELECT revision FROM fleet_revision FOR UPDATE"
                       : "SELECT revision FROM fleet_revision");
  return r.as_int64(0, 0);
}

namespace {

// The live view of every recorded resource, in the canonical shape of its kind
// (spec::to_json), as SQL; rows whose view differs from the recorded spec are drift.
// Orders use the "C" collation: the spec library sorts members and keys by byte value.
constexpr const char* kDriftSql = R"SQL(
WITH members AS (
  SELECT ut.team_id, jsonb_agg(jsonb_build_object('email', lower(u.email), 'role', ut.role)
                               ORDER BY lower(u.email) COLLATE "C") AS list
  FROM users_teams ut JOIN users u ON u.id = ut.user_id GROUP BY ut.team_id
), keys AS (
  SELECT team_id, jsonb_agg(jsonb_build_object('name', name, 'sha256', key_hash)
                            ORDER BY name COLLATE "C") AS list
  FROM team_api_keys WHERE managed GROUP BY team_id
), team_live AS (
  SELECT f.resource_id, f.spec,
         CASE WHEN t.id IS NULL THEN NULL ELSE jsonb_build_object(
           'name', t.slug, 'display_name', t.name,
           'limits', jsonb_build_object('concurrent_sandboxes', t.limits->'concurrent_sandboxes',
                                        'memory_mb', t.limits->'memory_mb',
                                        'vcpus', t.limits->'vcpus'),
           'members', coalesce(m.list, '[]'::jsonb),
           'api_keys', coalesce(k.list, '[]'::jsonb)) END AS live
  FROM fleet_resources f
  LEFT JOIN teams t ON t.id = f.resource_id AND t.deleted_at IS NULL
  LEFT JOIN members m ON m.team_id = t.id
  LEFT JOIN keys k ON k.team_id = t.id
  WHERE f.kind = 'team'
)
SELECT resource_id, live::text FROM team_live WHERE live IS DISTINCT FROM spec
UNION ALL
SELECT f.resource_id, l.live::text FROM fleet_resources f LEFT JOIN LATERAL (
  SELECT jsonb_build_object(
    'name', h.name, 'address', h.address, 'labels', h.labels, 'state', h.state,
    'runtime', h.runtime_preference,
    'capacity', jsonb_build_object('disk_gb', h.capacity_override->'disk_gb',
                                   'max_sandboxes', h.capacity_override->'max_sandboxes',
                                   'memory_mb', h.capacity_override->'memory_mb',
                                   'vcpus', h.capacity_override->'vcpus')
  ) AS live FROM hosts h WHERE h.id = f.resource_id) l ON true
WHERE f.kind = 'host' AND l.live IS DISTINCT FROM f.spec
UNION ALL
SELECT f.resource_id, l.live::text FROM fleet_resources f LEFT JOIN LATERAL (
  SELECT f.spec || jsonb_build_object('vcpus', m.vcpus, 'memory_mb', m.memory_mb,
                                      'user', m.default_user, 'env', m.default_env) AS live
  FROM templates m WHERE m.id = f.resource_id) l ON true
WHERE f.kind = 'template' AND l.live IS DISTINCT FROM f.spec
UNION ALL
SELECT f.resource_id, l.live::text FROM fleet_resources f LEFT JOIN LATERAL (
  SELECT f.spec || jsonb_build_object('provider', c.provider, 'target', c.target,
                                      'events', to_jsonb(c.events), 'secrets', c.secret_refs) AS live
  FROM channels c WHERE c.id = f.resource_id) l ON true
WHERE f.kind = 'channel' AND l.live IS DISTINCT FROM f.spec
)SQL";

}  // namespace

LiveState load_live(pg::Connection& c) {
  LiveState live;
  auto d = c.exec(kDriftSql);
  for (int i = 0; i < d.rows(); ++i) {
    auto view = d.opt_text(i, 1);
    live.drifted[std::string(d.text(i, 0))] =
        view ? std::optional<json::object>(parse_object(*view)) : std::nullopt;
  }
  auto h = c.exec("SELECT h.id, h.status, coalesce(" + store::ts("h.last_heartbeat_at") +
                  ", '') FROM fleet_resources f JOIN hosts h ON h.id = f.resource_id "
                  "WHERE f.kind = 'host' AND h.status NOT IN ('online', 'pending')");
  for (int i = 0; i < h.rows(); ++i)
    live.unhealthy_hosts[std::string(h.text(i, 0))] = {std::string(h.text(i, 1)),
                                                       std::string(h.text(i, 2))};
  auto reg = c.exec(
      "SELECT h.id FROM fleet_resources f JOIN hosts h ON h.id = f.resource_id "
      "WHERE f.kind = 'host' AND h.status <> 'pending'");
  for (int i = 0; i < reg.rows(); ++i) live.registered_hosts.emplace(reg.text(i, 0));
  auto m = c.exec(
      "SELECT b.template_id, coalesce(h.name, h.id) FROM fleet_resources f "
      "JOIN template_builds b ON b.template_id = f.resource_id "
      "JOIN hosts h ON h.id = b.host_id WHERE f.kind = 'template' AND b.state = 'missing' "
      "ORDER BY 2");
  for (int i = 0; i < m.rows(); ++i)
    live.missing_images[std::string(m.text(i, 0))].emplace_back(m.text(i, 1));
  auto u = c.exec(
      "SELECT id, coalesce(name, id) FROM hosts h WHERE status <> 'pending' AND NOT EXISTS "
      "(SELECT 1 FROM fleet_resources f WHERE f.kind = 'host' AND f.resource_id = h.id)");
  for (int i = 0; i < u.rows(); ++i)
    live.undeclared_hosts.emplace(std::string(u.text(i, 0)), std::string(u.text(i, 1)));
  return live;
}

std::map<std::pair<std::string, std::string>, std::string> find_unrecorded(
    pg::Connection& c, const std::string& kind,
    const std::vector<std::pair<std::string, std::string>>& wanted) {
  std::map<std::pair<std::string, std::string>, std::string> out;
  if (wanted.empty()) return out;
  std::vector<std::string> teams, names;
  for (auto& [t, n] : wanted) {
    teams.push_back(t);
    names.push_back(n);
  }
  const std::string unrecorded =
      " AND NOT EXISTS (SELECT 1 FROM fleet_resources f WHERE f.resource_id = x.id)";
  pg::Result r;
  if (kind == "team" || kind == "host")
    r = c.exec(std::string("SELECT '', x.") + (kind == "team" ? "slug" : "name") + ", x.id FROM " +
                   (kind == "team" ? "teams x WHERE x.slug" : "hosts x WHERE x.name") +
                   " = ANY($1::text[])" + unrecorded,
               store::text_array(names));
  else
    r = c.exec(std::string("SELECT t.slug, x.name, x.id FROM ") +
                   (kind == "template" ? "templates" : "channels") +
                   " x JOIN teams t ON t.id = x.team_id "
                   "JOIN unnest($1::text[], $2::text[]) AS w(team, name) "
                   "ON w.team = t.slug AND w.name = x.name WHERE true" +
                   unrecorded,
               store::text_array(teams), store::text_array(names));
  for (int i = 0; i < r.rows(); ++i)
    out[{std::string(r.text(i, 0)), std::string(r.text(i, 1))}] = r.text(i, 2);
  return out;
}

namespace {

// The control plane's own secrets: a channel must never be able to name them, or an
// admin's spec could ship them to a webhook.
const std::set<std::string> kProtectedEnv = {"JWT_SECRET",   "WRENN_ENCRYPTION_KEY", "WRENN_CA_KEY",
                                             "DATABASE_URL", "PGPASSWORD",           "PGPASSFILE"};
constexpr std::uintmax_t kMaxSecretFile = 64 * 1024;

}  // namespace

std::map<std::string, std::string> resolve_secrets(const spec::ChannelSpec& ch) {
  std::map<std::string, std::string> out;
  for (auto& [name, ref] : ch.secrets) {
    const std::string what = "channel \"" + ch.name + "\" secret \"" + name + "\"";
    if (!ref.env.empty()) {
      if (kProtectedEnv.count(ref.env))
        throw Error(Code::kInvalidArgument, what + " names " + ref.env +
                                                ", one of the control plane's own secrets; "
                                                "give the channel a variable of its own");
      const char* v = std::getenv(ref.env.c_str());
      if (!v || !*v)
        throw Error(Code::kInvalidArgument, what + " names the environment variable " + ref.env +
                                                ", which is not set on the control plane");
      out[name] = v;
      continue;
    }
    std::error_code ec;
    const auto st = std::filesystem::status(ref.file, ec);
    if (ec || !std::filesystem::is_regular_file(st))
      throw Error(Code::kInvalidArgument, what + " names the file " + ref.file +
                                              ", which is not a regular file the control plane "
                                              "can read");
    if (std::filesystem::file_size(ref.file, ec) > kMaxSecretFile || ec)
      throw Error(Code::kInvalidArgument, what + ": the file " + ref.file +
                                              " is larger than 64 KiB; a secret file holds one "
                                              "secret");
    std::ifstream in(ref.file, std::ios::binary);
    if (!in)
      throw Error(Code::kInvalidArgument,
                  what + " names the file " + ref.file + ", which the control plane cannot read");
    std::ostringstream ss;
    ss << in.rdbuf();
    std::string v = ss.str();
    while (!v.empty() && (v.back() == '\n' || v.back() == '\r')) v.pop_back();
    if (v.empty())
      throw Error(Code::kInvalidArgument, what + ": the file " + ref.file + " is empty");
    out[name] = std::move(v);
  }
  return out;
}

std::string write_team(pg::Connection& tx, const spec::TeamSpec& t, const std::string& id_in) {
  return naming("team \"" + t.name + "\"", [&] {
    const std::string limits = json::serialize(optional_fields({
        {"concurrent_sandboxes", t.limits.concurrent_sandboxes},
        {"vcpus", t.limits.vcpus},
        {"memory_mb", t.limits.memory_mb},
    }));
    std::string id = id_in;
    if (id.empty()) {
      id = ids::new_id(ids::Kind::kTeam);
      tx.exec("INSERT INTO teams (id, name, slug, limits) VALUES ($1, $2, $3, $4::jsonb)", id,
              t.display_name, t.name, limits);
    } else {
      tx.exec(
          "UPDATE teams SET name = $2, slug = $3, limits = $4::jsonb, deleted_at = NULL "
          "WHERE id = $1",
          id, t.display_name, t.name, limits);
    }

    // Members: users by address (created, inactive and without a password, when new);
    // undeclared memberships removed; the owner changed last so at most one exists.
    std::vector<std::string> user_ids;
    for (auto& m : t.members) {
      auto u = tx.exec("SELECT id FROM users WHERE lower(email) = $1", m.email);
      std::string uid;
      if (u.empty()) {
        uid = ids::new_id(ids::Kind::kUser);
        tx.exec("INSERT INTO users (id, email, status) VALUES ($1, $2, 'inactive')", uid, m.email);
      } else {
        uid = std::string(u.text(0, 0));
      }
      user_ids.push_back(uid);
    }
    tx.exec("DELETE FROM users_teams WHERE team_id = $1 AND NOT (user_id = ANY($2::text[]))", id,
            ids_array(user_ids));
    std::string owner;
    for (std::size_t i = 0; i < t.members.size(); ++i)
      if (t.members[i].role == "owner") owner = user_ids[i];
    tx.exec(
        "UPDATE users_teams SET role = 'admin' WHERE team_id = $1 AND role = 'owner' "
        "AND user_id <> coalesce($2, '')",
        id, owner.empty() ? std::nullopt : std::optional<std::string>(owner));
    for (std::size_t i = 0; i < t.members.size(); ++i)
      tx.exec(
          "INSERT INTO users_teams (user_id, team_id, role, is_default) VALUES ($1, $2, $3, "
          " NOT EXISTS (SELECT 1 FROM users_teams d WHERE d.user_id = $1 AND d.is_default)) "
          "ON CONFLICT (team_id, user_id) DO UPDATE SET role = EXCLUDED.role "
          "WHERE users_teams.role <> EXCLUDED.role",
          user_ids[i], id, t.members[i].role);

    // Managed API keys: exactly the declared hashes.
    std::vector<std::string> hashes;
    for (auto& k : t.api_keys) hashes.push_back(k.sha256);
    tx.exec(
        "DELETE FROM team_api_keys WHERE team_id = $1 AND managed "
        "AND NOT (key_hash = ANY($2::text[]))",
        id, ids_array(hashes));
    for (auto& k : t.api_keys) {
      auto r = tx.exec(
          "UPDATE team_api_keys SET name = $3 WHERE team_id = $1 AND key_hash = $2 AND managed", id,
          k.sha256, k.name);
      if (r.affected_rows() == 0)
        tx.exec(
            "INSERT INTO team_api_keys (id, team_id, name, key_hash, key_prefix, managed) "
            "VALUES ($1, $2, $3, $4, '', true)",
            ids::new_id(ids::Kind::kApiKey), id, k.name, k.sha256);
    }
    return id;
  });
}

std::string write_host(pg::Connection& tx, const spec::HostSpec& h, const std::string& id_in) {
  return naming("host \"" + h.name + "\"", [&] {
    const std::string labels = json::serialize(labels_object(h.labels));
    const std::string cap = json::serialize(optional_fields({
        {"vcpus", h.capacity.vcpus},
        {"memory_mb", h.capacity.memory_mb},
        {"disk_gb", h.capacity.disk_gb},
        {"max_sandboxes", h.capacity.max_sandboxes},
    }));
    std::string id = id_in;
    if (id.empty()) {
      id = ids::new_id(ids::Kind::kHost);
      tx.exec(
          "INSERT INTO hosts (id, name, address, labels, state, runtime_preference, "
          "capacity_override) VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7::jsonb)",
          id, h.name, h.address, labels, h.state, h.runtime, cap);
    } else {
      tx.exec(
          "UPDATE hosts SET name = $2, address = CASE WHEN status = 'pending' THEN $3 ELSE address "
          "END, labels = $4::jsonb, state = $5, "
          "runtime_preference = $6, capacity_override = $7::jsonb WHERE id = $1",
          id, h.name, h.address, labels, h.state, h.runtime, cap);
    }
    return id;
  });
}

std::string write_template(pg::Connection& tx, const spec::TemplateSpec& t,
                           const std::string& id_in) {
  return naming("template \"" + t.name + "\"", [&] {
    const std::string team_id = team_id_by_slug(tx, t.team);
    json::object env;
    for (auto& [k, v] : t.env) env[k] = v;
    const std::string meta = json::serialize(json::object{{"fleet", spec::to_json(t)}});
    std::string id = id_in;
    if (id.empty()) {
      id = ids::new_id(ids::Kind::kTemplate);
      tx.exec(
          "INSERT INTO templates (id, team_id, name, type, vcpus, memory_mb, default_user, "
          "default_env, metadata) VALUES ($1, $2, $3, 'base', $4, $5, $6, $7::jsonb, $8::jsonb)",
          id, team_id, t.name, t.vcpus, t.memory_mb, t.user, json::serialize(env), meta);
    } else {
      tx.exec(
          "UPDATE templates SET team_id = $2, name = $3, vcpus = $4, memory_mb = $5, "
          "default_user = $6, default_env = $7::jsonb, metadata = metadata || $8::jsonb "
          "WHERE id = $1",
          id, team_id, t.name, t.vcpus, t.memory_mb, t.user, json::serialize(env), meta);
    }
    return id;
  });
}

namespace {

// A spec channel's destination against SSRF. A name that does not resolve now is let
// through (DNS may be down during an apply; the sender checks every address again at each
// delivery), but a literal or resolved refused address fails the apply.
void check_channel_destination(const spec::ChannelSpec& ch,
                               const std::map<std::string, std::string>& secrets,
                               const events::ProviderSettings& settings) {
  events::ChannelConfig cfg;
  cfg.provider = ch.provider;
  cfg.target = ch.target;
  cfg.secrets = secrets;
  if (!ch.homeserver.empty()) cfg.options["homeserver"] = ch.homeserver;
  const std::string url = events::destination_url(cfg, settings);
  if (url.empty()) return;
  const events::TargetPolicy policy{settings.allow_private};
  try {
    const events::ParsedUrl u = events::parse_url(url);
    boost::system::error_code ec;
    boost::asio::ip::make_address(u.host, ec);
    if (ec) {  // a name: only checked when it resolves
      boost::asio::io_context io;
      boost::asio::ip::tcp::resolver resolver(io);
      resolver.resolve(u.host, u.port, ec);
      if (ec) return;
    }
    events::check_url(url, policy);
  } catch (const ApiError& e) {
    throw ApiError(ApiCode::kInvalidRequest, "channel \"" + ch.name + "\" (team \"" + ch.team +
                                                 "\"): destination refused: " + e.what());
  }
}

}  // namespace

std::string write_channel(pg::Connection& tx, const WriteContext& wc, const spec::ChannelSpec& ch,
                          const std::string& id_in) {
  std::map<std::string, std::string> values;
  try {
    values = resolve_secrets(ch);
  } catch (const Error& e) {
    throw ApiError(ApiCode::kInvalidRequest, e.what());
  }
  check_channel_destination(ch, values, wc.channel_settings);
  return naming("channel \"" + ch.name + "\"", [&] {
    const std::string team_id = team_id_by_slug(tx, ch.team);
    json::object refs = spec::to_json(ch).at("secrets").as_object();
    json::object options;
    if (!ch.homeserver.empty()) options["homeserver"] = ch.homeserver;
    // The channel id is the associated data: a sealed blob cannot be moved to another row.
    std::string id = id_in.empty() ? ids::new_id(ids::Kind::kChannel) : id_in;
    const std::string sealed = events::seal_secrets(wc.key, id, values);
    std::vector<std::string> events(ch.events.begin(), ch.events.end());
    if (id_in.empty()) {
      tx.exec(
          "INSERT INTO channels (id, team_id, name, provider, target, events, secret_refs, "
          "secrets_sealed, apply_set, options) VALUES ($1, $2, $3, $4, $5, $6::text[], "
          "$7::jsonb, $8, $9, $10::jsonb)",
          id, team_id, ch.name, ch.provider, ch.target, store::text_array(events),
          json::serialize(refs), sealed, wc.apply_set, json::serialize(options));
    } else {
      tx.exec(
          "UPDATE channels SET team_id = $2, name = $3, provider = $4, target = $5, "
          "events = $6::text[], secret_refs = $7::jsonb, secrets_sealed = $8, apply_set = $9, "
          "options = $10::jsonb WHERE id = $1",
          id, team_id, ch.name, ch.provider, ch.target, store::text_array(events),
          json::serialize(refs), sealed, wc.apply_set, json::serialize(options));
    }
    return id;
  });
}

void delete_object(pg::Connection& tx, const Recorded& r) {
  const std::string what = r.kind + " \"" + r.name + "\"";
  naming(what, [&] {
    if (r.kind == "team") {
      if (r.resource_id == kPlatformTeamId)
        throw ApiError(ApiCode::kConflict, "the platform team cannot be deleted");
      tx.exec("DELETE FROM team_api_keys WHERE team_id = $1", r.resource_id);
      tx.exec("DELETE FROM users_teams WHERE team_id = $1", r.resource_id);
      tx.exec("UPDATE teams SET deleted_at = now() WHERE id = $1 AND deleted_at IS NULL",
              r.resource_id);
    } else if (r.kind == "host") {
      auto live = tx.exec(
          "SELECT count(*) FROM sandboxes WHERE host_id = $1 "
          "AND status IN ('pending', 'starting', 'running', 'paused')",
          r.resource_id);
      if (live.as_int64(0, 0) > 0)
        throw ApiError(ApiCode::kHasActiveSandboxes,
                       what + " still has " + std::string(live.text(0, 0)) +
                           " sandboxes: drain it first (state = \"draining\")");
      tx.exec("DELETE FROM hosts WHERE id = $1", r.resource_id);
    } else if (r.kind == "template") {
      if (r.resource_id == "tmpl-0000000000000000000000000")
        throw ApiError(ApiCode::kConflict, "the platform template \"minimal\" cannot be deleted");
      tx.exec("DELETE FROM templates WHERE id = $1", r.resource_id);
    } else {
      tx.exec("DELETE FROM channels WHERE id = $1", r.resource_id);
    }
    return 0;
  });
}

void record_resource(pg::Connection& tx, const std::string& kind, const std::string& name,
                     const std::string& apply_set, const std::string& resource_id,
                     const json::object& spec, const std::string& hash, std::int64_t revision) {
  tx.exec(
      "INSERT INTO fleet_resources (kind, name, apply_set, resource_id, spec, spec_hash, "
      "applied_revision) VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7) "
      "ON CONFLICT (kind, name) DO UPDATE SET apply_set = EXCLUDED.apply_set, "
      " resource_id = EXCLUDED.resource_id, spec = EXCLUDED.spec, "
      " generation = fleet_resources.generation + "
      "   (CASE WHEN fleet_resources.spec_hash <> EXCLUDED.spec_hash THEN 1 ELSE 0 END), "
      " spec_hash = EXCLUDED.spec_hash, applied_revision = EXCLUDED.applied_revision, "
      " applied_at = now()",
      kind, name, apply_set, resource_id, json::serialize(spec), hash, revision);
}

void forget_resource(pg::Connection& tx, const std::string& kind, const std::string& name) {
  tx.exec("DELETE FROM fleet_resources WHERE kind = $1 AND name = $2", kind, name);
}

}  // namespace wrenn::cp::fleet
