// wrenn-agent: the host agent. Runs sandboxes on this host and serves the agent API
// (Connect, wrenn.agent.v1.AgentService) and the /proxy/ reverse proxy on one listener.
// With a control plane (--cp-url) that listener is mutual TLS (api/tls_front.h) relaying to
// the plain HTTP server on a loopback port; standalone it is the plain HTTP server itself.
#include <limits.h>
#include <linux/capability.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/thread_pool.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "api/agent_service.h"
#include "api/proxy.h"
#include "api/tls_front.h"
#include "connect/server.h"
#include "crypto/tls.h"
#include "error.h"
#include "http/server.h"
#include "log.h"
#include "net/firewall.h"
#include "net/slot_pool.h"
#include "registration.h"
#include "runtime/ns_runtime.h"
#include "sandbox/manager.h"
#include "volume/overlay_volumes.h"

namespace asio = boost::asio;
namespace fs = std::filesystem;
using namespace wrenn;
using namespace wrenn::agent;

namespace {

constexpr const char* kVersion = "0.1.0";

const char* kUsage = R"(wrenn-agent - runs Wrenn sandboxes on this host

Serves the agent API (Connect RPC, service wrenn.agent.v1.AgentService) and the reverse
proxy /proxy/{sandbox_id}/{port}/... on one HTTP listener. Every request except GET /health
needs "Authorization: Bearer <token>", the token kept in $WRENN_DIR/agent-token (created,
mode 0600, on first start). With --cp-url the listener is HTTPS with mutual TLS: only the
control plane's client certificate (CA and certificate from registration, kept in
$WRENN_DIR/host-credentials.json) gets through; until registration completes connections
wait for the certificate. Sandboxes keep running when the agent stops; a restarted agent
re-adopts them and removes whatever a crash left half-made.

Usage: wrenn-agent [options]

  --listen ADDR         listen address, [host]:port (env WRENN_HOST_LISTEN_ADDR, default :50051)
  --dir DIR             state directory (env WRENN_DIR, default /var/lib/wrenn); templates
                        are root trees under DIR/images/<name>/
  --envd PATH           envd binary bind-mounted into every sandbox (default: next to this binary)
  --nsinit PATH         wrenn-nsinit helper (default: next to this binary)
  --cgroup-parent NAME  cgroup under which sandboxes live (default wrenn)
  --warm-slots N        network slots kept ready (default 4)
  --ready-disks N       empty sandbox disks kept mounted per disk size, so a create skips
                        making one (default 2; 0 disables)
  --pids-max N          process limit per sandbox (default 1024)
  --nameserver IP       resolver for sandboxes (repeatable; default: the host's non-loopback ones)
  --allow-private-egress  let sandboxes reach private networks (10/8, 172.16/12, 192.168/16)
  --cp-url URL          the control plane, http://host:port (env WRENN_CP_URL); with it the
                        agent registers (once) and sends heartbeats. Without it the agent
                        runs standalone
  --register TOKEN      one-time registration token from the control plane (POST /v1/hosts);
                        needed only until $WRENN_DIR/host-credentials.json exists
  --address IP[:PORT]   where the control plane reaches this agent (port: the listening one)
  --heartbeat-interval S  seconds between heartbeats (env WRENN_HEARTBEAT_INTERVAL, default 30)
  --log-level LEVEL     debug, info (default), warn, error
  --version             print the version and exit
  -h, --help            show this help

Needs root (or CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_SYS_CHROOT, CAP_SETUID/SETGID, CAP_KILL,
CAP_DAC_OVERRIDE, CAP_MKNOD). See systemd/wrenn-agent.service.
)";

struct Config {
  std::string listen = ":50051";
  std::string dir = "/var/lib/wrenn";
  std::string envd;
  std::string nsinit;
  std::string cgroup_parent = "wrenn";
  std::size_t warm = 4;
  unsigned ready_disks = 2;
  std::uint32_t pids_max = 1024;
  std::vector<std::string> nameservers;
  bool allow_private = false;
  std::string cp_url;
  std::string register_token;
  std::string address;
  std::uint32_t heartbeat_interval = 30;
};

