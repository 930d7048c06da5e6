// wrennctl: the command-line client of the Wrenn control plane.
//
//   wrennctl diff -f DIR      the plan of a spec directory against the fleet (exit 0/2/1)
//   wrennctl apply -f DIR     the same, then apply it (guarded by the plan's revision)
//   wrennctl get KIND [NAME]  declared resources with live status
//   wrennctl delete KIND NAME, wrennctl host token NAME
//   wrennctl sandbox create|ls|exec|rm
//
// Exit codes: 0 success (no changes), 2 the plan has changes (diff), 1 any error. Errors go
// to stderr as "error: …"; results to stdout. Colour only on a terminal without NO_COLOR.
#include <unistd.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "config.h"
#include "crypto/encoding.h"
#include "http_client.h"
#include "spec/spec.h"

namespace wrenn::ctl {
namespace {

namespace json = boost::json;
namespace fs = std::filesystem;
using boost::beast::http::verb;

// ---- Errors and exit codes --------------------------------------------------------------

constexpr int kExitOk = 0;
constexpr int kExitError = 1;
constexpr int kExitChanges = 2;

// A failure already explained to the user: main prints "error: " + what() and exits 1.
struct Failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// ---- Command line -----------------------------------------------------------------------

const std::set<std::string> kBoolFlags = {"--prune", "--yes", "-y", "--help", "-h"};
const std::set<std::string> kValueFlags = {"--server",   "--api-key", "--ca-cert", "-f",
                                           "--filename", "--set",     "-o",        "--output",
                                           "--template", "--timeout", "--revision"};

struct Args {
  std::vector<std::string> positional;
  std::map<std::string, std::string> values;  // canonical long names
  std::set<std::string> bools;
  std::vector<std::string> rest;  // after "--"
  bool has(const std::string& f) const { return bools.count(f) != 0; }
  std::optional<std::string> value(const std::string& f) const {
    auto it = values.find(f);
    if (it == values.end()) return std::nullopt;
    return it->second;
  }
};

std::string canonical_flag(const std::string& f) {
  if (f == "-f" || f == "--filename") return "--file";
  if (f == "-o") return "--output";
  if (f == "-y") return "--yes";
  if (f == "-h") return "--help";
  return f;
}

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string s = argv[i];
    if (s == "--") {
      for (++i; i < argc; ++i) a.rest.emplace_back(argv[i]);
      break;
    }
    if (s.size() > 1 && s[0] == '-') {
      std::string name = s, value;
      bool inline_value = false;
      if (auto eq = s.find('='); eq != std::string::npos && s.rfind("--", 0) == 0) {
        name = s.substr(0, eq);
        value = s.substr(eq + 1);
        inline_value = true;
      }
      if (name == "--file") name = "-f";
      if (kBoolFlags.count(name)) {
        if (inline_value) throw UsageError("flag " + name + " takes no value");
        a.bools.insert(canonical_flag(name));
      } else if (kValueFlags.count(name)) {
        if (!inline_value) {
          if (i + 1 >= argc) throw UsageError("flag " + name + " needs a value");
          value = argv[++i];
        }
        a.values[canonical_flag(name)] = value;
      } else {
        throw UsageError("unknown flag " + name + " (see wrennctl --help)");
      }
      continue;
    }
    a.positional.push_back(std::move(s));
  }
  return a;
}

const char* kUsage =
    R"(wrennctl: manage a Wrenn fleet declaratively, and its sandboxes.

Usage: wrennctl [global flags] COMMAND [flags]

Commands:
  diff -f DIR              show what applying the specs in DIR would change
  apply -f DIR             apply the specs in DIR (asks first unless --yes)
  get KIND [NAME]          list declared resources with live status, or show one
  delete KIND NAME         delete a declared resource and what it created
  host token NAME          a registration token and command for a declared host
  sandbox create|ls|exec|rm  quick sandbox work

Global flags (precedence: flag > environment > config file > default):
  --server URL     control plane URL (WRENN_URL; default http://127.0.0.1:8000)
  --api-key KEY    API key (WRENN_API_KEY); fleet commands need a platform admin key
  --ca-cert FILE   trust this PEM CA bundle for https (WRENN_CA_CERT)
  -h, --help       help for wrennctl or a command

Config file: $WRENN_CONFIG, else ~/.config/wrenn/config.toml, with
  server = "https://cp.example.com"
  api_key = "wrn_…"
  ca_cert = "/etc/wrenn/ca.pem"

Exit codes: 0 success or no changes, 2 the plan has changes (diff), 1 error.
Run "wrennctl COMMAND --help" for a command's flags.
)";

