#include "fleet/plan.h"

#include <algorithm>
#include <map>
#include <regex>
#include <set>

#include "api/api_error.h"
#include "error.h"
#include "fleet/fleet_store.h"
#include "fleet/reconciler.h"
#include "store/audit.h"
#include "store/sql.h"

namespace wrenn::cp::fleet {

namespace json = boost::json;

namespace {

using Key = std::pair<std::string, std::string>;

// One declared resource, whatever its kind.
struct Desired {
  std::string kind;
  std::string name;
  std::string team;         // owning team's slug (templates, channels)
  std::string object_name;  // the object's own name (templates: name is "team/name")
  json::object spec;
  std::string hash;
  const spec::Origin* origin = nullptr;
  const spec::HostSpec* host = nullptr;
  const spec::TemplateSpec* tmpl = nullptr;
  const spec::TeamSpec* team_spec = nullptr;
  const spec::ChannelSpec* channel = nullptr;
};

int kind_rank(const std::string& kind) {
  return static_cast<int>(std::find(kKinds.begin(), kKinds.end(), kind) - kKinds.begin());
}

std::vector<Desired> flatten(const spec::SpecSet& set) {
  std::vector<Desired> out;
  auto add = [&](Desired d) {
    d.hash = spec::content_hash(d.spec);
    out.push_back(std::move(d));
  };
  for (auto& t : set.teams) {
    Desired d{"team", t.name, "", t.name, spec::to_json(t), "", &t.origin};
    d.team_spec = &t;
    add(std::move(d));
  }
  for (auto& h : set.hosts) {
    Desired d{"host", h.name, "", h.name, spec::to_json(h), "", &h.origin};
    d.host = &h;
    add(std::move(d));
  }
  for (auto& t : set.templates) {
    // Template names are unique per team: the inventory names them "team/name".
    Desired d{"template", t.team + "/" + t.name, t.team, t.name, spec::to_json(t), "", &t.origin};
    d.tmpl = &t;
    add(std::move(d));
  }
  for (auto& c : set.channels) {
    Desired d{"channel", c.name, c.team, c.name, spec::to_json(c), "", &c.origin};
    d.channel = &c;
    add(std::move(d));
  }
  return out;
}

std::string diag(const spec::Origin& o, const std::string& message) {
  spec::Diagnostic d{o.at.file, o.at.line, o.at.column, message};
  return d.str();
}

[[noreturn]] void throw_diagnostics(std::vector<std::string> diags) {
  std::sort(diags.begin(), diags.end());
  json::array a;
  for (auto& d : diags) a.push_back(json::value(d));
  const std::string msg =
      diags.size() == 1 ? diags.front() : std::to_string(diags.size()) + " problems in the specs";
  throw ApiError(ApiCode::kInvalidSpec, msg).with("diagnostics", std::move(a));
}

// Problems no single file shows: ownership by another apply set, unreadable secrets.
void check_desired(const std::vector<Desired>& desired, const std::map<Key, Recorded>& recorded,
                   const std::string& apply_set) {
  std::vector<std::string> diags;
  for (auto& d : desired) {
    auto it = recorded.find({d.kind, d.name});
    if (it != recorded.end() && it->second.apply_set != apply_set)
      diags.push_back(diag(*d.origin, d.kind + " \"" + d.name + "\" is managed by apply set \"" +
                                          it->second.apply_set +
                                          "\": remove it there first, or apply with --set " +
                                          it->second.apply_set));
    if (d.channel) {
      try {
        resolve_secrets(*d.channel);
      } catch (const Error& e) {
        diags.push_back(diag(*d.origin, e.what()));
      }
    }
  }
  if (!diags.empty()) throw_diagnostics(std::move(diags));
}

bool object_exists(pg::Connection& c, const std::string& kind, const std::string& id) {
  const char* table = kind == "team"       ? "teams"
                      : kind == "host"     ? "hosts"
                      : kind == "template" ? "templates"
                                           : "channels";
  return !c.exec(std::string("SELECT 1 FROM ") + table + " WHERE id = $1", id).empty();
}

std::vector<spec::FieldChange> leaves(const json::object& from, const json::object& to) {
  return spec::field_changes(from, to);
}

// A field drift. A registered host's address is the one its agent registered with, which
// apply does not overwrite: when it is all that differs, the entry is not actionable and
// says what to change.
PlanEntry drift_entry(const Desired& d, const Recorded& rec, const LiveState& live,
                      std::vector<spec::FieldChange> changes) {
  PlanEntry e{
      "drift",           d.kind, d.name, rec.resource_id, d.kind + " was changed outside the specs",
      std::move(changes)};
  if (d.kind != "host" || !live.registered_hosts.count(rec.resource_id)) return e;
  auto addr =
      std::find_if(e.fields.begin(), e.fields.end(), [](auto& f) { return f.path == "address"; });
  if (addr == e.fields.end()) return e;
  const std::string declared =
      addr->old_value.is_string() ? std::string(addr->old_value.as_string()) : "";
  const std::string registered =
      addr->new_value.is_string() ? std::string(addr->new_value.as_string()) : "";
  e.message = "the agent registered at " + registered + " but the spec declares " + declared +
              ": change the spec, or register the agent with --address " + declared;
  if (e.fields.size() == 1) e.actionable = false;
  return e;
}

// How find_unrecorded() names an object: templates and channels by (team, name).
Key adopt_key(const Desired& d) {
  return {d.kind == "template" || d.kind == "channel" ? d.team : "", d.object_name};
}

// recorded comes without specs (load_recorded(c, false)); the specs of the resources that
// need a field-level comparison are loaded here in one query.
Plan plan_against(pg::Connection& c, const std::string& apply_set,
                  const std::vector<Desired>& desired, std::map<Key, Recorded>& recorded,
                  bool prune) {
  check_desired(desired, recorded, apply_set);
  Plan plan;
  plan.apply_set = apply_set;
  const LiveState live = load_live(c);
  {
    std::vector<Key> need;
    std::set<Key> declared_keys;
    for (auto& d : desired) {
      declared_keys.insert({d.kind, d.name});
      auto it = recorded.find({d.kind, d.name});
      if (it != recorded.end() &&
          (it->second.spec_hash != d.hash || live.drifted.count(it->second.resource_id)))
        need.push_back(it->first);
    }
    if (prune)
      for (auto& [key, rec] : recorded)
        if (rec.apply_set == apply_set && !declared_keys.count(key)) need.push_back(key);
    load_specs(c, recorded, need);
  }
  // Objects the creates adopt, looked up per kind in one query each.
  std::map<std::string, std::map<Key, std::string>> adopt;
  {
    std::map<std::string, std::vector<Key>> wanted;
    for (auto& d : desired)
      if (!recorded.count({d.kind, d.name})) wanted[d.kind].push_back(adopt_key(d));
    for (auto& [kind, w] : wanted) adopt[kind] = find_unrecorded(c, kind, w);
  }
  std::set<Key> declared;
  bool hosts_declared = false;
  for (auto& d : desired) {
    declared.insert({d.kind, d.name});
    if (d.kind == "host") hosts_declared = true;
    auto it = recorded.find({d.kind, d.name});
    if (it == recorded.end()) {
      PlanEntry e{"create", d.kind, d.name, "", "", leaves({}, d.spec)};
      auto& found = adopt[d.kind];
      if (auto a = found.find(adopt_key(d)); a != found.end()) e.resource_id = a->second;
      if (!e.resource_id.empty()) e.message = "adopts the existing " + d.kind + " " + e.resource_id;
      plan.entries.push_back(std::move(e));
      continue;
    }
    const Recorded& rec = it->second;
    if (rec.spec_hash != d.hash) {
      plan.entries.push_back(
          {"update", d.kind, d.name, rec.resource_id, "", leaves(rec.spec(), d.spec)});
      continue;
    }
    if (auto drift = live.drifted.find(rec.resource_id); drift != live.drifted.end()) {
      if (!drift->second)
        plan.entries.push_back({"drift", d.kind, d.name, rec.resource_id,
                                d.kind + " was deleted outside the specs", leaves({}, d.spec)});
      else if (auto changes = leaves(rec.spec(), *drift->second); !changes.empty())
        plan.entries.push_back(drift_entry(d, rec, live, std::move(changes)));
      if (!drift->second) continue;
    }
    if (auto u = live.unhealthy_hosts.find(rec.resource_id); u != live.unhealthy_hosts.end()) {
      const HostObservation& h = u->second;
      std::string message = "host is " + h.status;
      if (!h.last_heartbeat_at.empty()) message += " (last heartbeat " + h.last_heartbeat_at + ")";
      PlanEntry e{"drift", d.kind, d.name, rec.resource_id, std::move(message), {}};
      e.actionable = false;
      plan.entries.push_back(std::move(e));
    }
    if (auto m = live.missing_images.find(rec.resource_id); m != live.missing_images.end()) {
      std::string hosts;
      for (auto& h : m->second) hosts += (hosts.empty() ? "" : ", ") + h;
      PlanEntry e{"drift",
                  d.kind,
                  d.name,
                  rec.resource_id,
                  "image missing on " + hosts + " (the reconciler rebuilds it)",
                  {}};
      e.actionable = false;
      plan.entries.push_back(std::move(e));
    }
  }
  for (auto& [key, rec] : recorded) {
    if (rec.kind == "host") hosts_declared = true;
    if (rec.apply_set != apply_set || declared.count(key)) continue;
    if (prune)
      plan.entries.push_back(
          {"delete", rec.kind, rec.name, rec.resource_id, "", leaves(rec.spec(), {})});
    else
      plan.unpruned.push_back(key);
  }
  if (hosts_declared) {
    for (auto& [id, name] : live.undeclared_hosts) {
      PlanEntry e{"drift", "host", name, id, "registered host is not declared in any spec", {}};
      e.actionable = false;
      plan.entries.push_back(std::move(e));
    }
  }
  std::stable_sort(plan.entries.begin(), plan.entries.end(), [](auto& a, auto& b) {
    return std::tuple(kind_rank(a.kind), a.name) < std::tuple(kind_rank(b.kind), b.name);
  });
  return plan;
}

}  // namespace

std::size_t Plan::actionable() const {
  return static_cast<std::size_t>(
      std::count_if(entries.begin(), entries.end(), [](auto& e) { return e.actionable; }));
}

bool valid_apply_set_name(std::string_view name) {
  static const std::regex re("^[a-z0-9][a-z0-9._-]{0,62}$");
  return std::regex_match(name.begin(), name.end(), re);
}

Plan compute_plan(pg::Connection& c, const std::string& apply_set, const spec::SpecSet& desired,
                  bool prune) {
  const std::int64_t revision = fleet_revision(c);
  auto recorded = load_recorded(c, false);
  Plan p = plan_against(c, apply_set, flatten(desired), recorded, prune);
  p.revision = revision;
  return p;
}

Plan apply(pg::Connection& tx, const std::string& apply_set, const spec::SpecSet& set, bool prune,
           std::int64_t expected_revision, const Caller& caller, const crypto::AeadKey& key,
           const events::ProviderSettings& channel_settings) {
  const std::int64_t current = fleet_revision(tx, true);
  if (current != expected_revision)
    throw ApiError(ApiCode::kRevisionConflict,
                   "the fleet changed since this plan (planned at revision " +
                       std::to_string(expected_revision) + ", now " + std::to_string(current) +
                       "): another apply ran meanwhile; run wrennctl diff again");
  const std::vector<Desired> desired = flatten(set);
  auto recorded = load_recorded(tx, false);
  Plan plan = plan_against(tx, apply_set, desired, recorded, prune);
  plan.revision = current;
  plan.applied = true;
  if (plan.actionable() == 0) return plan;

  const std::int64_t revision = current + 1;
  tx.exec("UPDATE fleet_revision SET revision = $1", revision);
  tx.exec(
      "INSERT INTO apply_sets (name, revision, applied_by) VALUES ($1, $2, $3) "
      "ON CONFLICT (name) DO UPDATE SET revision = EXCLUDED.revision, applied_at = now(), "
      "applied_by = EXCLUDED.applied_by",
      apply_set, revision, caller.actor_name);

  std::map<Key, const Desired*> by_key;
  for (auto& d : desired) by_key[{d.kind, d.name}] = &d;
  WriteContext wc{key, apply_set, channel_settings};
  std::map<std::string, std::size_t> counts;

  // Deletes first, children before parents (channels, templates, hosts, teams).
  for (auto k = kKinds.rbegin(); k != kKinds.rend(); ++k)
    for (auto& e : plan.entries)
      if (e.kind == *k && e.action == "delete") {
        const Recorded& rec = recorded.at({e.kind, e.name});
        delete_object(tx, rec);
        forget_resource(tx, e.kind, e.name);
        ++counts["delete"];
      }
  // Then creates, updates and fixable drift, parents first.
  for (auto& k : kKinds)
    for (auto& e : plan.entries) {
      if (e.kind != k || e.action == "delete" || !e.actionable) continue;
      const Desired& d = *by_key.at({e.kind, e.name});
      std::string id = e.resource_id;
      // A recorded object deleted outside the specs is created afresh.
      if (!id.empty() && !object_exists(tx, d.kind, id)) id.clear();
      if (d.team_spec)
        id = write_team(tx, *d.team_spec, id);
      else if (d.host)
        id = write_host(tx, *d.host, id);
      else if (d.tmpl)
        id = write_template(tx, *d.tmpl, id);
      else
        id = write_channel(tx, wc, *d.channel, id);
      e.resource_id = id;
      record_resource(tx, d.kind, d.name, apply_set, id, d.spec, d.hash, revision);
      ++counts[e.action];
    }
  plan.revision = revision;

  audit::Entry a;
  a.team_id = std::string(store::kPlatformTeamId);
  a.action = "apply";
  a.resource_type = "fleet";
  a.scope = "admin";
  a.metadata["apply_set"] = apply_set;
  a.metadata["revision"] = std::to_string(revision);
  for (auto& [action, n] : counts) a.metadata[action] = std::to_string(n);
  audit::record(tx, caller, a);
  tx.exec(std::string("NOTIFY ") + kWakeChannel);
  return plan;
}

json::object plan_json(const Plan& plan) {
  json::array entries;
  std::map<std::string, std::int64_t> summary{
      {"create", 0}, {"update", 0}, {"delete", 0}, {"drift", 0}};
  for (auto& e : plan.entries) {
    ++summary[e.action];
    json::array fields;
    for (auto& f : e.fields)
      fields.push_back(json::object{{"path", f.path}, {"old", f.old_value}, {"new", f.new_value}});
    entries.push_back(json::object{
        {"action", e.action},
        {"kind", e.kind},
        {"name", e.name},
        {"resource_id", e.resource_id.empty() ? json::value(nullptr) : json::value(e.resource_id)},
        {"message", e.message},
        {"actionable", e.actionable},
        {"fields", std::move(fields)}});
  }
  json::object s;
  for (auto& [k, v] : summary) s[k] = v;
  json::array unpruned;
  for (auto& [k, n] : plan.unpruned) unpruned.push_back(json::object{{"kind", k}, {"name", n}});
  return {{"apply_set", plan.apply_set},
          {"revision", plan.revision},
          {"applied", plan.applied},
          {"actionable", static_cast<std::int64_t>(plan.actionable())},
          {"entries", std::move(entries)},
          {"summary", std::move(s)},
          {"unpruned", std::move(unpruned)}};
}

}  // namespace wrenn::cp::fleet
