// Parsing and validation of the fleet spec kinds (see spec.h for the contract and
// specs/README.md for every field).
#include "spec.h"

#include <arpa/inet.h>
#include <toml++/toml.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>
#include <thread>

#include "crypto/hash.h"

namespace wrenn::spec {
namespace json = boost::json;

std::string Diagnostic::str() const {
  return file + ":" + std::to_string(line) + ":" + std::to_string(column) + ": " + message;
}

const Position& Origin::of(const std::string& field) const {
  auto it = fields.find(field);
  return it == fields.end() ? at : it->second;
}

namespace {

std::string qt(std::string_view s) {
  return "\"" + std::string(s) + "\"";
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diag = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

// " (did you mean "x"?)" for the closest candidate within a third of the word, or "".
std::string suggestion(std::string_view word, const std::vector<std::string>& candidates) {
  std::string best;
  std::size_t best_d = std::max<std::size_t>(2, word.size() / 3) + 1;
  for (const auto& c : candidates) {
    std::size_t d = edit_distance(word, c);
    if (d < best_d) best_d = d, best = c;
  }
  return best.empty() ? "" : " (did you mean " + qt(best) + "?)";
}

std::string join(const std::vector<std::string>& v, std::string_view sep) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : std::string(sep)) + s;
  return out;
}

std::string one_of(const std::vector<std::string>& v) {
  std::vector<std::string> q;
  for (const auto& s : v) q.push_back(qt(s));
  return join(q, ", ");
}

const char* type_name(toml::node_type t) {
  switch (t) {
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a float";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::date:
      return "a date";
    case toml::node_type::time:
      return "a time";
    case toml::node_type::date_time:
      return "a date-time";
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    default:
      return "nothing";
  }
}

// ---- name and value rules ----

bool is_slug(std::string_view s) {  // teams.slug in sql/0001_init.sql
  if (s.empty() || s.size() > 63) return false;
  auto ok = [](char c, bool first) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (!first && c == '-');
  };
  for (std::size_t i = 0; i < s.size(); ++i)
    if (!ok(s[i], i == 0)) return false;
  return true;
}
constexpr const char* kSlugRule =
    "use 1-63 lowercase letters, digits and '-', starting with a letter or digit";

bool is_template_name(std::string_view s) {  // valid_template_name in src/cp/api/capsule_json
  auto alnum = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  };
  if (s.empty() || s.size() > 64 || !alnum(s[0])) return false;
  for (char c : s.substr(1))
    if (!alnum(c) && c != '.' && c != '_' && c != '-') return false;
  return true;
}
constexpr const char* kTemplateNameRule =
    "use 1-64 letters, digits, '.', '_' and '-', starting with a letter or digit";