const std::map<std::string, std::string> kCommandHelp = {
    {"diff", R"(Usage: wrennctl diff -f DIR [--prune] [--set NAME] [-o json]

Validates the *.toml files directly in DIR (not sub-directories), then asks the control
plane for the plan against the fleet and prints it:
  + create   ~ update (field: old -> new)   - delete (only with --prune)
  ! drift    (the live state differs from what was applied)

Flags:
  -f, --file DIR   the spec directory (required)
  --prune          plan deleting this apply set's resources that DIR no longer declares
  --set NAME       the apply set (default: DIR's base name, lower-cased, [a-z0-9._-])
  -o json          print the control plane's plan as JSON

Exit codes: 0 no changes, 2 changes, 1 error (invalid specs: every problem as
file:line:column: message).
)"},
    {"apply", R"(Usage: wrennctl apply -f DIR [--prune] [--yes] [--set NAME] [-o json]

Plans like "wrennctl diff", prints the plan, asks "Apply these changes? [y/N]" on a
terminal, then applies it in one transaction guarded by the plan's revision: if the fleet
changed in between, nothing is applied and the command fails (run it again).
Without a terminal, --yes is required. No changes: says so and exits 0.

Flags:
  -f, --file DIR   the spec directory (required)
  --prune          also delete this apply set's resources that DIR no longer declares
  --yes, -y        do not ask
  --set NAME       the apply set (default: DIR's base name)
  -o json          print the apply's result as JSON
)"},
    {"get", R"(Usage: wrennctl get KIND [NAME] [-o json|wide]

KIND: host(s), template(s), team(s), channel(s), apply-sets.
Without NAME: a table with live status (hosts: status, state, last heartbeat, sandboxes,
free capacity; templates: phase and hosts ready). With NAME: details, conditions, the
spec, and for templates the build log per host.

Flags:
  -o wide   more columns      -o json   the control plane's JSON
)"},
    {"delete", R"(Usage: wrennctl delete KIND NAME [--yes]

Deletes a declared resource (host, template, team, channel) and the live object it
created. Asks first on a terminal; without a terminal, --yes is required.
)"},
    {"host", R"(Usage: wrennctl host token NAME [-o json]

Issues a one-time registration token for a declared host that has no agent yet and
prints the wrenn-agent command to run on that host.
)"},
    {"sandbox", R"(Usage:
  wrennctl sandbox create [--template T] [--timeout S]   prints the new sandbox's id
  wrennctl sandbox ls [-o json]
  wrennctl sandbox exec ID [--timeout S] -- CMD [ARGS…]  runs CMD, prints its output and
                                                         exits with its exit code
  wrennctl sandbox rm ID
)"},
};

// ---- Output -----------------------------------------------------------------------------

bool g_color = false;

std::string paint(const std::string& s, const char* code) {
  if (!g_color) return s;
  return std::string("\033[") + code + "m" + s + "\033[0m";
}

std::string value_text(const json::value& v) {
  if (v.is_null()) return "(none)";
  return json::serialize(v);
}

std::string str_of(const json::value* v) {
  if (!v || v->is_null()) return "";
  if (v->is_string()) return std::string(v->get_string());
  return json::serialize(*v);
}

std::string field(const json::object& o, std::string_view key) {
  return str_of(o.if_contains(key));
}

const json::object& obj_at(const json::object& o, std::string_view key) {
  static const json::object empty;
  auto* v = o.if_contains(key);
  return v && v->is_object() ? v->get_object() : empty;
}

const json::array& arr_at(const json::object& o, std::string_view key) {
  static const json::array empty;
  auto* v = o.if_contains(key);
  return v && v->is_array() ? v->get_array() : empty;
}

std::int64_t int_at(const json::object& o, std::string_view key) {
  auto* v = o.if_contains(key);
  if (!v) return 0;
  if (v->is_int64()) return v->get_int64();
  if (v->is_uint64()) return static_cast<std::int64_t>(v->get_uint64());
  return 0;
}

void print_table(const std::vector<std::string>& header,
                 const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> w(header.size());
  for (std::size_t i = 0; i < header.size(); ++i) w[i] = header[i].size();
  for (auto& r : rows)
    for (std::size_t i = 0; i < r.size() && i < w.size(); ++i) w[i] = std::max(w[i], r[i].size());
  auto line = [&](const std::vector<std::string>& r) {
    std::string s;
    for (std::size_t i = 0; i < r.size(); ++i) {
      s += r[i];
      if (i + 1 < r.size()) s += std::string(w[i] - r[i].size() + 3, ' ');
    }
    std::cout << s << "\n";
  };
  line(header);
  for (auto& r : rows) line(r);
}

// ---- The control plane ------------------------------------------------------------------

struct Ctl {
  Settings settings;
  std::optional<HttpClient> client;

  HttpClient& http() {
    if (!client) {
      ClientOptions o;
      o.base_url = settings.server.value;
      o.api_key = settings.api_key.value;
      o.ca_cert_file = settings.ca_cert.value;
      client.emplace(o);
    }
    return *client;
  }

  // Calls the API; returns the JSON body of a 2xx answer. Any other answer throws
  // Failure with the error envelope's message (and the code in `code` when asked).
  json::value call(verb method, const std::string& target, const std::string& body = "",
                   std::string* code = nullptr, json::object* error_out = nullptr) {
    HttpResponse r;
    try {
      r = http().request(method, target, body);
    } catch (const TransportError& e) {
      std::string msg = e.what();
      if (e.reason() == "connection refused")
        msg += "; is wrenn-cp running? set --server or WRENN_URL";
      else
        msg += "; check --server or WRENN_URL";
      throw Failure(msg);
    }
    boost::system::error_code ec;
    json::value v = json::parse(r.body, ec);
    if (r.status >= 200 && r.status < 300) {
      if (r.body.empty()) return json::value(nullptr);  // 204 No Content
      if (ec) throw Failure("the control plane answered " + target + " with invalid JSON");
      return v;
    }
    std::string err_code, err_msg;
    if (!ec && v.is_object()) {
      const json::object& err = obj_at(v.get_object(), "error");
      err_code = field(err, "code");
      err_msg = field(err, "message");
      if (error_out) *error_out = err;
    }
    if (code) *code = err_code;
    if (r.status == 401) {
      if (settings.api_key.value.empty())
        throw Failure(
            "the control plane requires an API key: set --api-key, WRENN_API_KEY or api_key in "
            "the config file");
      throw Failure("the API key was refused by the control plane at " + settings.server.value +
                    " (key from " + settings.api_key.source +
                    "): check --api-key, WRENN_API_KEY or the config file" +
                    (err_msg.empty() ? "" : " (" + err_msg + ")"));
    }
    if (r.status == 403)
      throw Failure((err_msg.empty() ? "forbidden" : err_msg) +
                    " (fleet commands need a platform admin API key)");
    if (err_msg.empty())
      err_msg = "the control plane answered HTTP " + std::to_string(r.status) + " to " + target;
    throw Failure(err_msg);
  }
};

// ---- Confirmation -------------------------------------------------------------------------

// true when the user confirmed; without a terminal (and without --yes) refuses.
bool confirm(const std::string& question, const std::string& what) {
  if (!isatty(STDIN_FILENO))
    throw Failure("refusing to " + what +
                  " without confirmation: stdin is not a terminal; pass --yes to proceed");
  std::cout << question << " [y/N] " << std::flush;
  std::string answer;
  if (!std::getline(std::cin, answer)) return false;
  for (auto& c : answer) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return answer == "y" || answer == "yes";
}

// ---- diff / apply -------------------------------------------------------------------------

std::string sanitize_set_name(std::string s) {
  for (auto& c : s) {
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-')) c = '-';
  }
  while (!s.empty() && !std::isalnum(static_cast<unsigned char>(s.front()))) s.erase(0, 1);
  if (s.size() > 63) s.resize(63);
  if (s.empty()) s = "default";
  return s;
}

struct SpecDir {
  std::string shown;  // DIR as the user wrote it
  std::string set;
  std::vector<spec::SourceFile> files;        // name: the plain file name
  std::vector<spec::SourceFile> shown_files;  // name: DIR/file, for local diagnostics
};

SpecDir read_spec_dir(const Args& a) {
  auto dir = a.value("--file");
  if (!dir || dir->empty()) throw UsageError("-f DIR is required (the spec directory)");
  SpecDir d;
  d.shown = *dir;
  std::error_code ec;
  if (!fs::is_directory(*dir, ec))
    throw Failure("-f " + *dir +
                  ": not a directory (wrennctl reads the *.toml files in a "
                  "directory)");
  fs::path abs = fs::weakly_canonical(fs::absolute(*dir), ec);
  if (auto s = a.value("--set"))
    d.set = *s;
  else
    d.set = sanitize_set_name(abs.filename().string());
  std::vector<std::string> names;
  for (auto& e : fs::directory_iterator(*dir, ec))
    if (e.path().extension() == ".toml" && e.is_regular_file())
      names.push_back(e.path().filename());
  if (ec) throw Failure("cannot read " + *dir + ": " + ec.message());
  std::sort(names.begin(), names.end());
  std::vector<spec::SourceFile> shown_files;
  for (auto& n : names) {
    const fs::path p = fs::path(*dir) / n;
    std::ifstream in(p, std::ios::binary);
    if (!in) throw Failure("cannot read " + p.string());
    std::ostringstream ss;
    ss << in.rdbuf();
    shown_files.push_back({p.string(), ss.str()});
    d.files.push_back({n, ss.str()});
  }
  d.shown_files = std::move(shown_files);
  return d;
}

std::string plan_body(const SpecDir& d, bool prune, std::optional<std::int64_t> revision) {
  json::array files;
  for (auto& f : d.files) files.push_back(json::object{{"name", f.name}, {"text", f.text}});
  json::object o{{"apply_set", d.set}, {"prune", prune}, {"files", std::move(files)}};
  if (revision) o["revision"] = *revision;
  return json::serialize(o);
}

std::int64_t changes_of(const json::object& plan) {
  const json::object& s = obj_at(plan, "summary");
  return int_at(s, "create") + int_at(s, "update") + int_at(s, "delete") + int_at(s, "drift");
}

// Throws Failure with every diagnostic of an invalid_spec answer on stderr.
json::value call_plan(Ctl& ctl, const std::string& target, const std::string& body,
                      std::string* code = nullptr) {
  json::object err;
  std::string c;
  try {
    return ctl.call(verb::post, target, body, &c, &err);
  } catch (const Failure&) {
    if (code) *code = c;
    if (c == "invalid_spec")
      for (auto& d : arr_at(err, "diagnostics")) std::cerr << str_of(&d) << "\n";
    throw;
  }
}

void print_plan(const json::object& plan, const SpecDir& d, bool prune) {
  std::string out;
  for (auto& ev : arr_at(plan, "entries")) {
    if (!ev.is_object()) continue;
    const json::object& e = ev.get_object();
    const std::string action = field(e, "action");
    const char* sym = "?";
    const char* color = "0";
    if (action == "create") sym = "+", color = "32";
    if (action == "update") sym = "~", color = "33";
    if (action == "delete") sym = "-", color = "31";
    if (action == "drift") sym = "!", color = "35";
    std::string head = std::string(sym) + " " + field(e, "kind") + " " + field(e, "name");
    const std::string msg = field(e, "message");
    if (!msg.empty()) head += ": " + msg;
    out += paint(head, color) + "\n";
    if (action == "delete") continue;
    for (auto& fv : arr_at(e, "fields")) {
      if (!fv.is_object()) continue;
      const json::object& f = fv.get_object();
      const json::value* o = f.if_contains("old");
      const json::value* n = f.if_contains("new");
      const json::value null;
      if (action == "create") {
        if (!n || n->is_null()) continue;
        out += "    " + field(f, "path") + " = " + value_text(*n) + "\n";
      } else {
        out += "    " + field(f, "path") + ": " + value_text(o ? *o : null) + " -> " +
               value_text(n ? *n : null) + "\n";
      }
    }
  }
  std::cout << out;
  const json::array& unpruned = arr_at(plan, "unpruned");
  if (!prune && !unpruned.empty()) {
    const std::size_t n = unpruned.size();
    std::cout << "\n"
              << n << (n == 1 ? " resource of this set is" : " resources of this set are")
              << " no longer declared; --prune deletes " << (n == 1 ? "it" : "them") << ":\n";
    for (auto& u : unpruned)
      if (u.is_object())
        std::cout << "    " << field(u.get_object(), "kind") << " " << field(u.get_object(), "name")
                  << "\n";
  }
  if (changes_of(plan) == 0) {
    std::cout << "No changes. The fleet matches " << d.shown << " (apply set " << d.set << ").\n";
    return;
  }
  const json::object& s = obj_at(plan, "summary");
  std::cout << "\nPlan: " << int_at(s, "create") << " to create, " << int_at(s, "update")
            << " to update, " << int_at(s, "delete") << " to delete, " << int_at(s, "drift")
            << " drifted.\n";
}

// The plan of d. The (read-only) plan request runs while the specs are validated locally,
// so a large tree costs one parse, not two in a row; local problems win: they are printed
// with their positions and the command exits 1 without waiting for the control plane.
json::value plan_validated(Ctl& ctl, const SpecDir& d, bool prune) {
  ctl.http();  // constructed here: a bad URL is reported before anything starts
  const std::string body = plan_body(d, prune, std::nullopt);
  json::value result;
  std::exception_ptr failure;
  std::string code;
  json::object err;
  std::thread request([&] {
    try {
      result = ctl.call(verb::post, "/v1/fleet/plan", body, &code, &err);
    } catch (...) {
      failure = std::current_exception();
    }
  });
  spec::ParseResult res = spec::parse_spec_files(d.shown_files);
  if (!res.ok()) {
    for (auto& diag : res.diagnostics) std::cerr << diag.str() << "\n";
    std::cerr << "error: " << res.diagnostics.size()
              << (res.diagnostics.size() == 1 ? " problem" : " problems") << " in the specs in "
              << d.shown << "; nothing was applied" << std::endl;
    std::cout.flush();
    std::_Exit(kExitError);  // the request may still be waiting on the network
  }
  request.join();
  if (failure) {
    if (code == "invalid_spec")
      for (auto& dv : arr_at(err, "diagnostics")) std::cerr << str_of(&dv) << "\n";
    std::rethrow_exception(failure);
  }
  return result;
}

int cmd_diff(Ctl& ctl, const Args& a) {
  const SpecDir d = read_spec_dir(a);
  const bool prune = a.has("--prune");
  const std::string out = a.value("--output").value_or("");
  if (!out.empty() && out != "json") throw UsageError("-o must be json for diff");
  json::value plan = plan_validated(ctl, d, prune);
  if (!plan.is_object()) throw Failure("the control plane's plan is not a JSON object");
  if (out == "json")
    std::cout << json::serialize(plan) << "\n";
  else
    print_plan(plan.get_object(), d, prune);
  return changes_of(plan.get_object()) == 0 ? kExitOk : kExitChanges;
}

int cmd_apply(Ctl& ctl, const Args& a) {
  const SpecDir d = read_spec_dir(a);
  const bool prune = a.has("--prune");
  const std::string out = a.value("--output").value_or("");
  if (!out.empty() && out != "json") throw UsageError("-o must be json for apply");
  json::value planv = plan_validated(ctl, d, prune);
  if (!planv.is_object()) throw Failure("the control plane's plan is not a JSON object");
  const json::object& plan = planv.get_object();
  std::int64_t revision = int_at(plan, "revision");
  // Hidden: apply against a given revision (tests of the revision check).
  if (auto r = a.value("--revision")) {
    try {
      revision = std::stoll(*r);
    } catch (const std::exception&) {
      throw UsageError("--revision must be a number");
    }
  }
  if (out != "json") print_plan(plan, d, prune);
  if (changes_of(plan) == 0 && !a.value("--revision")) {
    if (out == "json") std::cout << json::serialize(plan) << "\n";
    return kExitOk;
  }
  if (!a.has("--yes")) {
    std::cout << "\n";
    if (!confirm("Apply these changes?", "apply")) {
      std::cout << "Apply cancelled; nothing was changed.\n";
      return kExitError;
    }
  }
  std::string code;
  json::value res;
  try {
    res = call_plan(ctl, "/v1/fleet/apply", plan_body(d, prune, revision), &code);
  } catch (const Failure& f) {
    if (code == "revision_conflict")
      throw Failure(std::string(f.what()) + " (nothing was applied)");
    throw;
  }
  if (!res.is_object()) throw Failure("the control plane's apply answer is not a JSON object");
  if (out == "json") {
    std::cout << json::serialize(res) << "\n";
    return kExitOk;
  }
  const json::object& s = obj_at(res.get_object(), "summary");
  std::cout << "Applied: " << int_at(s, "create") << " created, " << int_at(s, "update")
            << " updated, " << int_at(s, "delete") << " deleted, " << int_at(s, "drift")
            << " drift repaired, revision " << int_at(res.get_object(), "revision") << ".\n";
  return kExitOk;
}

// ---- get / delete / host token ------------------------------------------------------------

// "hosts" -> "host", "apply-set" -> "apply-sets"; throws on an unknown kind.
std::string normalize_kind(std::string k) {
  for (auto& c : k) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (k == "apply-set" || k == "apply-sets" || k == "applysets" || k == "applyset" || k == "sets")
    return "apply-sets";
  if (!k.empty() && k.back() == 's') k.pop_back();
  for (const char* known : {"host", "template", "team", "channel"})
    if (k == known) return k;
  throw UsageError("unknown kind \"" + k +
                   "\": expected host(s), template(s), team(s), channel(s) or apply-sets");
}

std::string url_escape(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02X", c);
      out += buf;
    }
  }
  return out;
}

