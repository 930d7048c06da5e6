#include "server.h"

#include <sys/stat.h>

#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <thread>

#include "api/capsule_routes.h"
#include "api/host_routes.h"
#include "api/port_proxy.h"
#include "api/system_routes.h"
#include "auth/authenticator.h"
#include "auth/bootstrap.h"
#include "auth/host_ca.h"
#include "error.h"
#include "events/channel_routes.h"
#include "events/dispatcher.h"
#include "events/live_stream.h"
#include "fleet/fleet_routes.h"
#include "fleet/reconciler.h"
#include "fleet/team_limits.h"
#include "hosts/host_directory.h"
#include "hosts/host_monitor.h"
#include "http/server.h"
#include "log.h"
#include "pg/embedded.h"
#include "pg/migrate.h"
#include "pg/pool.h"
#include "scheduler/scheduler.h"

#ifndef WRENN_CP_VERSION
#define WRENN_CP_VERSION "0.0.0"
#endif

namespace wrenn::cp {

namespace asio = boost::asio;
namespace fs = std::filesystem;
using tcp = asio::ip::tcp;

std::string_view cp_version() {
  return WRENN_CP_VERSION;
}

// ---- Hooks ----

void Hooks::check_limits(pg::Connection& tx, const PlacementRequest& req) const {
  for (const auto& e : extensions_) e->check_limits(tx, req);
}

void Hooks::sandbox_event(const SandboxEvent& ev) const noexcept {
  for (const auto& e : extensions_) {
    try {
      e->on_sandbox_event(ev);
    } catch (const std::exception& ex) {
      log::warn("extension failed on a sandbox event",
                {{"extension", e->name()}, {"event", ev.type}, {"error", ex.what()}});
    } catch (...) {
    }
  }
}

void Hooks::host_event(const HostEvent& ev) const noexcept {
  for (const auto& e : extensions_) {
    try {
      e->on_host_event(ev);
    } catch (const std::exception& ex) {
      log::warn("extension failed on a host event",
                {{"extension", e->name()}, {"event", ev.type}, {"error", ex.what()}});
    } catch (...) {
    }
  }
}

namespace {

tcp::endpoint parse_listen(const std::string& addr) {
  auto colon = addr.rfind(':');
  if (colon == std::string::npos)
    throw Error(Code::kInvalidArgument,
                "listen address \"" + addr + "\" must look like [host]:port (e.g. :8000)");
  std::string host = addr.substr(0, colon);
  std::string port = addr.substr(colon + 1);
  unsigned p = 0;
  if (port.empty() || port.size() > 5 ||
      port.find_first_not_of("0123456789") != std::string::npos || (p = std::stoul(port)) > 65535)
    throw Error(Code::kInvalidArgument, "listen address \"" + addr + "\" has no valid port");
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  if (host.empty()) host = "0.0.0.0";
  boost::system::error_code ec;
  auto ip = asio::ip::make_address(host, ec);
  if (ec)
    throw Error(Code::kInvalidArgument,
                "listen host \"" + host + "\" is not an IP address (use :8000 for all)");
  return {ip, static_cast<unsigned short>(p)};
}

void ensure_dir(const std::string& dir) {
  if (dir.empty() || dir.front() != '/')
    throw Error(Code::kInvalidArgument, "WRENN_DIR must be an absolute path, not \"" + dir + "\"");
  std::error_code ec;
  if (!fs::exists(dir, ec)) {
    fs::create_directories(dir, ec);
    if (ec) throw Error(Code::kFailedPrecondition, "cannot create " + dir + ": " + ec.message());
    // Searchable (not listable) by others: the embedded PostgreSQL runs as user postgres
    // when wrenn-cp runs as root and must reach DIR/pg. Secrets inside are 0600 files.
    ::chmod(dir.c_str(), 0711);
  }
}

pg::PoolOptions pool_options(const std::string& conninfo, std::size_t size) {
  pg::PoolOptions o;
  o.conninfo = conninfo;
  o.max_size = size;
  return o;
}

// The database of this configuration: DATABASE_URL, or the embedded server (started into
// `embedded`).
std::string open_database(const CpConfig& config, std::unique_ptr<pg::EmbeddedPostgres>& embedded) {
  if (!config.database_url.empty()) return config.database_url;
  ensure_dir(config.wrenn_dir);
  embedded = std::make_unique<pg::EmbeddedPostgres>();
  log::info("starting the embedded PostgreSQL", {{"dir", config.wrenn_dir + "/pg"}});
  return embedded->start(config.wrenn_dir + "/pg");
}

}  // namespace

int migrate_database(const CpConfig& config) {
  std::unique_ptr<pg::EmbeddedPostgres> embedded;
  const std::string conninfo = open_database(config, embedded);
  pg::Pool pool(pool_options(conninfo, 2));
  const int before = pg::schema_version(pool);
  const int n = pg::migrate(pool);
  log::info("database migrated", {{"applied", std::to_string(n)},
                                  {"from_version", std::to_string(before)},
                                  {"version", std::to_string(pg::schema_version(pool))}});
  return n;
}

// ---- ControlPlane ----

struct ControlPlane::Impl {
  explicit Impl(CpConfig c) : config(std::move(c)) {}

