// wrenn-cp: the control plane. A thin main over the library (server.h).
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "error.h"
#include "log.h"
#include "pg/migrate.h"
#include "server.h"

using namespace wrenn;

namespace {

const char* kUsage = R"(wrenn-cp - the Wrenn control plane

Serves the Wrenn v1 REST API (also under /api/v1), keeps all state in PostgreSQL and
drives the host agents. Any number of replicas may share one database.

Usage:
  wrenn-cp [serve] [options]   run the control plane (the default command)
  wrenn-cp migrate [options]   apply pending database migrations and exit
  wrenn-cp --help | --version

Options (each also settable by the environment variable named):
  --listen ADDR         [host]:port to listen on (WRENN_CP_LISTEN_ADDR, default :8000)
  --dir DIR             state directory (WRENN_DIR, default /var/lib/wrenn): the admin API
                        key file and, without a database URL, the embedded PostgreSQL
  --database-url URL    PostgreSQL URL or conninfo (DATABASE_URL). Without it wrenn-cp runs
                        its own PostgreSQL under DIR/pg and migrates it on start; with it,
                        `serve` refuses a schema that is behind or ahead of this binary
                        (run `wrenn-cp migrate` after an upgrade)
  --proxy-domain NAME   serve {port}-{capsule}.NAME through the agents (WRENN_CP_PROXY_DOMAIN)
  --workers N           threads for blocking work (WRENN_CP_WORKERS, default 16)
  --heartbeat-timeout S seconds without a heartbeat before a host is unreachable
                        (WRENN_CP_HEARTBEAT_TIMEOUT, default 90)
  --reconcile-interval S  seconds between reconcile passes (WRENN_CP_RECONCILE_INTERVAL,
                        default 15)
  --fleet-interval S    seconds between passes of the fleet reconciler; an apply wakes it
                        at once (WRENN_CP_FLEET_INTERVAL, default 10)
  --drain-policy P      what draining a host does to its running sandboxes: pause or
                        destroy (WRENN_CP_DRAIN_POLICY, default pause)
  --monitor-interval MS how often heartbeats are checked (WRENN_CP_MONITOR_INTERVAL_MS,
                        default 5000)
  --vcpu-overcommit X   vCPUs offered per host core (WRENN_CP_VCPU_OVERCOMMIT, default 16)
  --memory-overcommit X memory offered per MiB of host memory (WRENN_CP_MEMORY_OVERCOMMIT,
                        default 1)
  --log-level LEVEL     debug, info (default), warn, error (LOG_LEVEL)

Notification channels:
  --allow-private-targets  let channels deliver to loopback and private networks, for
                        receivers on the same machine or network (WRENN_ALLOW_PRIVATE_TARGETS=1;
                        the cloud metadata address stays refused)
  --no-dispatch         this replica serves the API but delivers no events (WRENN_CP_DISPATCH=0)
  --delivery-threads N  deliveries sent at once by this replica (WRENN_CP_DELIVERY_THREADS,
                        default 16)
  --retry-delays S,S    seconds before the second and third attempt of a failed delivery
                        (WRENN_CP_RETRY_DELAYS, default 10,30); after the last it is dropped
  --telegram-api-url URL  Telegram Bot API server (WRENN_TELEGRAM_API_URL, default
                        https://api.telegram.org)
  --channel-ca-file F   PEM bundle trusted for channel HTTPS besides the system's
                        (WRENN_CHANNEL_CA_FILE)

Secrets come from the environment only (never from flags, which other users can see):
  JWT_SECRET            HS256 key of user and host tokens, at least 32 characters. Unset:
                        generated once and kept in the database (shared by all replicas).
  WRENN_ENCRYPTION_KEY  64 hex characters (openssl rand -hex 32): seals agent credentials at
                        rest. Unset: generated once and kept in the database.
  WRENN_CA_CERT, WRENN_CA_KEY  PEM of the CA (ECDSA P-256) that signs the mutual-TLS
                        certificates of hosts and of wrenn-cp itself. Unset: a CA is created
                        on first start and kept in the database, its key sealed with
                        WRENN_ENCRYPTION_KEY.

First start: the platform team gets an admin API key, written once to DIR/admin-api-key
(mode 0600). Use it as `X-API-Key` (e.g. to create hosts: POST /v1/hosts).
)";

[[noreturn]] void usage_error(const std::string& msg) {
  std::cerr << "wrenn-cp: " << msg << "\n(see wrenn-cp --help)\n";
  std::exit(2);
}

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

long number(const std::string& what, const std::string& v, long min, long max) {
  try {
    std::size_t used = 0;
    long n = std::stol(v, &used);
    if (used == v.size() && n >= min && n <= max) return n;
  } catch (const std::exception&) {
  }
  usage_error(what + " wants a number from " + std::to_string(min) + " to " + std::to_string(max) +
              ", got \"" + v + "\"");
}

double real(const std::string& what, const std::string& v) {
  try {
    std::size_t used = 0;
    double d = std::stod(v, &used);
    if (used == v.size() && d > 0 && d <= 1000) return d;
  } catch (const std::exception&) {
  }
  usage_error(what + " wants a positive number, got \"" + v + "\"");
}

bool flag(const std::string& what, const std::string& v) {
  if (v == "1" || v == "true" || v == "yes") return true;
  if (v == "0" || v == "false" || v == "no") return false;
  usage_error(what + " wants 1 or 0, got \"" + v + "\"");
}

// "10,30" -> {10 s, 30 s}; decimals allowed ("0.5,1").
std::vector<std::chrono::milliseconds> delays(const std::string& what, const std::string& v) {
  std::vector<std::chrono::milliseconds> out;
  std::size_t start = 0;
  while (start <= v.size()) {
    const auto comma = v.find(',', start);
    const std::string part = v.substr(start, comma == std::string::npos ? comma : comma - start);
    out.emplace_back(static_cast<std::int64_t>(real(what, part) * 1000));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  if (out.size() > 10) usage_error(what + " takes at most 10 delays");
  return out;
}

void set_log_level(const std::string& l) {
  auto level = l.empty() ? std::optional(log::Level::kInfo) : log::parse_level(l);
  if (!level) usage_error("log level wants debug, info, warn or error");
  log::set_level(*level);
}

// systemd Type=notify: READY=1 once listening (a no-op without $NOTIFY_SOCKET).
void sd_notify_ready() {
  std::string path = env("NOTIFY_SOCKET");
  if (path.empty() || path.size() >= sizeof(sockaddr_un::sun_path)) return;
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());
  if (addr.sun_path[0] == '@') addr.sun_path[0] = '\0';
  const char msg[] = "READY=1";
  ::sendto(fd, msg, sizeof msg - 1, MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&addr),
           static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size()));
  ::close(fd);
}

}  // namespace