bool is_label_key(std::string_view s) {
  if (s.empty() || s.size() > 63) return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-' && c != '/'))) return false;
  }
  return true;
}
bool is_label_value(std::string_view s) {
  if (s.size() > 63) return false;
  for (char c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-')
      return false;
  return true;
}

bool is_env_name(std::string_view s) {
  if (s.empty() || s.size() > 255 || std::isdigit(static_cast<unsigned char>(s[0]))) return false;
  for (char c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') return false;
  return true;
}

bool is_user_name(std::string_view s) {
  if (s.empty() || s.size() > 32) return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    bool ok = (c >= 'a' && c <= 'z') || c == '_' || (i > 0 && ((c >= '0' && c <= '9') || c == '-'));
    if (!ok) return false;
  }
  return true;
}

bool is_email(std::string_view s) {
  auto at = s.find('@');
  if (s.size() > 254 || at == std::string_view::npos || at == 0 ||
      s.find('@', at + 1) != std::string_view::npos)
    return false;
  auto domain = s.substr(at + 1);
  auto dot = domain.find('.');
  if (dot == std::string_view::npos || dot == 0 || domain.back() == '.') return false;
  for (char c : s)
    if (static_cast<unsigned char>(c) <= ' ' || c == '<' || c == '>' || c == ',') return false;
  return true;
}

bool is_sha256_hex(std::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

// "ipv4:port" or "[ipv6]:port" with a port in 1..65535.
bool is_address(std::string_view s) {
  auto colon = s.rfind(':');
  if (colon == std::string_view::npos) return false;
  std::string host(s.substr(0, colon));
  std::string_view port = s.substr(colon + 1);
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return false;
  int p = std::stoi(std::string(port));
  if (p < 1 || p > 65535) return false;
  unsigned char buf[16];
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    return inet_pton(AF_INET6, host.substr(1, host.size() - 2).c_str(), buf) == 1;
  return inet_pton(AF_INET, host.c_str(), buf) == 1;
}

bool has_scheme(std::string_view s, std::string_view scheme) {
  return s.size() > scheme.size() && s.substr(0, scheme.size()) == scheme &&
         s.find_first_of(" \t\r\n") == std::string_view::npos;
}

// ---- reading TOML tables ----

class Reader;

// One file's diagnostics sink.
struct Ctx {
  const std::string& file;
  std::vector<Diagnostic>& diags;
  Position pos(const toml::source_region& r) const {
    return {file, static_cast<int>(r.begin.line), static_cast<int>(r.begin.column)};
  }
  void error(const toml::source_region& r, std::string msg) {
    auto p = pos(r);
    diags.push_back({p.file, p.line, p.column, std::move(msg)});
  }
};

// Reads the keys of one table (a resource or a nested table), recording field positions
// under `prefix` in origin, and reporting unknown keys, wrong types and missing keys.
class Reader {
 public:
  Reader(Ctx& c, const toml::table& t, Origin& o, std::string what, std::string prefix,
         std::vector<std::string> known)
      : c_(c),
        t_(t),
        o_(o),
        what_(std::move(what)),
        prefix_(std::move(prefix)),
        known_(std::move(known)) {}

  // Names the resource in later messages (once its name is known).
  void set_what(std::string what) { what_ = std::move(what); }

  // Reports every key that is not known (with the closest known one) and records the
  // positions of the known ones.
  void finish() {
    for (auto&& [k, v] : t_) {
      std::string key(k.str());
      if (std::find(known_.begin(), known_.end(), key) == known_.end()) {
        c_.error(k.source(), "unknown key " + qt(key) + " in " + what_ + suggestion(key, known_));
      } else if (!o_.fields.count(prefix_ + key)) {
        o_.fields[prefix_ + key] = c_.pos(v.source());
      }
    }
  }

  Ctx& ctx() { return c_; }
  const toml::table& table() const { return t_; }
  const std::string& what() const { return what_; }
  Position pos() const { return c_.pos(t_.source()); }

  const toml::node* node(const std::string& key, bool required) {
    const toml::node* n = t_.get(key);
    if (!n && required) c_.error(t_.source(), what_ + ": missing required key " + qt(key));
    return n;
  }
  void wrong_type(const std::string& key, const toml::node& n, const char* want) {
    c_.error(n.source(),
             what_ + ": " + qt(key) + " must be " + want + ", not " + type_name(n.type()));
  }
  void error_at(const std::string& key, std::string msg) {
    const toml::node* n = t_.get(key);
    c_.error(n ? n->source() : t_.source(), what_ + ": " + std::move(msg));
  }

  std::optional<std::string> str(const std::string& key, bool required = false) {
    const toml::node* n = node(key, required);
    if (!n) return std::nullopt;
    if (auto v = n->value<std::string>(); v && n->is_string()) return *v;
    wrong_type(key, *n, "a string");
    return std::nullopt;
  }

  std::optional<std::int64_t> integer(const std::string& key, std::int64_t lo, std::int64_t hi,
                                      bool required = false) {
    const toml::node* n = node(key, required);
    if (!n) return std::nullopt;
    if (!n->is_integer()) {
      wrong_type(key, *n, "an integer");
      return std::nullopt;
    }
    std::int64_t v = n->as_integer()->get();
    if (v < lo || v > hi) {
      c_.error(n->source(), what_ + ": " + qt(key) + " must be between " + std::to_string(lo) +
                                " and " + std::to_string(hi) + ", not " + std::to_string(v));
      return std::nullopt;
    }
    return v;
  }

  const toml::table* table(const std::string& key) {
    const toml::node* n = node(key, false);
    if (!n) return nullptr;
    if (n->is_table()) return n->as_table();
    wrong_type(key, *n, "a table");
    return nullptr;
  }

  const toml::array* array(const std::string& key, bool required = false) {
    const toml::node* n = node(key, required);
    if (!n) return nullptr;
    if (n->is_array()) return n->as_array();
    wrong_type(key, *n, "an array");
    return nullptr;
  }

  // A table of strings whose keys and values satisfy the given rules.
  std::map<std::string, std::string> string_map(
      const std::string& key, const std::function<bool(std::string_view)>& key_ok,
      const char* key_rule, const std::function<bool(std::string_view)>& value_ok,
      const char* value_rule) {
    std::map<std::string, std::string> out;
    const toml::table* t = table(key);
    if (!t) return out;
    for (auto&& [k, v] : *t) {
      std::string name(k.str());
      o_.fields[prefix_ + key + "." + name] = c_.pos(v.source());
      if (!key_ok(name)) {
        c_.error(k.source(), what_ + ": " + key + " key " + qt(name) + " is invalid: " + key_rule);
        continue;
      }
      if (!v.is_string()) {
        c_.error(v.source(),
                 what_ + ": " + key + "." + name + " must be a string, not " + type_name(v.type()));
        continue;
      }
      std::string value = v.as_string()->get();
      if (value_ok && !value_ok(value)) {
        c_.error(v.source(), what_ + ": " + key + "." + name + " value " + qt(value) +
                                 " is invalid: " + value_rule);
        continue;
      }
      out.emplace(std::move(name), std::move(value));
    }
    return out;
  }

  std::vector<std::string> string_array(const std::string& key, bool required = false) {
    std::vector<std::string> out;
    const toml::array* a = array(key, required);
    if (!a) return out;
    for (std::size_t i = 0; i < a->size(); ++i) {
      const toml::node& v = *a->get(i);
      if (!v.is_string()) {
        c_.error(v.source(), what_ + ": " + key + "[" + std::to_string(i) +
                                 "] must be a string, not " + type_name(v.type()));
        continue;
      }
      out.push_back(v.as_string()->get());
    }
    return out;
  }

  // Checks a value against an enumeration; reports with a suggestion.
  bool check_enum(const std::string& key, const std::string& value,
                  const std::vector<std::string>& allowed) {
    if (std::find(allowed.begin(), allowed.end(), value) != allowed.end()) return true;
    error_at(key, qt(key) + " must be one of " + one_of(allowed) + ", not " + qt(value) +
                      suggestion(value, allowed));
    return false;
  }

 private:
  Ctx& c_;
  const toml::table& t_;
  Origin& o_;
  std::string what_;
  std::string prefix_;
  std::vector<std::string> known_;
};

// ---- the kinds ----

// Reads "name", checks it with the rule and names the resource in later messages.
std::string read_name(Reader& r, const char* kind, bool (*ok)(std::string_view), const char* rule) {
  auto v = r.str("name", true);
  if (!v) return "";
  if (!ok(*v)) {
    r.error_at("name", "name " + qt(*v) + " is invalid: " + rule);
    return "";
  }
  r.set_what(std::string(kind) + " " + qt(*v));
  return *v;
}

HostSpec read_host(Ctx& c, const toml::table& t) {
  HostSpec h;
  h.origin.at = c.pos(t.source());
  Reader r(c, t, h.origin, "host", "",
           {"name", "address", "runtime", "labels", "capacity", "state"});
  h.name = read_name(r, "host", is_slug, kSlugRule);
  if (auto v = r.str("address", true)) {
    if (is_address(*v))
      h.address = *v;
    else
      r.error_at("address", "address " + qt(*v) +
                                " is invalid: use IPV4:PORT or [IPV6]:PORT of the agent API");
  }
  if (auto v = r.str("runtime");
      v && r.check_enum("runtime", *v, {"auto", "ns", "qemu", "firecracker", "cloud-hypervisor"}))
    h.runtime = *v;
  if (auto v = r.str("state"); v && r.check_enum("state", *v, {"active", "cordoned", "draining"}))
    h.state = *v;
  h.labels = r.string_map("labels", is_label_key,
                          "use 1-63 lowercase letters, digits, '.', '_', '-' and '/', "
                          "starting with a letter or digit",
                          is_label_value, "use up to 63 letters, digits, '.', '_' and '-'");
  if (const toml::table* cap = r.table("capacity")) {
    Reader cr(c, *cap, h.origin, r.what() + " capacity", "capacity.",
              {"vcpus", "memory_mb", "disk_gb", "max_sandboxes"});
    h.capacity.vcpus = cr.integer("vcpus", 1, 1024);
    h.capacity.memory_mb = cr.integer("memory_mb", 128, 16 * 1024 * 1024);
    h.capacity.disk_gb = cr.integer("disk_gb", 1, 1024 * 1024);
    h.capacity.max_sandboxes = cr.integer("max_sandboxes", 1, 100000);
    cr.finish();
  }
  r.finish();
  return h;
}

TemplateSpec read_template(Ctx& c, const toml::table& t) {
  TemplateSpec s;
  s.origin.at = c.pos(t.source());
  Reader r(c, t, s.origin, "template", "",
           {"name", "team", "base", "image", "vcpus", "memory_mb", "disk_mb", "user", "workdir",
            "env", "build", "start", "ready", "present_on"});
  s.name = read_name(r, "template", is_template_name, kTemplateNameRule);
  if (auto v = r.str("team", true)) s.team = *v;
  auto base = r.str("base");
  auto image = r.str("image");
  if (base && image)
    r.error_at("image",
               "set either \"base\" (a template) or \"image\" (an image builder), not both");
  else if (!base && !image && !t.get("base") && !t.get("image"))
    c.error(t.source(),
            r.what() + ": missing \"base\" (a template) or \"image\" (an image builder)");
  if (base) s.base = *base;
  if (image && !base) {
    if (r.check_enum("image", *image, kImageBuilders)) s.image = *image;
  }
  if (auto v = r.integer("vcpus", 1, 64)) s.vcpus = *v;
  if (auto v = r.integer("memory_mb", 128, 256 * 1024)) s.memory_mb = *v;
  if (auto v = r.integer("disk_mb", 256, 1024 * 1024)) s.disk_mb = *v;
  if (auto v = r.str("user")) {
    if (is_user_name(*v))
      s.user = *v;
    else
      r.error_at("user", "user " + qt(*v) +
                             " is invalid: use 1-32 lowercase letters, digits, '_' and '-', "
                             "starting with a letter or '_'");
  }
  if (auto v = r.str("workdir")) {
    if (!v->empty() && v->front() == '/')
      s.workdir = *v;
    else
      r.error_at("workdir", "workdir " + qt(*v) + " must be an absolute path");
  }
  s.env = r.string_map("env", is_env_name, "use letters, digits and '_', not starting with a digit",
                       nullptr, "");
  s.build = r.string_array("build");
  if (auto v = r.str("start")) s.start = *v;
  if (const toml::table* rt = r.table("ready")) {
    Reader rr(c, *rt, s.origin, r.what() + " ready", "ready.",
              {"command", "timeout_sec", "interval_ms"});
    ReadinessSpec ready;
    if (auto v = rr.str("command", true)) ready.command = *v;
    if (auto v = rr.integer("timeout_sec", 1, 3600)) ready.timeout_sec = *v;
    if (auto v = rr.integer("interval_ms", 100, 60000)) ready.interval_ms = *v;
    rr.finish();
    if (s.start.empty()) r.error_at("ready", "\"ready\" needs a \"start\" command to check");
    s.ready = ready;
  }
  s.present_on = r.string_map("present_on", is_label_key, "not a valid label key", is_label_value,
                              "not a valid label value");
  r.finish();
  return s;
}

TeamSpec read_team(Ctx& c, const toml::table& t) {
  TeamSpec s;
  s.origin.at = c.pos(t.source());
  Reader r(c, t, s.origin, "team", "", {"name", "display_name", "members", "limits", "api_keys"});
  s.name = read_name(r, "team", is_slug, kSlugRule);
  if (auto v = r.str("display_name")) {
    if (v->empty() || v->size() > 128)
      r.error_at("display_name", "\"display_name\" must be 1-128 characters");
    else
      s.display_name = *v;
  }
  if (s.display_name.empty()) s.display_name = s.name;

  // An array of tables: members = [{...}] or [[team.members]].
  auto each_table = [&](const std::string& key, auto&& fn) {
    const toml::array* a = r.array(key);
    if (!a) return;
    for (std::size_t i = 0; i < a->size(); ++i) {
      const toml::node& n = *a->get(i);
      if (!n.is_table()) {
        c.error(n.source(), r.what() + ": " + key + "[" + std::to_string(i) +
                                "] must be a table, not " + type_name(n.type()));
        continue;
      }
      fn(*n.as_table(), key + "." + std::to_string(i) + ".");
    }
  };

  std::map<std::string, Position> emails;
  const Position* owner = nullptr;
  Position owner_pos;
  each_table("members", [&](const toml::table& mt, const std::string& prefix) {
    Reader mr(c, mt, s.origin, r.what() + " member", prefix, {"email", "role"});
    MemberSpec m;
    if (auto v = mr.str("email", true)) {
      std::string e = *v;
      std::transform(e.begin(), e.end(), e.begin(),
                     [](unsigned char ch) { return std::tolower(ch); });
      if (!is_email(e)) {
        mr.error_at("email", "email " + qt(*v) + " is not a valid address");
      } else if (auto [it, fresh] = emails.emplace(e, c.pos(mt.get("email")->source())); !fresh) {
        mr.error_at("email", "member " + qt(e) + " is listed twice (first at " + it->second.file +
                                 ":" + std::to_string(it->second.line) + ":" +
                                 std::to_string(it->second.column) + ")");
      } else {
        m.email = e;
      }
    }
    if (auto v = mr.str("role"); v && mr.check_enum("role", *v, {"owner", "admin", "member"}))
      m.role = *v;
    if (m.role == "owner") {
      if (owner)
        mr.error_at("role", "a team has at most one owner (the other is at " + owner->file + ":" +
                                std::to_string(owner->line) + ":" + std::to_string(owner->column) +
                                ")");
      else
        owner_pos = c.pos(mt.get("role")->source()), owner = &owner_pos;
    }
    mr.finish();
    if (!m.email.empty()) s.members.push_back(m);
  });
  std::sort(s.members.begin(), s.members.end(),
            [](const MemberSpec& a, const MemberSpec& b) { return a.email < b.email; });

  if (const toml::table* lt = r.table("limits")) {
    Reader lr(c, *lt, s.origin, r.what() + " limits", "limits.",
              {"concurrent_sandboxes", "vcpus", "memory_mb"});
    s.limits.concurrent_sandboxes = lr.integer("concurrent_sandboxes", 1, 100000);
    s.limits.vcpus = lr.integer("vcpus", 1, 100000);
    s.limits.memory_mb = lr.integer("memory_mb", 128, 1LL << 30);
    lr.finish();
  }

  std::set<std::string> key_names;
  each_table("api_keys", [&](const toml::table& kt, const std::string& prefix) {
    Reader kr(c, kt, s.origin, r.what() + " api key", prefix, {"name", "sha256"});
    ApiKeySpec k;
    if (auto v = kr.str("name", true)) {
      if (!is_slug(*v))
        kr.error_at("name", "api key name " + qt(*v) + " is invalid: " + kSlugRule);
      else if (!key_names.insert(*v).second)
        kr.error_at("name", "api key " + qt(*v) + " is declared twice in this team");
      else
        k.name = *v;
      kr.set_what(r.what() + " api key " + qt(*v));
    }
    if (auto v = kr.str("sha256", true)) {
      if (is_sha256_hex(*v))
        k.sha256 = *v;
      else
        kr.error_at("sha256",
                    "\"sha256\" must be 64 lowercase hex characters (the SHA-256 "
                    "of the key, e.g. printf %s \"$KEY\" | sha256sum), not " +
                        qt(*v));
    }
    kr.finish();
    if (!k.name.empty() && !k.sha256.empty()) s.api_keys.push_back(k);
  });
  std::sort(s.api_keys.begin(), s.api_keys.end(),
            [](const ApiKeySpec& a, const ApiKeySpec& b) { return a.name < b.name; });
  r.finish();
  return s;
}

const std::vector<std::string> kProviders = {"webhook",     "slack",    "discord", "teams",
                                             "google-chat", "telegram", "matrix"};

// The secrets each provider takes, and which of them it needs.
struct ProviderSecrets {
  std::vector<std::string> allowed;
  std::vector<std::string> required;
};
ProviderSecrets provider_secrets(const std::string& p) {
  if (p == "webhook") return {{"signing_key"}, {}};
  if (p == "telegram") return {{"bot_token"}, {"bot_token"}};
  if (p == "matrix") return {{"access_token"}, {"access_token"}};
  return {{"webhook_url"}, {"webhook_url"}};  // the URL carries the credential
}

ChannelSpec read_channel(Ctx& c, const toml::table& t) {
  ChannelSpec s;
  s.origin.at = c.pos(t.source());
  Reader r(c, t, s.origin, "channel", "",
           {"name", "team", "provider", "target", "secrets", "events", "homeserver"});
  s.name = read_name(r, "channel", is_slug, kSlugRule);
  if (auto v = r.str("team", true)) s.team = *v;
  if (auto v = r.str("provider", true); v && r.check_enum("provider", *v, kProviders))
    s.provider = *v;
  auto target = r.str("target");
  if (target) s.target = *target;
  auto ps = provider_secrets(s.provider);
  if (s.provider == "webhook") {
    if (!target && !t.get("target"))
      c.error(t.source(), r.what() + ": missing required key \"target\" (the URL to POST to)");
    else if (target && !has_scheme(*target, "https://") && !has_scheme(*target, "http://"))
      r.error_at("target", "webhook target " + qt(*target) + " must be an http(s) URL");
  } else if (s.provider == "telegram") {
    if (!target && !t.get("target"))
      c.error(t.source(), r.what() + ": missing required key \"target\" (the chat id)");
    else if (target && (target->empty() || target->find_first_of(" /:") != std::string::npos))
      r.error_at("target",
                 "telegram target " + qt(*target) + " must be a chat id (-1001234 or @channel)");
  } else if (s.provider == "matrix") {
    if (!target && !t.get("target"))
      c.error(t.source(), r.what() + ": missing required key \"target\" (the room id)");
    else if (target && (target->size() < 4 || ((*target)[0] != '!' && (*target)[0] != '#') ||
                        target->find(':') == std::string::npos))
      r.error_at("target", "matrix target " + qt(*target) +
                               " must be a room id or alias (!room:server or #alias:server)");
  } else if (!s.provider.empty() && target) {
    r.error_at("target", s.provider +
                             " webhook URLs carry their credential: put the URL in "
                             "secrets.webhook_url = { env = \"NAME\" } instead of \"target\"");
  }

  if (auto hs = r.str("homeserver")) {
    if (!s.provider.empty() && s.provider != "matrix")
      r.error_at("homeserver", "\"homeserver\" is only for matrix channels, not " + qt(s.provider));
    else if (!has_scheme(*hs, "https://") && !has_scheme(*hs, "http://"))
      r.error_at("homeserver", "matrix homeserver " + qt(*hs) + " must be an http(s) URL");
    else
      s.homeserver = *hs;
    while (!s.homeserver.empty() && s.homeserver.back() == '/') s.homeserver.pop_back();
  }
  if (s.provider == "matrix" && s.homeserver.empty())
    s.homeserver = default_matrix_homeserver(s.target);

  if (const toml::table* st = r.table("secrets")) {
    for (auto&& [k, v] : *st) {
      std::string name(k.str());
      s.origin.fields["secrets." + name] = c.pos(v.source());
      if (!s.provider.empty() &&
          std::find(ps.allowed.begin(), ps.allowed.end(), name) == ps.allowed.end()) {
        c.error(k.source(), r.what() + ": unknown secret " + qt(name) + " for provider " +
                                qt(s.provider) + " (it takes " + one_of(ps.allowed) + ")");
        continue;
      }
      if (!v.is_table()) {
        c.error(v.source(), r.what() + ": secret " + qt(name) +
                                " must be a reference { env = \"NAME\" } or { file = "
                                "\"/absolute/path\" }, never an inline value");
        continue;
      }
      Reader sr(c, *v.as_table(), s.origin, r.what() + " secret " + qt(name),
                "secrets." + name + ".", {"env", "file"});
      SecretRef ref;
      auto env = sr.str("env");
      auto file = sr.str("file");
      if (env && file)
        sr.error_at("file", "set either \"env\" or \"file\", not both");
      else if (!env && !file && !v.as_table()->get("env") && !v.as_table()->get("file"))
        c.error(v.source(), r.what() + ": secret " + qt(name) +
                                " needs \"env\" (a variable) or \"file\" (an absolute path)");
      else if (env && !is_env_name(*env))
        sr.error_at("env", "env " + qt(*env) + " is not a valid variable name");
      else if (file && (file->empty() || file->front() != '/'))
        sr.error_at("file", "file " + qt(*file) + " must be an absolute path");
      else if (env)
        ref.env = *env;
      else if (file)
        ref.file = *file;
      sr.finish();
      if (!ref.env.empty() || !ref.file.empty()) s.secrets.emplace(name, ref);
    }
  }
  for (const auto& need : ps.required)
    if (!s.provider.empty() && !(t.get("secrets") && t.get("secrets")->is_table() &&
                                 t.get("secrets")->as_table()->get(need)))
      c.error(t.source(), r.what() + ": provider " + qt(s.provider) + " needs secrets." + need +
                              " = { env = \"NAME\" } or { file = \"/path\" }");

  const toml::array* ev = r.array("events", true);
  if (ev) {
    if (ev->empty()) r.error_at("events", "\"events\" must name at least one event");
    std::set<std::string> seen;
    for (std::size_t i = 0; i < ev->size(); ++i) {
      const toml::node& n = *ev->get(i);
      if (!n.is_string()) {
        c.error(n.source(), r.what() + ": events[" + std::to_string(i) +
                                "] must be a string, not " + type_name(n.type()));
        continue;
      }
      std::string e = n.as_string()->get();
      if (std::find(kChannelEvents.begin(), kChannelEvents.end(), e) == kChannelEvents.end())
        c.error(n.source(), r.what() + ": unknown event " + qt(e) + suggestion(e, kChannelEvents) +
                                "; events are " + one_of(kChannelEvents));
      else if (!seen.insert(e).second)
        c.error(n.source(), r.what() + ": event " + qt(e) + " is listed twice");
      else
        s.events.push_back(e);
    }
    std::sort(s.events.begin(), s.events.end());
  }
  r.finish();
  return s;
}

std::string where(const Position& p) {
  return p.file + ":" + std::to_string(p.line) + ":" + std::to_string(p.column);
}

void error_at(std::vector<Diagnostic>& d, const Position& p, std::string msg) {
  d.push_back({p.file, p.line, p.column, std::move(msg)});
}

// Cross-resource checks: unique names, references, base cycles.
void check_references(const SpecSet& s, std::vector<Diagnostic>& d) {
  std::map<std::string, const HostSpec*> hosts;
  std::map<std::string, const HostSpec*> addresses;
  for (const auto& h : s.hosts) {
    if (h.name.empty()) continue;
    if (auto [it, fresh] = hosts.emplace(h.name, &h); !fresh)
      error_at(d, h.origin.of("name"),
               "duplicate host " + qt(h.name) + " (first declared at " +
                   where(it->second->origin.of("name")) + ")");
    if (h.address.empty()) continue;
    if (auto [it, fresh] = addresses.emplace(h.address, &h); !fresh && it->second->name != h.name)
      error_at(d, h.origin.of("address"),
               "host " + qt(h.name) + ": address " + qt(h.address) + " is already host " +
                   qt(it->second->name) + "'s (at " + where(it->second->origin.of("address")) +
                   ")");
  }

  std::map<std::string, const TeamSpec*> teams;
  std::map<std::string, std::pair<const TeamSpec*, std::string>> key_hashes;
  for (const auto& t : s.teams) {
    if (t.name.empty()) continue;
    if (auto [it, fresh] = teams.emplace(t.name, &t); !fresh)
      error_at(d, t.origin.of("name"),
               "duplicate team " + qt(t.name) + " (first declared at " +
                   where(it->second->origin.of("name")) + ")");
    for (const auto& k : t.api_keys) {
      if (auto [it, fresh] = key_hashes.emplace(k.sha256, std::pair{&t, k.name}); !fresh)
        error_at(d, t.origin.at,
                 "team " + qt(t.name) + ": api key " + qt(k.name) +
                     " has the same sha256 as api key " + qt(it->second.second) + " of team " +
                     qt(it->second.first->name) + " (one key cannot belong to two places)");
    }
  }
  auto team_exists = [&](const std::string& name) {
    return name == kPlatformTeam || teams.count(name);
  };

  // Templates: unique per team; platform names are global (templates_platform_name).
  std::map<std::pair<std::string, std::string>, const TemplateSpec*> templates;
  for (const auto& t : s.templates) {
    if (t.name.empty() || t.team.empty()) continue;
    if (auto [it, fresh] = templates.emplace(std::pair{t.team, t.name}, &t); !fresh)
      error_at(d, t.origin.of("name"),
               "duplicate template " + qt(t.name) + " in team " + qt(t.team) +
                   " (first declared at " + where(it->second->origin.of("name")) + ")");
    if (!team_exists(t.team)) {
      std::vector<std::string> names{std::string(kPlatformTeam)};
      for (auto& [n, _] : teams) names.push_back(n);
      error_at(d, t.origin.of("team"),
               "template " + qt(t.name) + ": team " + qt(t.team) + " is not declared" +
                   suggestion(t.team, names));
    }
  }
  // The seed template (sql/0001_init.sql) exists even when no spec declares it.
  auto find_template = [&](const std::string& team,
                           const std::string& name) -> const TemplateSpec* {
    if (auto it = templates.find({team, name}); it != templates.end()) return it->second;
    if (auto it = templates.find({std::string(kPlatformTeam), name}); it != templates.end())
      return it->second;
    return nullptr;
  };
  for (const auto& t : s.templates) {
    if (t.name.empty() || t.team.empty()) continue;
    if (t.team != kPlatformTeam) {
      auto platform = templates.find({std::string(kPlatformTeam), t.name});
      if (platform != templates.end())
        error_at(d, t.origin.of("name"),
                 "template " + qt(t.name) + " of team " + qt(t.team) +
                     ": the name is reserved by the platform template at " +
                     where(platform->second->origin.of("name")));
      else if (t.name == kSeedTemplate)
        error_at(d, t.origin.of("name"),
                 "template " + qt(t.name) + " of team " + qt(t.team) +
                     ": the name is reserved by the platform's seed template");
    }
    if (!t.base.empty() && !find_template(t.team, t.base) && t.base != kSeedTemplate)
      error_at(d, t.origin.of("base"),
               "template " + qt(t.name) + ": base template " + qt(t.base) +
                   " is not declared in team " + qt(t.team) + " or the platform team");
  }
  // Base cycles: follow base links from each template; report each cycle once, at the
  // base field of every template on it.
  std::set<const TemplateSpec*> reported;
  for (const auto& t : s.templates) {
    std::vector<const TemplateSpec*> path;
    const TemplateSpec* cur = &t;
    while (cur && !cur->base.empty() && std::find(path.begin(), path.end(), cur) == path.end()) {
      path.push_back(cur);
      cur = find_template(cur->team, cur->base);
    }
    if (!cur || cur->base.empty() || cur != &t || reported.count(&t)) continue;
    std::string cycle;
    for (auto* p : path) cycle += p->name + " -> ";
    cycle += t.name;
    for (auto* p : path) reported.insert(p);
    error_at(d, t.origin.of("base"), "template " + qt(t.name) + ": base cycle " + cycle);
  }

  std::map<std::string, const ChannelSpec*> channels;
  for (const auto& ch : s.channels) {
    if (ch.name.empty()) continue;
    if (auto [it, fresh] = channels.emplace(ch.name, &ch); !fresh)
      error_at(d, ch.origin.of("name"),
               "duplicate channel " + qt(ch.name) + " (first declared at " +
                   where(it->second->origin.of("name")) + ")");
    if (!ch.team.empty() && !team_exists(ch.team)) {
      std::vector<std::string> names{std::string(kPlatformTeam)};
      for (auto& [n, _] : teams) names.push_back(n);
      error_at(d, ch.origin.of("team"),
               "channel " + qt(ch.name) + ": team " + qt(ch.team) + " is not declared" +
                   suggestion(ch.team, names));
    }
  }
}

const std::vector<std::string> kKinds = {"host", "template", "team", "channel"};

void parse_file(const SourceFile& f, SpecSet& set, std::vector<Diagnostic>& diags) {
  Ctx c{f.name, diags};
  toml::table root;
  try {
    root = toml::parse(f.text, f.name);
  } catch (const toml::parse_error& e) {
    c.error(e.source(), "TOML syntax error: " + std::string(e.description()));
    return;
  }
  for (auto&& [k, v] : root) {
    std::string kind(k.str());
    if (std::find(kKinds.begin(), kKinds.end(), kind) == kKinds.end()) {
      c.error(k.source(), "unknown kind " + qt(kind) + suggestion(kind, kKinds) +
                              "; kinds are [[host]], [[template]], [[team]] and [[channel]]");
      continue;
    }
    if (!v.is_array_of_tables()) {
      c.error(v.source(), qt(kind) + " must be an array of tables: write [[" + kind + "]], not [" +
                              kind + "] or " + kind + " = ...");
      continue;
    }
    for (auto&& n : *v.as_array()) {
      const toml::table& t = *n.as_table();
      if (kind == "host") set.hosts.push_back(read_host(c, t));
      if (kind == "template") set.templates.push_back(read_template(c, t));
      if (kind == "team") set.teams.push_back(read_team(c, t));
      if (kind == "channel") set.channels.push_back(read_channel(c, t));
    }
  }
}

json::object labels_json(const std::map<std::string, std::string>& m) {
  json::object o;
  for (auto& [k, v] : m) o[k] = v;
  return o;
}
json::value opt(const std::optional<std::int64_t>& v) {
  return v ? json::value(*v) : json::value(nullptr);
}

json::value sorted(const json::value& v) {
  if (v.is_object()) {
    std::vector<std::pair<std::string, const json::value*>> kv;
    for (auto& e : v.get_object()) kv.emplace_back(std::string(e.key()), &e.value());
    std::sort(kv.begin(), kv.end(), [](auto& a, auto& b) { return a.first < b.first; });
    json::object o;
    for (auto& [k, p] : kv) o[k] = sorted(*p);
    return o;
  }
  if (v.is_array()) {
    json::array a;
    for (auto& e : v.get_array()) a.push_back(sorted(e));
    return a;
  }
  return v;
}

bool plain_key(std::string_view k) {
  return !k.empty() && std::all_of(k.begin(), k.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  });
}

void diff(const json::value& a, const json::value& b, const std::string& path,
          std::vector<FieldChange>& out) {
  if (a.is_object() && b.is_object()) {
    std::set<std::string> keys;
    for (auto& e : a.get_object()) keys.insert(std::string(e.key()));
    for (auto& e : b.get_object()) keys.insert(std::string(e.key()));
    for (auto& k : keys) {
      std::string p =
          (path.empty() ? "" : path + ".") + (plain_key(k) ? k : json::serialize(json::value(k)));
      const json::value* av = a.get_object().if_contains(k);
      const json::value* bv = b.get_object().if_contains(k);
      static const json::value null_value;
      diff(av ? *av : null_value, bv ? *bv : null_value, p, out);
    }
    return;
  }
  if (a != b) out.push_back({path, a, b});
}

}  // namespace