  CpConfig config;
  std::vector<std::shared_ptr<Extension>> extensions;

  // Members in construction order; destroyed in reverse.
  std::unique_ptr<pg::EmbeddedPostgres> embedded;
  std::unique_ptr<pg::Pool> db;
  std::unique_ptr<asio::thread_pool> workers;
  auth::Secrets secrets;
  std::unique_ptr<auth::HostTls> host_tls;
  std::unique_ptr<auth::PgAuthenticator> authenticator;
  std::unique_ptr<Router> router;
  std::unique_ptr<PgHostDirectory> hosts;
  Hooks hooks;
  std::unique_ptr<LeastLoadedScheduler> scheduler;
  std::unique_ptr<ServerContext> ctx;
  asio::io_context io{1};
  std::unique_ptr<http::Server> server;
  std::unique_ptr<HostMonitor> monitor;
  std::unique_ptr<fleet::Reconciler> reconciler;
  std::jthread reconciler_thread;
  std::unique_ptr<events::LiveHub> live_hub;
  std::unique_ptr<events::Dispatcher> dispatcher;
  std::jthread dispatcher_thread;
  std::vector<std::jthread> ext_threads;
  bool started = false;
  bool stopping = false;

  void begin_shutdown();
  void finish_shutdown();
};

ControlPlane::ControlPlane(CpConfig config) : impl_(std::make_unique<Impl>(std::move(config))) {
  // Declared team limits come first, before any embedding distribution's limits provider.
  add_extension(std::make_shared<fleet::TeamLimits>());
}

ControlPlane::~ControlPlane() {
  if (impl_->started) impl_->finish_shutdown();
}

void ControlPlane::add_extension(std::shared_ptr<Extension> ext) {
  impl_->extensions.push_back(ext);
  impl_->hooks.add(std::move(ext));
}

void ControlPlane::start() {
  Impl& m = *impl_;
  const CpConfig& cfg = m.config;
  auth::validate_configured_secrets(cfg);
  const tcp::endpoint endpoint = parse_listen(cfg.listen);
  ensure_dir(cfg.wrenn_dir);
  if (cfg.database_url.empty()) m.config.auto_migrate = true;

  const std::string conninfo = open_database(cfg, m.embedded);
  m.db = std::make_unique<pg::Pool>(pool_options(conninfo, cfg.db_pool_size));
  if (cfg.auto_migrate) {
    const int n = pg::migrate(*m.db);
    if (n > 0) log::info("database migrated", {{"applied", std::to_string(n)}});
  }
  pg::check_schema(*m.db);

  auto boot = auth::bootstrap(*m.db, cfg);
  m.secrets = boot.secrets;
  if (boot.admin_key_created)
    log::info("created the platform admin API key; it is in this file (shown once, keep it safe)",
              {{"path", boot.admin_key_path}});
  else if (boot.admin_key_adopted)
    log::info("stored the platform admin API key found in this file",
              {{"path", boot.admin_key_path}});

  m.workers = std::make_unique<asio::thread_pool>(cfg.worker_threads);
  m.authenticator =
      std::make_unique<auth::PgAuthenticator>(*m.db, *m.workers, m.secrets.jwt_secret);
  m.router = std::make_unique<Router>(*m.authenticator);
  // Every call to an agent is mutual TLS with the control plane's own client certificate.
  m.host_tls = std::make_unique<auth::HostTls>(
      auth::load_or_create_host_ca(*m.db, m.secrets.encryption_key, cfg));
  HostClientOptions host_options;
  auth::HostTls* tls = m.host_tls.get();
  host_options.transport = make_mtls_transport([tls] { return tls->client_context(); });
  m.hosts = std::make_unique<PgHostDirectory>(*m.db, m.secrets.encryption_key, host_options);
  SchedulerOptions so;
  so.vcpu_overcommit = cfg.vcpu_overcommit;
  so.memory_overcommit = cfg.memory_overcommit;
  so.disk_overcommit = cfg.disk_overcommit;
  m.scheduler = std::make_unique<LeastLoadedScheduler>(so, &m.hooks);
  m.ctx = std::make_unique<ServerContext>(ServerContext{m.config, *m.db, *m.workers, *m.hosts,
                                                        *m.scheduler, *m.router, *m.authenticator,
                                                        m.hooks, m.host_tls.get()});

  register_system_routes(*m.ctx);
  register_host_routes(*m.ctx, m.secrets);
  register_capsule_routes(*m.ctx);
  register_fleet_routes(*m.ctx, m.secrets);
  register_channel_routes(*m.ctx, m.secrets);
  m.live_hub = std::make_unique<events::LiveHub>(conninfo);
  events::register_event_stream_route(*m.ctx, *m.live_hub);
  for (const auto& e : m.extensions) e->register_routes(*m.ctx);

  Router* router = m.router.get();
  ServerContext* ctx = m.ctx.get();
  m.server = std::make_unique<http::Server>(m.io, [router, ctx](http::Exchange& ex) {
    // "{port}-{capsule}.<domain>" is the port proxy, everything else the API.
    auto host = ex.header(bhttp::field::host);
    if (auto t = match_port_proxy_host(host, ctx->config.proxy_domain))
      return serve_port_proxy(ex, *ctx, std::move(*t));
    return router->serve(ex);
  });
  m.server->listen(endpoint);
  m.started = true;

  m.monitor = std::make_unique<HostMonitor>(*m.db, *m.hosts, m.hooks, m.config);
  m.monitor->start();
  m.live_hub->start();
  if (cfg.dispatch_events) {
    m.dispatcher = std::make_unique<events::Dispatcher>(*m.ctx, m.secrets.encryption_key);
    m.dispatcher_thread = std::jthread([d = m.dispatcher.get()](std::stop_token st) {
      try {
        d->run(st);
      } catch (const std::exception& ex) {
        log::error("event dispatcher failed", {{"error", ex.what()}});
      }
    });
  }
  m.reconciler = std::make_unique<fleet::Reconciler>(*m.ctx);
  m.reconciler_thread = std::jthread([r = m.reconciler.get()](std::stop_token st) {
    try {
      r->run(st);
    } catch (const std::exception& ex) {
      log::error("fleet reconciler failed", {{"error", ex.what()}});
    }
  });
  for (const auto& e : m.extensions) {
    for (auto& w : e->workers(*m.ctx)) {
      auto run = w.run;
      std::string name = e->name() + "/" + w.name;
      m.ext_threads.emplace_back([run, name](std::stop_token st) {
        try {
          run(st);
        } catch (const std::exception& ex) {
          log::error("extension worker failed", {{"worker", name}, {"error", ex.what()}});
        }
      });
    }
  }
  log::info("wrenn-cp listening", {{"addr", cfg.listen},
                                   {"port", std::to_string(m.server->local_endpoint().port())},
                                   {"version", std::string(cp_version())},
                                   {"database", cfg.database_url.empty() ? "embedded" : "external"},
                                   {"dir", cfg.wrenn_dir}});
}

void ControlPlane::Impl::begin_shutdown() {
  if (stopping) return;
  stopping = true;
  log::info("stopping");
  // Live event streams never end by themselves: end them so the drain below can finish.
  if (live_hub) live_hub->close_streams();
  // Close idle keep-alive connections now and let requests in flight finish (up to 5 s).
  server->prepare_for_snapshot(0);
  auto timer = std::make_shared<asio::steady_timer>(io);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  auto poll = std::make_shared<std::function<void()>>();
  *poll = [this, timer, deadline, poll] {
    if (server->connection_count() == 0 || std::chrono::steady_clock::now() >= deadline) {
      server->stop();
      io.stop();
      *poll = nullptr;  // break the cycle
      return;
    }
    timer->expires_after(std::chrono::milliseconds(50));
    timer->async_wait([poll](const boost::system::error_code&) {
      if (*poll) (*poll)();
    });
  };
  (*poll)();
}

void ControlPlane::Impl::finish_shutdown() {
  if (!started) return;
  started = false;
  if (server) server->stop();
  if (monitor) monitor->stop();
  if (reconciler_thread.joinable()) {
    reconciler_thread.request_stop();
    dispatcher_thread.request_stop();
    reconciler_thread.join();
  }
  if (dispatcher_thread.joinable()) {
    dispatcher_thread.request_stop();
    dispatcher_thread.join();
  }
  if (live_hub) live_hub->stop();
  for (auto& t : ext_threads) t.request_stop();
  for (auto& t : ext_threads)
    if (t.joinable()) t.join();
  ext_threads.clear();
  bool abandoned = false;
  if (workers) {
    workers->stop();
    auto done = std::async(std::launch::async, [this] { workers->join(); });
    if (done.wait_for(std::chrono::seconds(5)) == std::future_status::timeout) abandoned = true;
  }
  if (abandoned) {
    log::warn("blocking work still running after 5 s; exiting without waiting for it");
    if (embedded) embedded->stop();
    std::_Exit(0);
  }
  server.reset();
  db.reset();
  if (embedded) {
    embedded->stop();
    embedded.reset();
  }
  log::info("stopped");
}

void ControlPlane::run(bool handle_signals) {
  Impl& m = *impl_;
  std::optional<asio::signal_set> signals;
  if (handle_signals) {
    signals.emplace(m.io, SIGINT, SIGTERM);
    signals->async_wait([&m](const boost::system::error_code& ec, int sig) {
      if (ec) return;
      log::info("signal received", {{"signal", std::to_string(sig)}});
      m.begin_shutdown();
    });
  }
  m.io.run();
  m.finish_shutdown();
}

void ControlPlane::stop() {
  Impl* m = impl_.get();
  asio::post(m->io, [m] { m->begin_shutdown(); });
}

unsigned short ControlPlane::port() const {
  return impl_->server ? impl_->server->local_endpoint().port() : 0;
}

ServerContext& ControlPlane::context() {
  if (!impl_->ctx) throw Error(Code::kFailedPrecondition, "the control plane is not started");
  return *impl_->ctx;
}

}  // namespace wrenn::cp
