// What the control plane's parts share: configuration, the database, the worker pool for
// blocking work, the hosts, the scheduler, the router, the authenticator and the extension
// hooks. Built once by ControlPlane (server.h) and handed to every route group and to
// extensions.
#pragma once

#include <boost/asio/thread_pool.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "api/router.h"
#include "hosts/host_client.h"
#include "pg/pool.h"

namespace wrenn::cp {

namespace auth {
class HostTls;  // auth/host_ca.h
}

struct CpConfig {
  std::string listen = ":8000";              // WRENN_CP_LISTEN_ADDR
  std::string wrenn_dir = "/var/lib/wrenn";  // WRENN_DIR
  std::string database_url;                  // DATABASE_URL; empty: embedded PostgreSQL
  std::string jwt_secret;      // JWT_SECRET (>= 32 chars); empty: generated once, kept in the DB
  std::string encryption_key;  // WRENN_ENCRYPTION_KEY (64 hex or base64 of 32 bytes); empty:
                               // generated once, kept in the DB (see server.h)
  // WRENN_CA_CERT / WRENN_CA_KEY (PEM text): the host CA to use instead of the one
  // generated on first start and kept in the database (auth/host_ca.h).
  std::string ca_cert_pem;
  std::string ca_key_pem;
  std::string proxy_domain;       // WRENN_CP_PROXY_DOMAIN: "{port}-{capsule}.<domain>"
  unsigned worker_threads = 16;   // blocking work (SQL, host calls)
  std::size_t db_pool_size = 24;  // more than worker_threads: a worker may hold two
  // Migrate on `serve` (the embedded database's default); with DATABASE_URL the schema
  // must already be current (`wrenn-cp migrate`).
  bool auto_migrate = false;
  std::chrono::seconds heartbeat_timeout{90};  // a host without heartbeats becomes unreachable
  std::chrono::seconds reconcile_interval{15};
  // The fleet reconciler (fleet/reconciler.h): seconds between passes (an apply wakes it
  // at once) and what draining a host does to its running sandboxes: "pause" or "destroy".
  std::chrono::seconds fleet_interval{10};
  std::string drain_policy = "pause";
  std::chrono::milliseconds monitor_interval{5000};  // how often heartbeats are checked
  std::chrono::seconds orphan_grace{60};  // sandboxes younger than this are never orphans
  // Scheduler capacity: a host offers cpu_cores * vcpu_overcommit vCPUs, memory_mb *
  // memory_overcommit MiB and disk_gb * 1024 * disk_overcommit MiB of disk.
  // Sandboxes are mostly idle and each is capped by its cpu quota, so vCPUs overcommit far.
  double vcpu_overcommit = 16.0;
  double memory_overcommit = 1.0;
  double disk_overcommit = 1.0;
  // Notification channels (events/): channel URLs may point at loopback and private
  // networks only when allowed (WRENN_ALLOW_PRIVATE_TARGETS; the metadata address never);
  // the Telegram Bot API base (WRENN_TELEGRAM_API_URL, a self-hosted Bot API server); an
  // extra CA bundle for channel TLS (WRENN_CHANNEL_CA_FILE); whether this replica delivers
  // events (--no-dispatch: API-only replicas), on how many threads, and the retry delays.
  bool allow_private_targets = false;
  std::string telegram_api_url = "https://api.telegram.org";
  std::string channel_ca_file;
  bool dispatch_events = true;
  unsigned delivery_threads = 16;
  std::vector<std::chrono::milliseconds> retry_delays{std::chrono::seconds(10),
                                                      std::chrono::seconds(30)};
};

// The registered hosts and a client for each.
class HostDirectory {
 public:
  virtual ~HostDirectory() = default;
  // A client for the host; ApiError host_unavailable when the host is unknown, has no
  // address or is not online. Clients are cached per host and thread-safe.
  virtual std::shared_ptr<HostClient> client(const std::string& host_id) = 0;
  // Drops the cached client (host deleted or re-registered at another address).
  virtual void evict(const std::string& host_id) = 0;
};

struct PlacementRequest {
  std::string team_id;
  std::uint32_t vcpus = 1;
  std::uint64_t memory_mb = 512;
  std::uint64_t disk_mb = 5120;
  const Caller* caller = nullptr;  // who asks, for limits providers (may be null)
};

class Scheduler {
 public:
  virtual ~Scheduler() = default;
  // Picks a host for a new sandbox inside the caller's transaction (so the choice and the
  // sandbox row commit together): first the extensions' limits (Hooks::check_limits, which
  // may throw ApiError 402), then the least loaded among online hosts with room; ApiError
  // no_hosts_available naming what was missing when none fits. Locks the eligible host rows
  // (FOR UPDATE) until the transaction ends, so concurrent placements see each other's
  // sandbox rows and cannot overfill a host.
  virtual std::string place(pg::Connection& tx, const PlacementRequest& req) = 0;
};

// A change of a sandbox's state, reported to extensions after it committed.
struct SandboxEvent {
  // "capsule.created", "capsule.running", "capsule.paused", "capsule.destroyed",
  // "capsule.missing", "capsule.error".
  std::string type;
  std::string sandbox_id;
  std::string team_id;
  std::string host_id;
  Caller actor;  // Kind::kAnonymous: the system (monitor, reconciler)
};

// A change of a host's state: "host.registered", "host.up", "host.down", "host.deleted".
struct HostEvent {
  std::string type;
  std::string host_id;
  std::string team_id;  // the host's team (BYOC), else empty
};

class Extension;

// The call points of extensions (server.h). Route code reaches them through
// ServerContext::hooks.
class Hooks {
 public:
  void add(std::shared_ptr<Extension> ext) { extensions_.push_back(std::move(ext)); }
  const std::vector<std::shared_ptr<Extension>>& extensions() const { return extensions_; }

  // Every extension's limits check, in registration order, inside the caller's
  // transaction. Scheduler::place calls it; call it yourself before anything else that
  // adds load without placing (resuming a paused sandbox). Throws the first ApiError.
  void check_limits(pg::Connection& tx, const PlacementRequest& req) const;
  // Delivered synchronously to every extension on the calling thread, after the change
  // committed. Never throws: an extension's failure is logged.
  void sandbox_event(const SandboxEvent& ev) const noexcept;
  void host_event(const HostEvent& ev) const noexcept;

 private:
  std::vector<std::shared_ptr<Extension>> extensions_;
};

struct ServerContext {
  const CpConfig& config;
  pg::Pool& db;
  boost::asio::thread_pool& workers;
  HostDirectory& hosts;
  Scheduler& scheduler;
  Router& router;
  Authenticator& auth;
  Hooks& hooks;
  // The host CA: agent certificates at registration (null in tests that need none).
  auth::HostTls* host_tls = nullptr;
};

}  // namespace wrenn::cp
