#include "sandbox/record.h"

#include <fcntl.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <cerrno>
#include <fstream>
#include <sstream>

#include "error.h"
#include "private_file.h"

namespace wrenn::agent {

namespace json = boost::json;

namespace {

json::object map_to_json(const std::map<std::string, std::string>& m) {
  json::object o;
  for (const auto& [k, v] : m) o[k] = v;
  return o;
}

std::map<std::string, std::string> map_from_json(const json::value* v) {
  std::map<std::string, std::string> m;
  if (!v || !v->is_object()) return m;
  for (const auto& [k, val] : v->as_object())
    if (val.is_string()) m[std::string(k)] = std::string(val.as_string());
  return m;
}

SandboxState state_from_name(std::string_view s) {
  if (s == "running") return SandboxState::kRunning;
  if (s == "paused") return SandboxState::kPaused;
  if (s == "stopping") return SandboxState::kStopping;
  return SandboxState::kStarting;
}

}  // namespace

std::string_view state_name(SandboxState s) {
  switch (s) {
    case SandboxState::kStarting:
      return "starting";
    case SandboxState::kRunning:
      return "running";
    case SandboxState::kPaused:
      return "paused";
    case SandboxState::kStopping:
      return "stopping";
  }
  return "starting";
}

std::string record_path(const std::string& state_dir, const std::string& id) {
  return state_dir + "/sandboxes/" + id + "/record.json";
}

void write_record(const std::string& state_dir, const SandboxRecord& r) {
  json::object o;
  o["id"] = r.id;
  o["template"] = r.template_name;
  o["runtime"] = r.runtime;
  o["vcpus"] = r.vcpus;
  o["memory_mb"] = r.memory_mb;
  o["disk_mb"] = r.disk_mb;
  o["timeout_sec"] = r.timeout_sec;
  o["destroy_on_timeout"] = r.destroy_on_timeout;
  o["env"] = map_to_json(r.env);
  o["default_user"] = r.default_user;
  o["default_workdir"] = r.default_workdir;
  o["metadata"] = map_to_json(r.metadata);
  o["created_at_unix"] = r.created_at_unix;
  o["state"] = std::string(state_name(r.state));
  o["paused_reason"] = r.paused_reason;
  if (r.slot) o["slot"] = *r.slot;
  if (r.handle) {
    o["pid"] = r.handle->pid;
    o["pid_start_time"] = r.handle->start_time;
  }
  const std::string data = json::serialize(o) + "\n";
  const std::string dir = state_dir + "/sandboxes/" + r.id;
  const std::string path = dir + "/record.json";
  // Replaced atomically, not fsynced: records only need to outlive the agent process.
  write_private_file(path, data);
}

SandboxRecord read_record(const std::string& state_dir, const std::string& id) {
  const std::string path = record_path(state_dir, id);
  std::ifstream in(path);
  if (!in) throw Error(Code::kNotFound, "no record at " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  boost::system::error_code ec;
  json::value v = json::parse(ss.str(), ec);
  if (ec || !v.is_object()) throw Error(Code::kDataLoss, "unreadable record " + path);
  const json::object& o = v.as_object();
  auto str = [&](std::string_view k) -> std::string {
    const json::value* x = o.if_contains(k);
    return x && x->is_string() ? std::string(x->as_string()) : std::string();
  };
  auto num = [&](std::string_view k) -> std::int64_t {
    const json::value* x = o.if_contains(k);
    if (!x) return 0;
    if (x->is_int64()) return x->as_int64();
    if (x->is_uint64()) return static_cast<std::int64_t>(x->as_uint64());
    return 0;
  };
  SandboxRecord r;
  r.id = str("id");
  if (r.id != id) throw Error(Code::kDataLoss, "record " + path + " names another sandbox");
  r.template_name = str("template");
  r.runtime = str("runtime");
  r.vcpus = static_cast<std::uint32_t>(num("vcpus"));
  r.memory_mb = static_cast<std::uint64_t>(num("memory_mb"));
  r.disk_mb = static_cast<std::uint64_t>(num("disk_mb"));
  r.timeout_sec = static_cast<std::uint32_t>(num("timeout_sec"));
  if (const auto* d = o.if_contains("destroy_on_timeout"); d && d->is_bool())
    r.destroy_on_timeout = d->as_bool();
  r.env = map_from_json(o.if_contains("env"));
  r.default_user = str("default_user");
  r.default_workdir = str("default_workdir");
  r.metadata = map_from_json(o.if_contains("metadata"));
  r.created_at_unix = num("created_at_unix");
  r.state = state_from_name(str("state"));
  r.paused_reason = str("paused_reason");
  if (o.contains("slot")) r.slot = static_cast<std::uint32_t>(num("slot"));
  if (o.contains("pid")) {
    RuntimeHandle h;
    h.pid = static_cast<int>(num("pid"));
    h.start_time = static_cast<std::uint64_t>(num("pid_start_time"));
    r.handle = h;
  }
  return r;
}

}  // namespace wrenn::agent