std::string phase_of(const json::object& r) {
  std::string p = field(obj_at(r, "status"), "phase");
  return p.empty() ? "-" : p;
}

std::string or_dash(std::string s) {
  return s.empty() ? "-" : s;
}

std::string joined(const json::array& a, const char* sep = ",") {
  std::string s;
  for (auto& v : a) s += (s.empty() ? "" : sep) + str_of(&v);
  return s;
}

void print_resources(const json::array& list, const std::string& kind, bool wide) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> header;
  if (kind == "host") {
    header = {"NAME", "STATUS", "STATE", "LAST-HEARTBEAT", "SANDBOXES", "FREE-VCPU", "FREE-MEM"};
    if (wide) header.insert(header.end(), {"ADDRESS", "RUNTIMES", "PHASE", "APPLY-SET"});
  } else if (kind == "template") {
    header = {"NAME", "TEAM", "PHASE", "HOSTS-READY"};
    if (wide) header.insert(header.end(), {"GENERATION", "OBSERVED", "APPLY-SET", "MESSAGE"});
  } else if (kind == "team") {
    header = {"NAME", "MEMBERS", "API-KEYS", "SANDBOXES", "PHASE"};
    if (wide) header.insert(header.end(), {"GENERATION", "APPLY-SET", "RESOURCE-ID"});
  } else {
    header = {"NAME", "PROVIDER", "TARGET", "EVENTS", "PHASE"};
    if (wide) header.insert(header.end(), {"GENERATION", "APPLY-SET", "RESOURCE-ID"});
  }
  for (auto& rv : list) {
    if (!rv.is_object()) continue;
    const json::object& r = rv.get_object();
    const json::object& live = obj_at(r, "live");
    std::vector<std::string> row{field(r, "name")};
    if (kind == "host") {
      std::string status = field(live, "status");
      if (status == "pending") status = "awaiting-registration";
      const bool known = !field(live, "last_heartbeat_at").empty();
      row.insert(row.end(), {or_dash(status), or_dash(field(live, "state")),
                             or_dash(field(live, "last_heartbeat_at")),
                             live.empty() ? "-" : std::to_string(int_at(live, "sandboxes")),
                             known ? std::to_string(int_at(live, "free_vcpus")) : "-",
                             known ? std::to_string(int_at(live, "free_memory_mb")) + "Mi" : "-"});
      if (wide)
        row.insert(row.end(),
                   {or_dash(field(live, "address")), or_dash(joined(arr_at(live, "runtimes"))),
                    phase_of(r), field(r, "apply_set")});
    } else if (kind == "template") {
      std::string team = field(obj_at(r, "spec"), "team");
      if (team.empty()) team = field(live, "team");
      // Templates are named "team/name" in the inventory.
      if (auto slash = row[0].find('/'); team.empty() && slash != std::string::npos)
        team = row[0].substr(0, slash);
      const json::array& builds = arr_at(live, "builds");
      std::size_t ready = 0;
      for (auto& b : builds)
        if (b.is_object() && field(b.get_object(), "state") == "ready") ++ready;
      row.insert(row.end(), {or_dash(team), phase_of(r),
                             std::to_string(ready) + "/" + std::to_string(builds.size())});
      if (wide)
        row.insert(row.end(),
                   {std::to_string(int_at(r, "generation")),
                    std::to_string(int_at(r, "observed_generation")), field(r, "apply_set"),
                    or_dash(field(obj_at(r, "status"), "message"))});
    } else if (kind == "team") {
      row.insert(row.end(),
                 {std::to_string(int_at(live, "members")), std::to_string(int_at(live, "api_keys")),
                  std::to_string(int_at(live, "sandboxes")), phase_of(r)});
      if (wide)
        row.insert(row.end(), {std::to_string(int_at(r, "generation")), field(r, "apply_set"),
                               field(r, "resource_id")});
    } else {
      row.insert(row.end(), {or_dash(field(live, "provider")), or_dash(field(live, "target")),
                             or_dash(joined(arr_at(live, "events"))), phase_of(r)});
      if (wide)
        row.insert(row.end(), {std::to_string(int_at(r, "generation")), field(r, "apply_set"),
                               field(r, "resource_id")});
    }
    rows.push_back(std::move(row));
  }
  if (rows.empty()) {
    std::cout << "No " << kind << "s declared.\n";
    return;
  }
  print_table(header, rows);
}

