#include "api/capsule_json.h"

#include <time.h>

#include <charconv>
#include <limits>

#include "api/api_error.h"
#include "crypto/encoding.h"
#include "crypto/hash.h"

namespace wrenn::cp {

namespace json = boost::json;

namespace {

[[noreturn]] void bad(std::string message) {
  throw ApiError(ApiCode::kInvalidRequest, std::move(message));
}

// An optional integer field within [lo, hi]; absent or null -> nullopt.
std::optional<std::int64_t> int_field(const json::object& o, std::string_view key, std::int64_t lo,
                                      std::int64_t hi) {
  auto it = o.find(key);
  if (it == o.end() || it->value().is_null()) return std::nullopt;
  const json::value& v = it->value();
  std::int64_t n = 0;
  if (v.is_int64()) {
    n = v.get_int64();
  } else if (v.is_uint64()) {
    if (v.get_uint64() > static_cast<std::uint64_t>(hi))
      bad(std::string(key) + " must be at most " + std::to_string(hi));
    n = static_cast<std::int64_t>(v.get_uint64());
  } else if (v.is_double() &&
             v.get_double() == static_cast<double>(static_cast<std::int64_t>(v.get_double())) &&
             v.get_double() >= -9e15 && v.get_double() <= 9e15) {
    n = static_cast<std::int64_t>(v.get_double());  // 2.0 is an integer written as a float
  } else {
    bad(std::string(key) + " must be an integer");
  }
  if (n < lo || n > hi)
    bad(std::string(key) + " must be between " + std::to_string(lo) + " and " + std::to_string(hi));
  return n;
}

std::optional<std::string> string_field(const json::object& o, std::string_view key) {
  auto it = o.find(key);
  if (it == o.end() || it->value().is_null()) return std::nullopt;
  if (!it->value().is_string()) bad(std::string(key) + " must be a string");
  return std::string(it->value().get_string());
}

bool bool_field(const json::object& o, std::string_view key) {
  auto it = o.find(key);
  if (it == o.end() || it->value().is_null()) return false;
  if (!it->value().is_bool()) bad(std::string(key) + " must be a boolean");
  return it->value().get_bool();
}

}  // namespace

std::string rfc3339(std::int64_t unix_seconds) {
  time_t t = static_cast<time_t>(unix_seconds);
  struct tm tm {};
  gmtime_r(&t, &tm);
  char buf[32];
  std::size_t n = strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return std::string(buf, n);
}

bool valid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  std::size_t i = 0;
  while (i < n) {
    unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t len = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;  // no overlong forms
      if (c == 0xED) hi = 0x9F;  // no surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;  // no overlong forms
      if (c == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
    } else {
      return false;
    }
    if (i + len > n) return false;
    if (p[i + 1] < lo || p[i + 1] > hi) return false;
    for (std::size_t k = 2; k < len; ++k)
      if (p[i + k] < 0x80 || p[i + k] > 0xBF) return false;
    i += len;
  }
  return true;
}

json::object capsule_json(const store::Capsule& c) {
  json::object o;
  o["id"] = c.id;
  o["status"] = c.status;
  o["template"] = c.template_name;
  o["vcpus"] = c.vcpus;
  o["memory_mb"] = c.memory_mb;
  o["timeout_sec"] = c.timeout_sec;
  if (!c.guest_ip.empty()) o["guest_ip"] = c.guest_ip;
  if (!c.host_ip.empty()) o["host_ip"] = c.host_ip;
  o["created_at"] = rfc3339(c.created_at);
  if (c.started_at) o["started_at"] = rfc3339(*c.started_at);
  if (c.last_active_at) o["last_active_at"] = rfc3339(*c.last_active_at);
  o["last_updated"] = rfc3339(c.last_updated);
  // Stored by us as a JSON object; anything else (never expected) is left out.
  boost::system::error_code ec;
  json::value meta = json::parse(c.metadata, ec);
  if (!ec && meta.is_object() && !meta.get_object().empty()) o["metadata"] = std::move(meta);
  return o;
}

json::array capsules_json(const std::vector<store::Capsule>& list) {
  json::array a;
  a.reserve(list.size());
  for (const auto& c : list) a.push_back(capsule_json(c));
  return a;
}

json::object file_entry_json(const FileEntry& e) {
  json::object o;
  o["name"] = e.name;
  o["path"] = e.path;
  o["type"] = file_type_name(e.type);
  o["size"] = e.size;
  o["mode"] = e.mode;
  o["permissions"] = e.permissions;
  o["owner"] = e.owner;
  o["group"] = e.group;
  o["modified_at"] = e.modified_at;
  if (e.symlink_target) o["symlink_target"] = *e.symlink_target;
  return o;
}

json::object process_json(const ProcessInfo& p) {
  json::object o;
  o["pid"] = p.pid;
  if (!p.tag.empty()) o["tag"] = p.tag;
  o["cmd"] = p.cmd;
  if (!p.args.empty()) {
    json::array args;
    for (const auto& a : p.args) args.emplace_back(a);
    o["args"] = std::move(args);
  }
  return o;
}

