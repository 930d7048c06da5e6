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
//  - Per kind: hosts (registration, online, schedulable; draining pauses or destroys the
//    host's running sandboxes by config.drain_policy); templates (built in a build sandbox
//    on every matching host, rebuilt when the spec changes or a host lost the image);
//    teams and channels (apply converges their rows; the pass reports them Ready).
//  - Reconciler events (host up/down, template built or failed, drift found) go to the
//    audit log, once per transition.
// Thread-safety: run() on one thread; is_leader() from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <stop_token>

#include "server_context.h"

namespace wrenn::cp::fleet {

// pg_advisory_lock key of the reconciler's leadership ("wrenfle" in ASCII).
inline constexpr std::int64_t kLeaderLockKey = 0x7772656e666c65;
// LISTEN/NOTIFY channel that wakes the reconciler.
inline constexpr const char* kWakeChannel = "wrenn_fleet";

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
