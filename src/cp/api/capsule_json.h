// The capsule routes' wire shapes (reference wrenn-control-plane.md §3.5-§3.7, openapi
// Capsule / ExecResponse / FileEntry / ProcessEntry) and the validation of their request
// bodies. Pure functions: no I/O, so they are unit-tested alone.
//
// Contract:
//  - Timestamps are RFC 3339 with second precision in UTC ("2026-05-01T12:00:00Z");
//    nullable ones (started_at, last_active_at) and empty strings/maps (host_ip, metadata,
//    symlink_target, a process's tag and args) are omitted, never null.
//  - Request parsers throw ApiError(invalid_request) with a message naming the field and
//    what is wrong; unknown fields are ignored (as upstream).
#pragma once

#include <boost/json.hpp>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "hosts/host_client.h"
#include "store/capsules.h"

namespace wrenn::cp {

// ---- Formatting ---------------------------------------------------------------------

// "2026-05-01T12:00:00Z" for unix seconds.
std::string rfc3339(std::int64_t unix_seconds);

// Strict UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF), as Go's
// utf8.Valid which decided upstream's "encoding".
bool valid_utf8(std::string_view s);

boost::json::object capsule_json(const store::Capsule& c);
boost::json::array capsules_json(const std::vector<store::Capsule>& list);
boost::json::object file_entry_json(const FileEntry& e);
boost::json::object process_json(const ProcessInfo& p);

// Foreground exec result: {sandbox_id, cmd, stdout, stderr, exit_code, duration_ms,
// encoding}. Both streams are standard base64 with encoding "base64" when either is not
// valid UTF-8, else both verbatim with "utf-8". stdout_truncated / stderr_truncated are
// added (true) only when the output cap cut a stream.
boost::json::object exec_result_json(const std::string& capsule_id, const std::string& cmd,
                                     const ExecResult& r);

// ---- Requests -----------------------------------------------------------------------

// POST /v1/capsules. Absent or 0 numbers take the defaults (as upstream's "<= 0 => default"
// for 0; negative numbers are rejected rather than silently replaced).
struct CreateCapsuleRequest {
  std::string template_name = "minimal";
  int vcpus = 1;
  int memory_mb = 512;
  int timeout_sec = 0;  // 0: never auto-pause
};
inline constexpr int kMaxVcpus = 64;
inline constexpr int kMinMemoryMb = 128;
inline constexpr int kMaxMemoryMb = 256 * 1024;
inline constexpr int kMaxTimeoutSec = 30 * 24 * 3600;

CreateCapsuleRequest parse_create_request(const boost::json::object& body);
// `^[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}$` (upstream SafeName).
bool valid_template_name(std::string_view name);
// A digest of the request after defaults, for Idempotency-Key replays: two bodies that
// create the same capsule hash alike ({} and {"template":"minimal"}).
std::string create_request_hash(const CreateCapsuleRequest& r);

// POST …/exec.
struct ExecParams {
  std::string cmd;
  std::vector<std::string> args;
  std::map<std::string, std::string> envs;
  std::string cwd;
  int timeout_sec = 30;  // foreground only; 0 or absent: 30
  bool background = false;
  std::string tag;  // background only; "" = generate "proc-<8 hex>"
};
inline constexpr int kDefaultExecTimeoutSec = 30;
ExecParams parse_exec_request(const boost::json::object& body);

// A sandbox path from body[key]: required, a string, absolute, no NUL byte. ".." segments
// are left alone: envd resolves them inside the sandbox's own root, which they cannot
// leave (the sandbox's filesystem is all envd can see).
std::string parse_path(const boost::json::object& body, std::string_view key = "path");
// Checks a path taken from elsewhere (a multipart field) the same way.
void check_sandbox_path(std::string_view path);
// files/list depth: absent = 0 (envd treats 0 like 1), else a non-negative integer.
std::uint32_t parse_depth(const boost::json::object& body);

// DELETE …/processes/{selector}: all digits (fitting uint32) is a pid, anything else a tag.
ProcessSelector parse_process_selector(std::string_view selector);

}  // namespace wrenn::cp