ParseResult parse_spec_files(const std::vector<SourceFile>& files) {
  ParseResult r;
  std::vector<const SourceFile*> order;
  for (auto& f : files) order.push_back(&f);
  std::stable_sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->name < b->name; });
  // Files parse independently: large sets are read by several threads, each file into
  // its own slot, then joined in name order (the result does not depend on the threads).
  struct Parsed {
    SpecSet set;
    std::vector<Diagnostic> diags;
  };
  std::vector<Parsed> parsed(order.size());
  std::size_t bytes = 0;
  for (auto* f : order) bytes += f->text.size();
  const std::size_t workers =
      bytes < (256u << 10)
          ? 1
          : std::min<std::size_t>(order.size(), std::max(1u, std::thread::hardware_concurrency()));
  auto work = [&](std::size_t first) {
    for (std::size_t i = first; i < order.size(); i += workers)
      parse_file(*order[i], parsed[i].set, parsed[i].diags);
  };
  {
    std::vector<std::jthread> threads;
    for (std::size_t w = 1; w < workers; ++w) threads.emplace_back(work, w);
    work(0);
  }
  for (auto& p : parsed) {
    auto move_all = [](auto& to, auto& from) {
      to.insert(to.end(), std::make_move_iterator(from.begin()),
                std::make_move_iterator(from.end()));
    };
    move_all(r.set.hosts, p.set.hosts);
    move_all(r.set.templates, p.set.templates);
    move_all(r.set.teams, p.set.teams);
    move_all(r.set.channels, p.set.channels);
    move_all(r.diagnostics, p.diags);
  }
  check_references(r.set, r.diagnostics);
  std::stable_sort(r.diagnostics.begin(), r.diagnostics.end(), [](auto& a, auto& b) {
    return std::tie(a.file, a.line, a.column, a.message) <
           std::tie(b.file, b.line, b.column, b.message);
  });
  return r;
}

