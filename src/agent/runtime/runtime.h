// Runtime: starts, freezes and stops the isolated environment a sandbox's envd runs in.
// The ns runtime (Linux namespaces + cgroups) is the one that needs no KVM; the VM
// runtimes come later behind the same interface.
//
// Contract:
//  - start() returns once envd has been exec'd inside (not once it answers: the caller
//    polls /health). On failure nothing of the sandbox's processes or cgroups remains.
//  - The handle is plain data and is stored on disk; a restarted agent passes it back to
//    alive()/pause()/resume()/stop()/stats() for sandboxes it did not start itself.
//  - stop() kills everything in the sandbox, waits for it to be gone and removes its
//    cgroups. Idempotent.
//  - pause() returns once every process is frozen; resume() once they run again.
//  - sweep_stale() removes cgroups (and processes in them) of ids not in keep.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>

#include "net/net_slot.h"
#include "volume/volume.h"

namespace wrenn::agent {

struct SandboxSpec {
  std::string id;  // also the hostname
  std::uint32_t vcpus = 1;
  std::uint64_t memory_mb = 512;
  std::uint32_t pids_max = 1024;
  std::map<std::string, std::string> env;  // envd's own environment
};

struct RuntimeHandle {
  int pid = 0;                   // the sandbox's init (envd) as seen from the agent
  std::uint64_t start_time = 0;  // /proc/<pid>/stat field 22: guards against pid reuse
};

struct RuntimeStats {
  std::uint64_t cpu_usec = 0;      // cumulative CPU time of everything in the sandbox
  std::uint64_t memory_bytes = 0;  // current memory charge (cgroup)
};

class Runtime {
 public:
  virtual ~Runtime() = default;
  virtual std::string name() const = 0;
  virtual RuntimeHandle start(const SandboxSpec& spec, const Volume& volume,
                              const NetSlot& slot) = 0;
  virtual bool alive(const std::string& id, const RuntimeHandle& h) const = 0;
  virtual void pause(const std::string& id) = 0;
  virtual void resume(const std::string& id) = 0;
  virtual bool paused(const std::string& id) const = 0;
  virtual void stop(const std::string& id, const RuntimeHandle& h) = 0;
  virtual RuntimeStats stats(const std::string& id) const = 0;
  virtual void sweep_stale(const std::set<std::string>& keep) = 0;
};

}  // namespace wrenn::agent