[[noreturn]] void usage_error(const std::string& msg) {
  std::cerr << "wrenn-agent: " << msg << "\n(see wrenn-agent --help)\n";
  std::exit(2);
}

std::uint64_t parse_number(const std::string& flag, const std::string& v, std::uint64_t min,
                           std::uint64_t max) {
  try {
    std::size_t used = 0;
    unsigned long long n = std::stoull(v, &used);
    if (used != v.size() || n < min || n > max) throw std::out_of_range("range");
    return n;
  } catch (const std::exception&) {
    usage_error(flag + " wants a number from " + std::to_string(min) + " to " +
                std::to_string(max) + ", got \"" + v + "\"");
  }
}

std::string self_dir() {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return ".";
  return fs::path(std::string(buf, static_cast<std::size_t>(n))).parent_path().string();
}

Config parse_args(int argc, char** argv) {
  Config c;
  if (const char* e = std::getenv("WRENN_HOST_LISTEN_ADDR"); e && *e) c.listen = e;
  if (const char* e = std::getenv("WRENN_DIR"); e && *e) c.dir = e;
  if (const char* e = std::getenv("WRENN_CP_URL"); e && *e) c.cp_url = e;
  if (const char* e = std::getenv("WRENN_HEARTBEAT_INTERVAL"); e && *e)
    c.heartbeat_interval =
        static_cast<std::uint32_t>(parse_number("WRENN_HEARTBEAT_INTERVAL", e, 1, 3600));
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage_error(a + " needs a value");
      return argv[++i];
    };
    if (a == "-h" || a == "--help") {
      std::cout << kUsage;
      std::exit(0);
    } else if (a == "--version") {
      std::cout << "wrenn-agent " << kVersion << "\n";
      std::exit(0);
    } else if (a == "--listen")
      c.listen = value();
    else if (a == "--dir")
      c.dir = value();
    else if (a == "--envd")
      c.envd = value();
    else if (a == "--nsinit")
      c.nsinit = value();
    else if (a == "--cgroup-parent")
      c.cgroup_parent = value();
    else if (a == "--warm-slots")
      c.warm = parse_number(a, value(), 0, 1024);
    else if (a == "--ready-disks")
      c.ready_disks = static_cast<unsigned>(parse_number(a, value(), 0, 64));
    else if (a == "--pids-max")
      c.pids_max = static_cast<std::uint32_t>(parse_number(a, value(), 16, 1 << 22));
    else if (a == "--nameserver")
      c.nameservers.push_back(value());
    else if (a == "--allow-private-egress")
      c.allow_private = true;
    else if (a == "--cp-url")
      c.cp_url = value();
    else if (a == "--register")
      c.register_token = value();
    else if (a == "--address")
      c.address = value();
    else if (a == "--heartbeat-interval")
      c.heartbeat_interval = static_cast<std::uint32_t>(parse_number(a, value(), 1, 3600));
    else if (a == "--log-level") {
      auto level = log::parse_level(value());
      if (!level) usage_error("--log-level wants debug, info, warn or error");
      log::set_level(*level);
    } else
      usage_error("unknown argument \"" + a + "\"");
  }
  const std::string here = self_dir();
  if (c.envd.empty()) c.envd = here + "/envd";
  if (c.nsinit.empty()) c.nsinit = here + "/wrenn-nsinit";
  if (c.dir.empty() || c.dir[0] != '/') usage_error("--dir must be an absolute path");
  if (c.cp_url.empty() && (!c.register_token.empty() || !c.address.empty()))
    usage_error("--register and --address need --cp-url (or WRENN_CP_URL)");
  return c;
}

asio::ip::tcp::endpoint parse_listen(const std::string& addr) {
  auto colon = addr.rfind(':');
  if (colon == std::string::npos)
    usage_error("listen address \"" + addr + "\" must look like [host]:port");
  std::string host = addr.substr(0, colon);
  std::string port = addr.substr(colon + 1);
  auto p =
      static_cast<unsigned short>(parse_number("listen port", port, 0, 65535));  // 0: any free port
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  if (host.empty()) host = "0.0.0.0";
  boost::system::error_code ec;
  auto ip = asio::ip::make_address(host, ec);
  if (ec) usage_error("listen host \"" + host + "\" is not an IP address");
  return {ip, p};
}

