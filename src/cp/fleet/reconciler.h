// The fleet reconciler: converges the live fleet toward the desired state that
// `wrennctl apply` stored in fleet_resources (sql/0003_fleet.sql), and writes each
// resource's status.
//
// Contract:
//  - One active leader among control plane replicas: run() keeps a dedicated database
//    connection and holds the session advisory lock kLeaderLockKey on it while leading. A
//    replica that cannot take the lock retries every interval; when the leader's process
//    or connection dies, PostgreSQL releases the lock and another replica takes over.
//    Becoming leader and stepping down are logged ("fleet reconciler: leading" / "... no
//    longer leading").
//  - Level-triggered and idempotent: each pass reads desired (fleet_resources.spec),
//    recorded (template_builds, status) and live state (hosts, agents' HostInfo), acts to
//    converge, and writes status {phase, message, conditions[]} only when it changed
//    (status_changed_at = time of the last change). A pass that finds nothing to do changes
//    nothing. A pass runs every config.fleet_interval and at once on NOTIFY kWakeChannel
//    (sent by every apply).
//  - Hosts: phase AwaitingRegistration (hosts.status pending; the message names
//    `wrennctl host token NAME`), Online, Unreachable, Offline, Cordoned, Draining, Drained;
//    conditions Registered, Online, Schedulable. A draining host's running sandboxes are
//    paused (config.drain_policy "pause") or destroyed ("destroy") through the capsule code
//    paths (api/capsule_ops.h). Online transitions of declared hosts are audited
//    ("host.up" / "host.down"; the recorded Online condition is the memory, so a new leader
//    does not repeat them); a registered host no spec declares is audited once as "drift".
//  - Templates: for every online, active host whose labels match present_on, the row
//    template_builds(template, host) is brought to 'ready' for the current spec_hash: an
//    image the host already lists without a row is adopted; otherwise a build sandbox is
//    made from the base (image builder X: agent template "X"; base template T: T's agent
//    name, which must be ready on that host first), each build step runs as
//    `/bin/sh -c STEP` as the spec's user in its workdir (output appended to the row's log,
//    last 64 KiB), and the result is snapshotted into the template's agent name (replacing
//    an older image); the build sandbox is destroyed. A failing step marks the row failed
//    with the step and its exit status; failed builds are retried with backoff (10 s
//    doubling to 10 min); a changed spec_hash rebuilds; an image the host no longer lists
//    marks the row missing and is rebuilt. Platform templates live under their name, which
//    the agent cannot snapshot into: they are ready where the host has them, failed
//    elsewhere. Audited: "template.built" / "template.build_failed". Status phase
//    Pending (no matching host), Building, Ready, Failed; condition Built.
//  - Teams and channels: apply converges their rows; the pass reports them Ready.
//  - Stop is checked between resources and between build steps (a running step finishes
//    first).
// Thread-safety: run() on one thread; is_leader() from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <stop_token>

#include "server_context.h"

namespace wrenn::cp::fleet {

// pg_advisory_lock key of the reconciler's leadership ("wrenfle" in ASCII).
inline constexpr std::int64_t kLeaderLockKey = 0x7772656e666c65;
// LISTEN/NOTIFY channel that wakes the reconciler.
inline constexpr const char* kWakeChannel = "wrenn_fleet";
// Template builds run in sandboxes with no capsule row, marked by this metadata key (its
// value: the template's inventory name). The host monitor leaves them alone for
// kBuildSandboxGrace (a build longer than that is taken for abandoned and destroyed).
inline constexpr const char* kBuildSandboxMetadataKey = "wrenn.fleet.build";
inline constexpr std::chrono::seconds kBuildSandboxGrace{3600};

class Reconciler {
 public:
  explicit Reconciler(ServerContext& ctx);
  ~Reconciler();
  Reconciler(const Reconciler&) = delete;
  Reconciler& operator=(const Reconciler&) = delete;

  // Competes for leadership and reconciles while leading, until stop is requested.
  // Returns within about a second of the request.
  void run(std::stop_token stop);
  bool is_leader() const { return leader_.load(); }

 private:
  struct Impl;
  ServerContext& ctx_;
  std::unique_ptr<Impl> impl_;
  std::atomic<bool> leader_{false};
};

}  // namespace wrenn::cp::fleet