// Flattened "path = value" lines of a JSON object (the spec, the live columns).
void flatten(const json::value& v, const std::string& path, std::vector<std::string>& out) {
  if (v.is_object() && !v.get_object().empty()) {
    for (auto& kv : v.get_object())
      flatten(kv.value(), path.empty() ? std::string(kv.key()) : path + "." + std::string(kv.key()),
              out);
    return;
  }
  if (path == "builds") return;  // shown separately
  out.push_back(path + " = " + value_text(v));
}

void print_resource(const json::object& r, const std::string& server) {
  const std::string kind = field(r, "kind"), name = field(r, "name");
  const json::object& status = obj_at(r, "status");
  std::cout << "Kind:         " << kind << "\n"
            << "Name:         " << name << "\n"
            << "Apply set:    " << field(r, "apply_set") << "\n"
            << "Resource id:  " << field(r, "resource_id") << "\n"
            << "Generation:   " << int_at(r, "generation") << " (observed "
            << int_at(r, "observed_generation") << ")\n"
            << "Applied at:   " << or_dash(field(r, "applied_at")) << "\n"
            << "Phase:        " << phase_of(r);
  if (!field(status, "message").empty()) std::cout << " (" << field(status, "message") << ")";
  std::cout << "\n";
  if (!field(r, "status_changed_at").empty())
    std::cout << "Changed at:   " << field(r, "status_changed_at") << "\n";
  const json::array& conds = arr_at(status, "conditions");
  if (!conds.empty()) {
    std::cout << "\nConditions:\n";
    std::vector<std::vector<std::string>> rows;
    for (auto& c : conds)
      if (c.is_object()) {
        const json::object& o = c.get_object();
        rows.push_back({"  " + field(o, "type"), field(o, "status"), or_dash(field(o, "reason")),
                        or_dash(field(o, "last_transition")), field(o, "message")});
      }
    print_table({"  TYPE", "STATUS", "REASON", "LAST-TRANSITION", "MESSAGE"}, rows);
  }
  if (auto* live = r.if_contains("live"); live && live->is_object()) {
    std::vector<std::string> lines;
    flatten(*live, "", lines);
    if (!lines.empty()) {
      std::cout << "\nLive:\n";
      for (auto& l : lines) std::cout << "  " << l << "\n";
    }
  }
  if (auto* spec = r.if_contains("spec"); spec && spec->is_object()) {
    std::vector<std::string> lines;
    flatten(*spec, "", lines);
    std::cout << "\nSpec:\n";
    for (auto& l : lines) std::cout << "  " << l << "\n";
  }
  if (kind == "template") {
    const json::array* builds = &arr_at(r, "builds");
    if (builds->empty()) builds = &arr_at(obj_at(r, "live"), "builds");
    std::cout << "\nBuilds:\n";
    if (builds->empty()) std::cout << "  (none yet)\n";
    for (auto& bv : *builds) {
      if (!bv.is_object()) continue;
      const json::object& b = bv.get_object();
      std::cout << "  " << or_dash(field(b, "host_name")) << " (" << field(b, "host_id")
                << "): " << field(b, "state");
      if (!field(b, "message").empty()) std::cout << ", " << field(b, "message");
      if (!field(b, "updated_at").empty()) std::cout << ", updated " << field(b, "updated_at");
      std::cout << "\n";
      const std::string log = field(b, "log");
      if (!log.empty()) {
        std::istringstream in(log);
        for (std::string l; std::getline(in, l);) std::cout << "    | " << l << "\n";
      }
    }
  }
  if (kind == "host" && field(obj_at(r, "live"), "status") == "pending")
    std::cout << "\nThis host is awaiting registration: no agent has registered for it yet.\n"
              << "Get a one-time token and the command to run on the host with:\n"
              << "  wrennctl --server " << server << " host token " << name << "\n";
}

