// The control plane as a library: ControlPlane builds and runs everything; Extension is how
// an embedding distribution adds to it (reference §0 "Extension hooks").
//
// ControlPlane::start():
//   1. checks the configured secrets (JWT_SECRET >= 32 chars, WRENN_ENCRYPTION_KEY form);
//   2. opens the database: DATABASE_URL, or an embedded PostgreSQL under $WRENN_DIR/pg
//      (started from the calling thread, which must live as long as the ControlPlane —
//      call start() from main);
//   3. migrates when config.auto_migrate (the embedded default), then check_schema(): a
//      schema behind or ahead stops the start with a message naming both versions;
//   4. bootstrap (auth/bootstrap.h): secrets, platform team, the admin API key file;
//   5. builds the router with the core routes (system, hosts), the capsule routes
//      (register_capsule_routes) and every extension's routes, in that order;
//   6. listens, starts the host monitor and the extensions' workers.
// run() serves on the calling thread until stop() or, with handle_signals, SIGINT/SIGTERM;
// then it stops within a few seconds: idle connections are closed at once and requests in
// flight get up to 5 s, background threads are stopped, and the embedded PostgreSQL is
// shut down. Blocking work still running after that is abandoned by ending the process.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <functional>
#include <memory>
#include <stop_token>
#include <string>
#include <vector>

#include "server_context.h"

namespace wrenn::cp {

// An embedding distribution's additions. Every method has a default that does nothing.
// Methods may be called from any thread; the hooks (check_limits, on_*_event) concurrently.
class Extension {
 public:
  virtual ~Extension() = default;
  virtual std::string name() const = 0;

  // Adds routes (ctx.router.add) after the core and capsule routes.
  virtual void register_routes(ServerContext& ctx) { (void)ctx; }

  // Background work: each Worker runs on a thread of its own from after the listener is up
  // until shutdown, when its stop_token is signalled; it must return promptly then.
  struct Worker {
    std::string name;
    std::function<void(std::stop_token)> run;
  };
  virtual std::vector<Worker> workers(ServerContext& ctx) {
    (void)ctx;
    return {};
  }

  // The limits provider, consulted before placement (Scheduler::place, and by capsule code
  // before a resume) inside the caller's transaction: throw ApiError
  // kConcurrentSandboxLimit / kVcpuLimit / kMemoryLimit (402) to refuse. The team's current
  // usage is in `sandboxes` (tx sees it; lock the team's row to serialise with concurrent
  // creates if the limit must be exact).
  virtual void check_limits(pg::Connection& tx, const PlacementRequest& req) {
    (void)tx;
    (void)req;
  }

  // Notifications after a change committed (synchronous on the reporting thread: enqueue
  // and return). Exceptions are logged and dropped.
  virtual void on_sandbox_event(const SandboxEvent& ev) { (void)ev; }
  virtual void on_host_event(const HostEvent& ev) { (void)ev; }
};

class ControlPlane {
 public:
  explicit ControlPlane(CpConfig config);
  ~ControlPlane();
  ControlPlane(const ControlPlane&) = delete;
  ControlPlane& operator=(const ControlPlane&) = delete;

  // Before start().
  void add_extension(std::shared_ptr<Extension> ext);

  // See above. Throws wrenn::Error with a message for the operator.
  void start();
  void run(bool handle_signals = true);
  // Thread-safe; run() returns soon after.
  void stop();

  // The bound port (after start()).
  unsigned short port() const;
  // After start().
  ServerContext& context();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// `wrenn-cp migrate`: opens the database like start() does (DATABASE_URL or the embedded
// one) and applies pending migrations. Returns the number applied; 0 when up to date.
int migrate_database(const CpConfig& config);

// The control plane's version (the project version).
std::string_view cp_version();

}  // namespace wrenn::cp
