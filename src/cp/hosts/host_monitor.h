// Host liveness and sandbox reconciliation (reference §6, §9.1).
//
//  - check_heartbeats(): online hosts whose last heartbeat is older than the timeout
//    become unreachable and their running sandboxes missing (audit host/marked_down,
//    events host.down and capsule.missing). A heartbeat brings the host back online
//    (api/host_routes.cpp); reconciliation then restores its sandboxes.
//  - reconcile_host(): compares one online host's ListSandboxes with the sandboxes rows on
//    that host and converges, idempotently:
//      row running/paused, agent lacks it            -> missing
//      row missing, agent has it                     -> running / paused (the agent's state)
//      row running, agent paused it (its timeout)    -> paused (audit sandbox/pause, system)
//      row pending/starting older than orphan_grace (its create died half-way):
//        agent has it                                -> running / paused
//        agent lacks it                              -> error
//      agent has a sandbox no live row on this host owns, created more than orphan_grace
//      ago (so a create in flight is never touched)  -> DestroySandbox
//    Rows changed after the agent was asked are left alone (they are someone else's news),
//    as are pending/starting rows younger than orphan_grace (a create in flight owns them).
//  - HostMonitor: a background thread running check_heartbeats every monitor_interval and,
//    on one replica at a time (advisory lock kReconcileLockKey), reconcile_host for every
//    online host every reconcile_interval.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "hosts/host_directory.h"
#include "server_context.h"

namespace wrenn::cp {

// pg_try_advisory_lock key of a reconcile pass ('wrnnrcnl').
inline constexpr std::int64_t kReconcileLockKey = 0x77726e6e72636e6c;

struct ReconcileResult {
  std::vector<std::string> marked_missing;  // sandbox ids
  std::vector<std::string> restored;        // missing -> running/paused
  std::vector<std::string> paused;          // running -> paused by the agent
  std::vector<std::string> promoted;        // stale pending -> running/paused
  std::vector<std::string> failed;          // stale pending -> error
  std::vector<std::string> destroyed;       // orphans destroyed on the agent
};

// hooks may be null. Throws the HostClient's error when ListSandboxes fails (nothing is
// changed then); failures to destroy an orphan are logged and skipped.
ReconcileResult reconcile_host(pg::Pool& db, HostClient& client, const std::string& host_id,
                               const Hooks* hooks, std::chrono::seconds orphan_grace);

// One liveness pass; returns the hosts it marked unreachable. hooks may be null.
std::vector<std::string> check_heartbeats(pg::Pool& db, std::chrono::seconds timeout,
                                          const Hooks* hooks);

class HostMonitor {
 public:
  HostMonitor(pg::Pool& db, PgHostDirectory& hosts, const Hooks& hooks, const CpConfig& config);
  ~HostMonitor();  // stop()
  void start();
  // Wakes the thread and joins it (a pass in progress finishes its current RPC first).
  void stop();
  // One reconcile pass over all online hosts (skipped when another replica holds the lock).
  void reconcile_all();

 private:
  void run();

  pg::Pool& db_;
  PgHostDirectory& hosts_;
  const Hooks& hooks_;
  const CpConfig& config_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace wrenn::cp
