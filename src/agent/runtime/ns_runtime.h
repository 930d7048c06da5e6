// NsRuntime: sandboxes isolated by Linux namespaces and cgroups (no KVM).
//
// start() creates the cgroups <cgroup_parent>/<id> (cpu quota of vcpus, memory limit
// without swap, pids limit), clone3()s wrenn-nsinit into new PID, mount, UTS, IPC and
// cgroup namespaces (straight into the cgroup2 group with CLONE_INTO_CGROUP where there is
// one) inside the slot's network namespace, and returns once nsinit has exec'd envd as the
// sandbox's PID 1 and envd (the agent's own, options.envd_path) reports that it listens —
// a byte on a pipe, so nobody polls. With the template's own envd it returns after the exec. See
// nsinit.cpp for what the sandbox sees (its root is the volume's rootfs; /proc, read-only /sys, a
// minimal /dev; reduced capabilities; a seccomp deny list).
//
// envd's stdout and stderr go to <state_dir>/sandboxes/<id>/envd.log (appended).
//
// Everything is found again from the id and the RuntimeHandle, so a restarted agent can
// stop, pause and inspect sandboxes it did not start. Only the cgroups under cgroup_parent
// are ever touched (tests run side by side with their own parents).
//
// Thread-safe: methods may be called concurrently for different ids.
#pragma once

#include <cstdint>
#include <string>

#include "runtime/cgroup.h"
#include "runtime/runtime.h"

namespace wrenn::agent {

struct NsRuntimeOptions {
  std::string state_dir;
  std::string cgroup_parent = "wrenn";  // group directory in every hierarchy's root
  std::string nsinit_path;              // the wrenn-nsinit executable
  std::string envd_path;                // when set, bind-mounted read-only over /usr/local/bin/envd
  std::uint16_t envd_port = 49983;
  std::string resolv_conf;  // when set, written to the sandbox's /etc/resolv.conf
};

class NsRuntime : public Runtime {
 public:
  // Detects the cgroup layout. Throws when there is none or nsinit_path is not executable.
  explicit NsRuntime(NsRuntimeOptions options);

  std::string name() const override { return "ns"; }
  RuntimeHandle start(const SandboxSpec& spec, const Volume& volume, const NetSlot& slot) override;
  // True while the handle's process exists with the same start time and is no zombie.
  bool alive(const std::string& id, const RuntimeHandle& h) const override;
  void pause(const std::string& id) override;
  void resume(const std::string& id) override;
  bool paused(const std::string& id) const override;
  void stop(const std::string& id, const RuntimeHandle& h) override;
  RuntimeStats stats(const std::string& id) const override;
  void sweep_stale(const std::set<std::string>& keep) override;

  const CgroupLayout& cgroup_layout() const { return layout_; }
  // The sandbox's cgroup (for inspection).
  Cgroup cgroup(const std::string& id) const;

 private:
  NsRuntimeOptions opts_;
  CgroupLayout layout_;
};

// Field 22 of /proc/<pid>/stat (start time in clock ticks after boot); 0 when the
// process does not exist.
std::uint64_t process_start_time(int pid);

}  // namespace wrenn::agent