// The agent cannot do its job without these; say which are missing instead of failing later.
void check_capabilities() {
  std::ifstream in("/proc/self/status");
  std::string line;
  std::uint64_t eff = 0;
  while (std::getline(in, line))
    if (line.rfind("CapEff:", 0) == 0) eff = std::stoull(line.substr(7), nullptr, 16);
  const std::pair<int, const char*> needed[] = {{CAP_SYS_ADMIN, "CAP_SYS_ADMIN"},
                                                {CAP_NET_ADMIN, "CAP_NET_ADMIN"},
                                                {CAP_SYS_CHROOT, "CAP_SYS_CHROOT"},
                                                {CAP_SETUID, "CAP_SETUID"},
                                                {CAP_SETGID, "CAP_SETGID"},
                                                {CAP_KILL, "CAP_KILL"},
                                                {CAP_DAC_OVERRIDE, "CAP_DAC_OVERRIDE"}};
  std::string missing;
  for (const auto& [cap, name] : needed)
    if (!(eff & (1ULL << cap))) missing += std::string(missing.empty() ? "" : ", ") + name;
  if (!missing.empty())
    throw Error(Code::kPermissionDenied,
                "wrenn-agent needs root or these capabilities: " + missing);
}

}  // namespace

int main(int argc, char** argv) {
  Config cfg = parse_args(argc, argv);
  const auto endpoint = parse_listen(cfg.listen);
  try {
    check_capabilities();
    for (const char* sub : {"", "/images", "/sandboxes", "/netns", "/cache"})
      fs::create_directories(cfg.dir + sub);
    ::chmod(cfg.dir.c_str(), 0711);
    for (const std::string& bin : {cfg.envd, cfg.nsinit})
      if (::access(bin.c_str(), X_OK) != 0)
        throw Error(Code::kNotFound, bin + " is not an executable file (see --envd / --nsinit)");
    const std::string token = load_or_create_token(cfg.dir + "/agent-token");

    enable_ip_forwarding();
    FirewallOptions fw;
    fw.allow_private = cfg.allow_private;
    SlotPoolOptions so;
    so.state_dir = cfg.dir;
    so.warm = cfg.warm;
    so.nameservers = cfg.nameservers;
    SlotPool slots(so);
    // DNS to the sandboxes' resolvers is allowed even when they sit on a private network.
    fw.nameservers = slots.nameservers();
    install_firewall(fw);

    NsRuntimeOptions ro;
    ro.state_dir = cfg.dir;
    ro.cgroup_parent = cfg.cgroup_parent;
    ro.nsinit_path = cfg.nsinit;
    ro.envd_path = cfg.envd;
    ro.resolv_conf = slots.resolv_conf();
    NsRuntime runtime(ro);
    OverlayVolumesOptions vo;
    vo.state_dir = cfg.dir;
    vo.ready_disks = cfg.ready_disks;
    vo.ready_sizes_mb = {kDefaultDiskMb};
    OverlayVolumes volumes(vo);
    ManagerOptions mo;
    mo.state_dir = cfg.dir;
    mo.pids_max = cfg.pids_max;
    SandboxManager manager(mo, runtime, volumes, slots);
    manager.recover();
    manager.start_background();

    asio::io_context io;
    asio::thread_pool pool(8);
    connect::Router router;
    router.set_interceptor([&token](connect::CallContext& ctx) {
      check_agent_token(ctx.header("authorization"), ctx.header("x-wrenn-agent-token"), token);
    });
    HostFacts facts{kVersion, {runtime.name()}, cfg.dir};
    register_agent_service(router, manager, slots, pool, facts);

    ProxyOptions popts;
    popts.connect = [&manager](const std::string& id, std::uint16_t port) {
      return manager.connect(id, port);
    };
    popts.on_activity = [&manager](const std::string& id) {
      try {
        manager.touch(id);
      } catch (const std::exception&) {
      }
    };
    http::Server server(io, [&](http::Exchange& ex) -> asio::awaitable<void> {
      const std::string_view path = ex.path();
      if (path == "/health" && ex.method() == http::bhttp::verb::get) {
        co_await ex.send(http::bhttp::status::ok, "application/json", "{\"status\":\"ok\"}");
        co_return;
      }
      if (is_proxy_path(path)) {
        std::optional<Error> denied;
        try {
          check_agent_token(ex.header(http::bhttp::field::authorization),
                            ex.header("x-wrenn-agent-token"), token);
        } catch (const Error& e) {
          denied = e;
        }
        if (denied) {
          auto res = http::make_response(http::bhttp::status::unauthorized, "application/json",
                                         "{\"error\":{\"code\":\"unauthenticated\",\"message\":\"" +
                                             std::string(denied->what()) + "\"}}");
          res.set(http::bhttp::field::www_authenticate, "Bearer");
          co_await ex.send(std::move(res));
          co_return;
        }
        co_await serve_proxy(ex, popts);
        co_return;
      }
      if (router.handles(path)) {
        co_await router.serve(ex);
        co_return;
      }
      co_await ex.send(http::bhttp::status::not_found, "application/json",
                       "{\"error\":{\"code\":\"not_found\",\"message\":\"no such endpoint\"}}");
    });
    // With a control plane the public listener is the mutual-TLS front; the plain server
    // then listens on loopback only, for the front to relay to.
    const bool use_tls = !cfg.cp_url.empty();
    const std::string creds_path = cfg.dir + "/host-credentials.json";
    auto server_context = [](const HostCredentials& c) {
      return crypto::make_mtls_server_context({c.cert_pem, c.key_pem, c.ca_cert_pem}, "wrenn-cp");
    };
    std::unique_ptr<TlsFront> front;
    if (use_tls) {
      server.listen({asio::ip::make_address("127.0.0.1"), 0});
      std::shared_ptr<asio::ssl::context> ctx;
      if (auto creds = load_credentials(creds_path); creds && creds->has_certificate())
        ctx = server_context(*creds);
      front = std::make_unique<TlsFront>(io, ctx, server.local_endpoint());
      front->listen(endpoint);
    } else {
      server.listen(endpoint);
    }
    const unsigned short port =
        front ? front->local_endpoint().port() : server.local_endpoint().port();
    log::info("wrenn-agent listening",
              {{"addr", cfg.listen},
               {"port", std::to_string(port)},
               {"tls", use_tls ? "mutual" : "off"},
               {"backend_port", use_tls ? std::to_string(server.local_endpoint().port()) : ""},
               {"dir", cfg.dir},
               {"runtime", runtime.name()},
               {"sandboxes", std::to_string(manager.size())},
               {"token_file", cfg.dir + "/agent-token"}});
    sd_notify(0, "READY=1");

    // The control plane (optional): register once, then heartbeat in the background.
    std::unique_ptr<CpRegistration> registration;
    if (!cfg.cp_url.empty()) {
      RegistrationOptions ro;
      ro.cp_url = cfg.cp_url;
      ro.token = cfg.register_token;
      ro.address = address_with_port(cfg.address, port);
      ro.state_dir = cfg.dir;
      ro.agent_token = token;
      ro.runtimes = {runtime.name()};
      ro.heartbeat_interval = std::chrono::seconds(cfg.heartbeat_interval);
      // A new certificate (registration, refresh) is used for every later connection.
      ro.on_credentials = [&front, server_context](const HostCredentials& c) {
        front->set_context(server_context(c));
        log::info("TLS certificate in use", {{"host_id", c.host_id}});
      };
      registration = std::make_unique<CpRegistration>(ro);
      registration->start();
    }

    asio::signal_set signals(io, SIGINT, SIGTERM);
    signals.async_wait([&](const boost::system::error_code&, int sig) {
      log::info("stopping; sandboxes keep running", {{"signal", std::to_string(sig)}});
      sd_notify(0, "STOPPING=1");
      if (front) front->stop();
      server.stop();
      io.stop();
    });
    io.run();
    if (registration) registration->stop();
    pool.join();
    slots.drain();
  } catch (const Error& e) {
    log::error("wrenn-agent failed",
               {{"error", e.what()}, {"code", std::string(code_name(e.code()))}});
    return 1;
  } catch (const std::exception& e) {
    log::error("wrenn-agent failed", {{"error", e.what()}});
    return 1;
  }
  return 0;
}