int cmd_get(Ctl& ctl, const Args& a) {
  if (a.positional.size() < 2 || a.positional.size() > 3)
    throw UsageError("usage: wrennctl get KIND [NAME] [-o json|wide]");
  const std::string kind = normalize_kind(a.positional[1]);
  const std::string out = a.value("--output").value_or("");
  if (!out.empty() && out != "json" && out != "wide") throw UsageError("-o must be json or wide");
  const bool has_name = a.positional.size() == 3;
  if (kind == "apply-sets") {
    json::value v = ctl.call(verb::get, "/v1/fleet/apply-sets");
    const json::array& sets = arr_at(v.as_object(), "apply_sets");
    if (has_name) {
      const std::string& name = a.positional[2];
      const json::object* found = nullptr;
      for (auto& s : sets)
        if (s.is_object() && field(s.get_object(), "name") == name) found = &s.get_object();
      if (!found) throw Failure("apply set \"" + name + "\" does not exist");
      json::value res = ctl.call(verb::get, "/v1/fleet/resources?apply_set=" + url_escape(name));
      if (out == "json") {
        json::object o = *found;
        o["resources"] = arr_at(res.as_object(), "resources");
        std::cout << json::serialize(o) << "\n";
        return kExitOk;
      }
      std::cout << "Apply set:   " << name << "\nRevision:    " << int_at(*found, "revision")
                << "\nApplied at:  " << field(*found, "applied_at")
                << "\nApplied by:  " << or_dash(field(*found, "applied_by"))
                << "\nResources:   " << int_at(*found, "resources") << "\n\n";
      std::vector<std::vector<std::string>> rows;
      for (auto& r : arr_at(res.as_object(), "resources"))
        if (r.is_object())
          rows.push_back({field(r.get_object(), "kind"), field(r.get_object(), "name"),
                          phase_of(r.get_object())});
      print_table({"KIND", "NAME", "PHASE"}, rows);
      return kExitOk;
    }
    if (out == "json") {
      std::cout << json::serialize(v) << "\n";
      return kExitOk;
    }
    if (sets.empty()) {
      std::cout << "No apply sets yet.\n";
      return kExitOk;
    }
    std::vector<std::vector<std::string>> rows;
    for (auto& s : sets)
      if (s.is_object()) {
        const json::object& o = s.get_object();
        rows.push_back({field(o, "name"), std::to_string(int_at(o, "revision")),
                        std::to_string(int_at(o, "resources")), field(o, "applied_at"),
                        or_dash(field(o, "applied_by"))});
      }
    print_table({"NAME", "REVISION", "RESOURCES", "APPLIED-AT", "APPLIED-BY"}, rows);
    return kExitOk;
  }
  if (has_name) {
    json::value v =
        ctl.call(verb::get, "/v1/fleet/resources/" + kind + "/" + url_escape(a.positional[2]));
    if (out == "json")
      std::cout << json::serialize(v) << "\n";
    else
      print_resource(v.as_object(), ctl.settings.server.value);
    return kExitOk;
  }
  json::value v = ctl.call(verb::get, "/v1/fleet/resources?kind=" + kind);
  if (out == "json")
    std::cout << json::serialize(v) << "\n";
  else
    print_resources(arr_at(v.as_object(), "resources"), kind, out == "wide");
  return kExitOk;
}