ParseResult load_spec_dir(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  std::vector<SourceFile> files;
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  if (ec) {
    ParseResult r;
    r.diagnostics.push_back(
        {dir.string(), 0, 0, "cannot read the spec directory: " + ec.message()});
    return r;
  }
  std::vector<Diagnostic> io_errors;
  for (const auto& e : it) {
    if (e.path().extension() != ".toml" || !e.is_regular_file(ec)) continue;
    std::ifstream in(e.path(), std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    if (!in) {
      io_errors.push_back({e.path().string(), 0, 0, "cannot read the file"});
      continue;
    }
    files.push_back({e.path().string(), ss.str()});
  }
  ParseResult r = parse_spec_files(files);
  r.diagnostics.insert(r.diagnostics.begin(), io_errors.begin(), io_errors.end());
  return r;
}

json::object to_json(const HostSpec& h) {
  json::object cap{{"disk_gb", opt(h.capacity.disk_gb)},
                   {"max_sandboxes", opt(h.capacity.max_sandboxes)},
                   {"memory_mb", opt(h.capacity.memory_mb)},
                   {"vcpus", opt(h.capacity.vcpus)}};
  return {{"address", h.address}, {"capacity", cap},      {"labels", labels_json(h.labels)},
          {"name", h.name},       {"runtime", h.runtime}, {"state", h.state}};
}

json::object to_json(const TemplateSpec& t) {
  json::value ready = nullptr;
  if (t.ready)
    ready = json::object{{"command", t.ready->command},
                         {"interval_ms", t.ready->interval_ms},
                         {"timeout_sec", t.ready->timeout_sec}};
  json::array build;
  for (auto& b : t.build) build.push_back(json::value(b));
  return {{"base", t.base.empty() ? json::value(nullptr) : json::value(t.base)},
          {"build", build},
          {"disk_mb", t.disk_mb},
          {"env", labels_json(t.env)},
          {"image", t.image.empty() ? json::value(nullptr) : json::value(t.image)},
          {"memory_mb", t.memory_mb},
          {"name", t.name},
          {"present_on", labels_json(t.present_on)},
          {"ready", ready},
          {"start", t.start},
          {"team", t.team},
          {"user", t.user},
          {"vcpus", t.vcpus},
          {"workdir", t.workdir}};
}

json::object to_json(const TeamSpec& t) {
  json::array members, keys;
  for (auto& m : t.members) members.push_back(json::object{{"email", m.email}, {"role", m.role}});
  for (auto& k : t.api_keys) keys.push_back(json::object{{"name", k.name}, {"sha256", k.sha256}});
  return {{"api_keys", keys},
          {"display_name", t.display_name},
          {"limits", json::object{{"concurrent_sandboxes", opt(t.limits.concurrent_sandboxes)},
                                  {"memory_mb", opt(t.limits.memory_mb)},
                                  {"vcpus", opt(t.limits.vcpus)}}},
          {"members", members},
          {"name", t.name}};
}

json::object to_json(const ChannelSpec& c) {
  json::object secrets;
  for (auto& [name, ref] : c.secrets)
    secrets[name] =
        ref.env.empty() ? json::object{{"file", ref.file}} : json::object{{"env", ref.env}};
  json::array events;
  for (auto& e : c.events) events.push_back(json::value(e));
  json::object o{{"events", events},   {"name", c.name},     {"provider", c.provider},
                 {"secrets", secrets}, {"target", c.target}, {"team", c.team}};
  if (c.provider == "matrix") o["homeserver"] = c.homeserver;
  return o;
}

std::string default_matrix_homeserver(std::string_view room) {
  const auto colon = room.find(':');
  if (colon == std::string_view::npos || colon + 1 >= room.size()) return {};
  return "https://" + std::string(room.substr(colon + 1));
}

std::string canonical_json(const json::value& v) {
  return json::serialize(sorted(v));
}

std::string content_hash(const json::value& v) {
  return crypto::sha256_hex(canonical_json(v));
}

std::vector<FieldChange> field_changes(const json::object& old_obj, const json::object& new_obj) {
  std::vector<FieldChange> out;
  diff(old_obj, new_obj, "", out);
  std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.path < b.path; });
  return out;
}

}  // namespace wrenn::spec