json::object exec_result_json(const std::string& capsule_id, const std::string& cmd,
                              const ExecResult& r) {
  json::object o;
  o["sandbox_id"] = capsule_id;
  o["cmd"] = cmd;
  const bool text = valid_utf8(r.stdout_data) && valid_utf8(r.stderr_data);
  if (text) {
    o["stdout"] = r.stdout_data;
    o["stderr"] = r.stderr_data;
  } else {
    o["stdout"] = crypto::base64_encode(r.stdout_data);
    o["stderr"] = crypto::base64_encode(r.stderr_data);
  }
  o["exit_code"] = r.exit_code;
  o["duration_ms"] = r.duration.count();
  o["encoding"] = text ? "utf-8" : "base64";
  if (r.stdout_truncated) o["stdout_truncated"] = true;
  if (r.stderr_truncated) o["stderr_truncated"] = true;
  return o;
}

bool valid_template_name(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  auto alnum = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  };
  if (!alnum(name[0])) return false;
  for (char c : name.substr(1))
    if (!alnum(c) && c != '.' && c != '_' && c != '-') return false;
  return true;
}

CreateCapsuleRequest parse_create_request(const json::object& body) {
  CreateCapsuleRequest r;
  if (auto t = string_field(body, "template"); t && !t->empty()) {
    if (!valid_template_name(*t))
      bad("template must be 1-64 characters of letters, digits, '.', '_' and '-', starting "
          "with a letter or digit");
    r.template_name = *t;
  }
  if (auto v = int_field(body, "vcpus", 0, kMaxVcpus); v && *v > 0) r.vcpus = static_cast<int>(*v);
  if (auto v = int_field(body, "memory_mb", 0, kMaxMemoryMb); v && *v > 0) {
    if (*v < kMinMemoryMb)
      bad("memory_mb must be between " + std::to_string(kMinMemoryMb) + " and " +
          std::to_string(kMaxMemoryMb));
    r.memory_mb = static_cast<int>(*v);
  }
  if (auto v = int_field(body, "timeout_sec", 0, kMaxTimeoutSec))
    r.timeout_sec = static_cast<int>(*v);
  return r;
}

std::string create_request_hash(const CreateCapsuleRequest& r) {
  return crypto::sha256_hex("v1\n" + r.template_name + "\n" + std::to_string(r.vcpus) + "\n" +
                            std::to_string(r.memory_mb) + "\n" + std::to_string(r.timeout_sec));
}

ExecParams parse_exec_request(const json::object& body) {
  ExecParams p;
  auto cmd = string_field(body, "cmd");
  if (!cmd || cmd->empty()) bad("cmd is required");
  if (cmd->find('\0') != std::string::npos) bad("cmd must not contain NUL bytes");
  p.cmd = std::move(*cmd);
  if (auto it = body.find("args"); it != body.end() && !it->value().is_null()) {
    if (!it->value().is_array()) bad("args must be an array of strings");
    for (const auto& a : it->value().get_array()) {
      if (!a.is_string()) bad("args must be an array of strings");
      p.args.emplace_back(a.get_string());
    }
  }
  if (auto it = body.find("envs"); it != body.end() && !it->value().is_null()) {
    if (!it->value().is_object()) bad("envs must be an object of strings");
    for (const auto& kv : it->value().get_object()) {
      if (!kv.value().is_string()) bad("envs must be an object of strings");
      if (kv.key().empty() || kv.key().find('=') != std::string_view::npos)
        bad("envs names must be non-empty and contain no '='");
      p.envs.emplace(std::string(kv.key()), std::string(kv.value().get_string()));
    }
  }
  if (auto cwd = string_field(body, "cwd")) p.cwd = std::move(*cwd);
  // No cap beyond what fits: a command runs as long as the caller asked (upstream's hidden
  // 45 s limit is gone).
  if (auto t = int_field(body, "timeout_sec", 0, std::numeric_limits<int>::max() / 1000);
      t && *t > 0)
    p.timeout_sec = static_cast<int>(*t);
  p.background = bool_field(body, "background");
  if (auto tag = string_field(body, "tag")) {
    if (tag->size() > 128) bad("tag must be at most 128 characters");
    if (tag->find('\0') != std::string::npos) bad("tag must not contain NUL bytes");
    // A tag of digits only could never be selected (a digit selector is a pid).
    if (!tag->empty() && tag->find_first_not_of("0123456789") == std::string::npos)
      bad("tag must not consist of digits only");
    p.tag = std::move(*tag);
  }
  return p;
}

void check_sandbox_path(std::string_view path) {
  if (path.empty()) bad("path is required");
  if (path.find('\0') != std::string_view::npos) bad("path must not contain NUL bytes");
  if (path.front() != '/') bad("path must be absolute (start with '/')");
  if (path.size() > 4096) bad("path must be at most 4096 bytes");
}

std::string parse_path(const json::object& body, std::string_view key) {
  auto p = string_field(body, key);
  if (!p || p->empty()) bad(std::string(key) + " is required");
  check_sandbox_path(*p);
  return std::move(*p);
}

std::uint32_t parse_depth(const json::object& body) {
  auto d = int_field(body, "depth", 0, std::numeric_limits<std::uint32_t>::max());
  return d ? static_cast<std::uint32_t>(*d) : 0;
}

ProcessSelector parse_process_selector(std::string_view selector) {
  if (!selector.empty() && selector.find_first_not_of("0123456789") == std::string_view::npos) {
    std::uint32_t pid = 0;
    auto [end, ec] = std::from_chars(selector.data(), selector.data() + selector.size(), pid);
    if (ec == std::errc() && end == selector.data() + selector.size()) return pid;
  }
  return std::string(selector);
}

}  // namespace wrenn::cp