int cmd_delete(Ctl& ctl, const Args& a) {
  if (a.positional.size() != 3) throw UsageError("usage: wrennctl delete KIND NAME [--yes]");
  const std::string kind = normalize_kind(a.positional[1]);
  if (kind == "apply-sets")
    throw UsageError("an apply set is deleted by applying it empty with --prune");
  const std::string& name = a.positional[2];
  if (!a.has("--yes") && !confirm("Delete " + kind + " " + name + " and what it created?",
                                  "delete " + kind + " " + name)) {
    std::cout << "Delete cancelled; nothing was changed.\n";
    return kExitError;
  }
  json::value v = ctl.call(verb::delete_, "/v1/fleet/resources/" + kind + "/" + url_escape(name));
  std::cout << "Deleted " << kind << " " << name;
  if (v.is_object() && v.get_object().contains("revision"))
    std::cout << ", revision " << int_at(v.get_object(), "revision");
  std::cout << ".\n";
  return kExitOk;
}

int cmd_host(Ctl& ctl, const Args& a) {
  if (a.positional.size() != 3 || a.positional[1] != "token")
    throw UsageError("usage: wrennctl host token NAME");
  const std::string& name = a.positional[2];
  json::value v =
      ctl.call(verb::post, "/v1/fleet/hosts/" + url_escape(name) + "/registration-token", "{}");
  if (a.value("--output").value_or("") == "json") {
    std::cout << json::serialize(v) << "\n";
    return kExitOk;
  }
  const json::object& o = v.as_object();
  std::string command = field(o, "command");
  const std::string placeholder = "<control plane URL>";
  if (auto p = command.find(placeholder); p != std::string::npos)
    command.replace(p, placeholder.size(), ctl.settings.server.value);
  std::cout << "Registration token for host " << name << " (" << field(o, "host_id")
            << "), valid once:\n  " << field(o, "registration_token") << "\n\nRun on the host:\n  "
            << command << "\n";
  return kExitOk;
}

