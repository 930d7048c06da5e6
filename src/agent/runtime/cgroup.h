// Cgroups of one sandbox across the machine's hierarchies.
//
// Two layouts are supported, detected from /proc/self/mountinfo:
//  - pure cgroup v2: one hierarchy; cpu.max, memory.max (+ memory.swap.max=0), pids.max,
//    cgroup.freeze, cgroup.kill, cpu.stat, memory.current. The parent's subtree_control
//    gets +cpu +memory +pids.
//  - v1 (or hybrid): one hierarchy per controller (cpu, cpuacct, memory, pids, freezer),
//    with cpu.cfs_*, memory.limit_in_bytes (+ memsw, swappiness 0), pids.max,
//    freezer.state, cpuacct.usage, memory.usage_in_bytes. A cgroup2 mount next to them
//    (the hybrid's /sys/fs/cgroup/unified) gets a group too: it is what CLONE_INTO_CGROUP
//    and cgroup.kill use.
// A group's path relative to every hierarchy root is "<parent>/<name>".
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "runtime/fs_util.h"

namespace wrenn::agent {

struct CgroupLayout {
  std::string v2_root;                    // cgroup2 mount point; empty when there is none
  bool pure_v2 = false;                   // controllers are in v2 (no v1 controller mounts)
  std::map<std::string, std::string> v1;  // controller -> its v1 hierarchy's mount point

  // Reads /proc/self/mountinfo. Throws when there is no usable hierarchy.
  static CgroupLayout detect();
  // Every hierarchy root a group gets a directory in (v1 mounts of the used controllers
  // once each, then the v2 root).
  std::vector<std::string> roots() const;
};

struct CgroupLimits {
  std::uint32_t vcpus = 0;         // 0: no cpu quota
  std::uint64_t memory_bytes = 0;  // 0: no limit
  std::uint32_t pids_max = 0;      // 0: no limit
};

class Cgroup {
 public:
  Cgroup(CgroupLayout layout, std::string parent, std::string name);

  // Creates the group in every hierarchy and applies the limits. Throws already_exists
  // when it exists; on any other failure removes what it made and throws.
  void create(const CgroupLimits& limits);
  // True when the group's directory exists in any hierarchy.
  bool exists() const;
  // O_PATH fd of the group's cgroup2 directory (for CLONE_INTO_CGROUP); invalid when the
  // machine has no cgroup2 hierarchy.
  UniqueFd open_v2_dir() const;
  // Moves pid into the group in every v1 hierarchy (no-op on pure v2).
  void attach_v1(pid_t pid) const;

  // Returns once every task is frozen / thawed.
  void freeze(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  void thaw();
  bool frozen() const;

  std::uint64_t cpu_usec() const;
  std::uint64_t memory_bytes() const;

  // Sends SIGKILL to everything in the group (cgroup.kill where available, else to every
  // pid listed) and thaws it so frozen tasks can die. Does not wait.
  void kill_all();
  // Kills everything, waits until the group is empty and removes its directories.
  // Idempotent. Throws deadline_exceeded when tasks remain after timeout.
  void destroy(std::chrono::milliseconds timeout = std::chrono::seconds(10));

  // Directories of the group that exist now.
  std::vector<std::string> dirs() const;

 private:
  std::string dir_in(const std::string& root) const { return root + "/" + rel_; }
  std::string v1_dir(const std::string& controller) const;  // empty when not on v1
  std::string v2_dir() const;                               // empty when no cgroup2
  bool empty() const;

  CgroupLayout layout_;
  std::string parent_;
  std::string rel_;
};

// Names of the groups directly under parent in any hierarchy.
std::set<std::string> cgroup_children(const CgroupLayout& layout, const std::string& parent);

}  // namespace wrenn::agent