int main(int argc, char** argv) {
  cp::CpConfig cfg;
  if (auto v = env("WRENN_CP_LISTEN_ADDR"); !v.empty()) cfg.listen = v;
  if (auto v = env("WRENN_DIR"); !v.empty()) cfg.wrenn_dir = v;
  cfg.database_url = env("DATABASE_URL");
  cfg.jwt_secret = env("JWT_SECRET");
  cfg.encryption_key = env("WRENN_ENCRYPTION_KEY");
  cfg.proxy_domain = env("WRENN_CP_PROXY_DOMAIN");
  cfg.ca_cert_pem = env("WRENN_CA_CERT");
  cfg.ca_key_pem = env("WRENN_CA_KEY");
  if (auto v = env("WRENN_CP_WORKERS"); !v.empty())
    cfg.worker_threads = static_cast<unsigned>(number("WRENN_CP_WORKERS", v, 1, 256));
  if (auto v = env("WRENN_CP_HEARTBEAT_TIMEOUT"); !v.empty())
    cfg.heartbeat_timeout = std::chrono::seconds(number("WRENN_CP_HEARTBEAT_TIMEOUT", v, 1, 86400));
  if (auto v = env("WRENN_CP_RECONCILE_INTERVAL"); !v.empty())
    cfg.reconcile_interval =
        std::chrono::seconds(number("WRENN_CP_RECONCILE_INTERVAL", v, 1, 86400));
  if (auto v = env("WRENN_CP_FLEET_INTERVAL"); !v.empty())
    cfg.fleet_interval = std::chrono::seconds(number("WRENN_CP_FLEET_INTERVAL", v, 1, 86400));
  if (auto v = env("WRENN_CP_DRAIN_POLICY"); !v.empty()) cfg.drain_policy = v;
  if (auto v = env("WRENN_CP_MONITOR_INTERVAL_MS"); !v.empty())
    cfg.monitor_interval =
        std::chrono::milliseconds(number("WRENN_CP_MONITOR_INTERVAL_MS", v, 10, 3600000));
  if (auto v = env("WRENN_CP_VCPU_OVERCOMMIT"); !v.empty())
    cfg.vcpu_overcommit = real("WRENN_CP_VCPU_OVERCOMMIT", v);
  if (auto v = env("WRENN_CP_MEMORY_OVERCOMMIT"); !v.empty())
    cfg.memory_overcommit = real("WRENN_CP_MEMORY_OVERCOMMIT", v);
  if (auto v = env("WRENN_ALLOW_PRIVATE_TARGETS"); !v.empty())
    cfg.allow_private_targets = flag("WRENN_ALLOW_PRIVATE_TARGETS", v);
  if (auto v = env("WRENN_CP_DISPATCH"); !v.empty())
    cfg.dispatch_events = flag("WRENN_CP_DISPATCH", v);
  if (auto v = env("WRENN_CP_DELIVERY_THREADS"); !v.empty())
    cfg.delivery_threads = static_cast<unsigned>(number("WRENN_CP_DELIVERY_THREADS", v, 1, 256));
  if (auto v = env("WRENN_CP_RETRY_DELAYS"); !v.empty())
    cfg.retry_delays = delays("WRENN_CP_RETRY_DELAYS", v);
  if (auto v = env("WRENN_TELEGRAM_API_URL"); !v.empty()) cfg.telegram_api_url = v;
  cfg.channel_ca_file = env("WRENN_CHANNEL_CA_FILE");
  set_log_level(env("LOG_LEVEL"));

  std::string command = "serve";
  int i = 1;
  if (i < argc && argv[i][0] != '-') command = argv[i++];
  if (command != "serve" && command != "migrate")
    usage_error("unknown command \"" + command + "\" (serve or migrate)");
  for (; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage_error(a + " needs a value");
      return argv[++i];
    };
    if (a == "-h" || a == "--help") {
      std::cout << kUsage;
      return 0;
    } else if (a == "--version") {
      std::cout << "wrenn-cp " << cp::cp_version() << " (schema version "
                << pg::latest_embedded_version() << ")\n";
      return 0;
    } else if (a == "--listen") {
      cfg.listen = value();
    } else if (a == "--dir") {
      cfg.wrenn_dir = value();
    } else if (a == "--database-url") {
      cfg.database_url = value();
    } else if (a == "--proxy-domain") {
      cfg.proxy_domain = value();
    } else if (a == "--workers") {
      cfg.worker_threads = static_cast<unsigned>(number(a, value(), 1, 256));
    } else if (a == "--heartbeat-timeout") {
      cfg.heartbeat_timeout = std::chrono::seconds(number(a, value(), 1, 86400));
    } else if (a == "--reconcile-interval") {
      cfg.reconcile_interval = std::chrono::seconds(number(a, value(), 1, 86400));
    } else if (a == "--fleet-interval") {
      cfg.fleet_interval = std::chrono::seconds(number(a, value(), 1, 86400));
    } else if (a == "--drain-policy") {
      cfg.drain_policy = value();
    } else if (a == "--monitor-interval") {
      cfg.monitor_interval = std::chrono::milliseconds(number(a, value(), 10, 3600000));
    } else if (a == "--vcpu-overcommit") {
      cfg.vcpu_overcommit = real(a, value());
    } else if (a == "--memory-overcommit") {
      cfg.memory_overcommit = real(a, value());
    } else if (a == "--allow-private-targets") {
      cfg.allow_private_targets = true;
    } else if (a == "--no-dispatch") {
      cfg.dispatch_events = false;
    } else if (a == "--delivery-threads") {
      cfg.delivery_threads = static_cast<unsigned>(number(a, value(), 1, 256));
    } else if (a == "--retry-delays") {
      cfg.retry_delays = delays(a, value());
    } else if (a == "--telegram-api-url") {
      cfg.telegram_api_url = value();
    } else if (a == "--channel-ca-file") {
      cfg.channel_ca_file = value();
    } else if (a == "--log-level") {
      set_log_level(value());
    } else {
      usage_error("unknown argument \"" + a + "\"");
    }
  }
  if (cfg.drain_policy != "pause" && cfg.drain_policy != "destroy")
    usage_error("--drain-policy / WRENN_CP_DRAIN_POLICY must be pause or destroy, not \"" +
                cfg.drain_policy + "\"");
  if (cfg.wrenn_dir.empty() || cfg.wrenn_dir.front() != '/')
    usage_error("--dir / WRENN_DIR must be an absolute path");

  try {
    if (command == "migrate") {
      cp::migrate_database(cfg);
      return 0;
    }
    cp::ControlPlane cp(cfg);
    cp.start();
    sd_notify_ready();
    cp.run();
  } catch (const std::exception& e) {
    log::error("wrenn-cp failed", {{"error", e.what()}});
    std::cerr << "wrenn-cp: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