// ---- sandbox ------------------------------------------------------------------------------

std::int64_t parse_seconds(const std::string& s, const char* flag) {
  try {
    std::size_t used = 0;
    long long v = std::stoll(s, &used);
    if (used != s.size() || v < 0) throw std::invalid_argument(s);
    return v;
  } catch (const std::exception&) {
    throw UsageError(std::string(flag) + " must be a whole number of seconds, got \"" + s + "\"");
  }
}

int cmd_sandbox(Ctl& ctl, const Args& a) {
  if (a.positional.size() < 2) throw UsageError("usage: wrennctl sandbox create|ls|exec|rm");
  const std::string sub = a.positional[1];
  const std::string out = a.value("--output").value_or("");
  if (sub == "create") {
    json::object body;
    if (auto t = a.value("--template")) body["template"] = *t;
    if (auto t = a.value("--timeout")) body["timeout_sec"] = parse_seconds(*t, "--timeout");
    json::value v = ctl.call(verb::post, "/v1/capsules", json::serialize(body));
    if (out == "json")
      std::cout << json::serialize(v) << "\n";
    else
      std::cout << field(v.as_object(), "id") << "\n";
    return kExitOk;
  }
  if (sub == "ls" || sub == "list") {
    json::value v = ctl.call(verb::get, "/v1/capsules");
    if (out == "json") {
      std::cout << json::serialize(v) << "\n";
      return kExitOk;
    }
    const json::array* list = v.if_array();
    if (!list && v.is_object()) list = &arr_at(v.get_object(), "capsules");
    std::vector<std::vector<std::string>> rows;
    if (list)
      for (auto& c : *list)
        if (c.is_object()) {
          const json::object& o = c.get_object();
          rows.push_back({field(o, "id"), field(o, "template"), field(o, "status"),
                          std::to_string(int_at(o, "vcpus")),
                          std::to_string(int_at(o, "memory_mb")) + "Mi", field(o, "created_at")});
        }
    if (rows.empty()) {
      std::cout << "No sandboxes.\n";
      return kExitOk;
    }
    print_table({"ID", "TEMPLATE", "STATUS", "VCPUS", "MEMORY", "CREATED"}, rows);
    return kExitOk;
  }
  if (sub == "exec") {
    if (a.positional.size() != 3 || a.rest.empty())
      throw UsageError("usage: wrennctl sandbox exec ID [--timeout S] -- CMD [ARGS...]");
    json::object body{{"cmd", a.rest[0]}};
    json::array args;
    for (std::size_t i = 1; i < a.rest.size(); ++i) args.push_back(json::value(a.rest[i]));
    body["args"] = std::move(args);
    std::int64_t timeout = 0;
    if (auto t = a.value("--timeout")) {
      timeout = parse_seconds(*t, "--timeout");
      body["timeout_sec"] = timeout;
    }
    // The command runs as long as it runs: the client waits for it (plus a margin).
    ClientOptions o = ctl.http().options();
    o.timeout = std::chrono::seconds(timeout > 0 ? timeout + 30 : 24 * 3600);
    ctl.client.emplace(o);
    json::value v = ctl.call(verb::post, "/v1/capsules/" + url_escape(a.positional[2]) + "/exec",
                             json::serialize(body));
    const json::object& r = v.as_object();
    if (out == "json") {
      std::cout << json::serialize(v) << "\n";
      return static_cast<int>(int_at(r, "exit_code"));
    }
    std::string so = field(r, "stdout"), se = field(r, "stderr");
    if (field(r, "encoding") == "base64") {
      try {
        so = crypto::base64_decode(so);
        se = crypto::base64_decode(se);
      } catch (const std::exception&) {
        throw Failure("the control plane sent output that is not valid base64");
      }
    }
    std::cout << so << std::flush;
    std::cerr << se << std::flush;
    if (r.contains("stdout_truncated") || r.contains("stderr_truncated"))
      std::cerr << "wrennctl: the output was truncated by the control plane\n";
    return static_cast<int>(int_at(r, "exit_code") & 0xff);
  }
  if (sub == "rm" || sub == "delete") {
    if (a.positional.size() != 3) throw UsageError("usage: wrennctl sandbox rm ID");
    ctl.call(verb::delete_, "/v1/capsules/" + url_escape(a.positional[2]));
    std::cout << "Removed " << a.positional[2] << "\n";
    return kExitOk;
  }
  throw UsageError("unknown sandbox command \"" + sub + "\": create, ls, exec or rm");
}

