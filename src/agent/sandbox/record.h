// SandboxRecord: what the agent knows about one sandbox, kept on disk at
// <state_dir>/sandboxes/<id>/record.json so a restarted agent can re-adopt the sandbox or
// remove what a crash left half-made.
//
// Contract: write_record() replaces the file atomically (temp file, rename), so after an
// agent crash a reader sees either the old or the new record, never a torn one. It does
// not fsync (a create writes the record four times): a record only has to outlive the
// agent process, not the host — after a host crash every sandbox is gone anyway and
// recover() removes what is left, and a torn record then reads as data_loss.
// read_record() throws Error(not_found) when there is no record and Error(data_loss) when
// it cannot be parsed.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "runtime/runtime.h"

namespace wrenn::agent {

// The sandbox lifecycle. A record is written as kStarting before anything is made and
// becomes kRunning only once envd answered and /init was applied; a restarted agent
// removes every sandbox still kStarting (its create never returned).
enum class SandboxState { kStarting, kRunning, kPaused, kStopping };
std::string_view state_name(SandboxState s);

struct SandboxRecord {
  std::string id;
  std::string template_name;
  std::string runtime = "ns";
  std::uint32_t vcpus = 1;
  std::uint64_t memory_mb = 512;
  std::uint64_t disk_mb = 5120;
  std::uint32_t timeout_sec = 0;
  bool destroy_on_timeout = false;
  std::map<std::string, std::string> env;
  std::string default_user;
  std::string default_workdir;
  std::map<std::string, std::string> metadata;
  std::int64_t created_at_unix = 0;
  SandboxState state = SandboxState::kStarting;
  std::string paused_reason;            // "api" | "timeout" while paused
  std::optional<std::uint32_t> slot;    // network slot index once acquired
  std::optional<RuntimeHandle> handle;  // once the runtime started it
};

std::string record_path(const std::string& state_dir, const std::string& id);
void write_record(const std::string& state_dir, const SandboxRecord& r);
SandboxRecord read_record(const std::string& state_dir, const std::string& id);

}  // namespace wrenn::agent