int run(int argc, char** argv) {
  Args a = parse_args(argc, argv);
  const std::string cmd = a.positional.empty() ? "" : a.positional[0];
  if (cmd.empty() || cmd == "help") {
    if (cmd == "help" && a.positional.size() > 1) {
      auto it = kCommandHelp.find(a.positional[1]);
      if (it == kCommandHelp.end()) throw UsageError("no command \"" + a.positional[1] + "\"");
      std::cout << it->second;
      return kExitOk;
    }
    if (cmd.empty() && !a.has("--help")) {
      std::cerr << kUsage;
      return kExitError;
    }
    std::cout << kUsage;
    return kExitOk;
  }
  if (a.has("--help")) {
    auto it = kCommandHelp.find(cmd);
    std::cout << (it == kCommandHelp.end() ? kUsage : it->second.c_str());
    return kExitOk;
  }
  g_color = isatty(STDOUT_FILENO) && !std::getenv("NO_COLOR");
  Ctl ctl;
  Flags flags;
  flags.server = a.value("--server");
  flags.api_key = a.value("--api-key");
  flags.ca_cert = a.value("--ca-cert");
  ctl.settings = resolve_settings(flags);
  if (cmd == "diff") return cmd_diff(ctl, a);
  if (cmd == "apply") return cmd_apply(ctl, a);
  if (cmd == "get") return cmd_get(ctl, a);
  if (cmd == "delete") return cmd_delete(ctl, a);
  if (cmd == "host") return cmd_host(ctl, a);
  if (cmd == "sandbox") return cmd_sandbox(ctl, a);
  throw UsageError("unknown command \"" + cmd + "\" (see wrennctl --help)");
}

}  // namespace
}  // namespace wrenn::ctl

int main(int argc, char** argv) {
  using namespace wrenn::ctl;
  try {
    return run(argc, argv);
  } catch (const UsageError& e) {
    std::cerr << "error: " << e.what() << "\n";
  } catch (const ConfigError& e) {
    std::cerr << "error: " << e.what() << "\n";
  } catch (const Failure& e) {
    std::cerr << "error: " << e.what() << "\n";
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
  }
  return kExitError;
}
