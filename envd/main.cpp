// envd entry point: argument parsing, signals, PID-1 duties.
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>

#include "envd.h"
#include "error.h"
#include "log.h"

namespace {

constexpr const char* kUsage = R"(envd - the Wrenn guest agent

Serves the envd protocol on one port: HTTP endpoints (/health, /metrics, /envs, /init,
/files, /snapshot/prepare) and Connect RPC (process.Process, filesystem.Filesystem).

Usage: envd [--host ADDR] [--port N] [--etc-dir DIR] [--run-dir DIR]

  --host ADDR     address to listen on (default 0.0.0.0)
  --port N        port to listen on (default 49983)
  --etc-dir DIR   directory holding passwd and group (default /etc)
  --run-dir DIR   runtime directory for sandbox marker files (default /run/wrenn)
  --ready-fd N    once listening, write one byte to fd N and close it (lets the host
                  agent wait for readiness instead of polling)
  --version       print the version and exit
  -h, --help      show this help

As PID 1 it reaps orphans and forwards SIGTERM/SIGINT/SIGHUP to every process; under
another init it registers as a child subreaper so its processes' orphans are reaped too.
)";

[[noreturn]] void usage_error(const std::string& msg) {
  std::fprintf(stderr, "envd: %s\nRun 'envd --help' for usage.\n", msg.c_str());
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  wrenn::envd::Options opts;
  int ready_fd = -1;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&](const char* name) -> std::string {
      auto eq = a.find('=');
      if (eq != std::string::npos) return a.substr(eq + 1);
      if (i + 1 >= argc) usage_error(std::string(name) + " needs a value");
      return argv[++i];
    };
    auto is = [&](const char* name) {
      return a == name || a.rfind(std::string(name) + "=", 0) == 0;
    };
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a == "--version") {
      std::printf("envd %s\n", wrenn::envd::kVersion);
      return 0;
    } else if (is("--port")) {
      std::string v = value("--port");
      char* end = nullptr;
      long p = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || *end || p < 0 || p > 65535)
        usage_error("--port must be 0..65535, got \"" + v + "\"");
      opts.port = static_cast<unsigned short>(p);
    } else if (is("--host")) {
      opts.host = value("--host");
    } else if (is("--etc-dir")) {
      opts.etc_dir = value("--etc-dir");
    } else if (is("--run-dir")) {
      opts.run_dir = value("--run-dir");
    } else if (is("--ready-fd")) {
      std::string v = value("--ready-fd");
      char* end = nullptr;
      long fd = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || *end || fd < 3 || fd > 1024)
        usage_error("--ready-fd must be 3..1024, got \"" + v + "\"");
      ready_fd = static_cast<int>(fd);
    } else if (a == "--isnotfc") {
      // Accepted for compatibility with the upstream envd's command line; no effect here.
    } else {
      usage_error("unknown argument \"" + a + "\"");
    }
  }

  const bool pid1 = ::getpid() == 1;
  if (!pid1) ::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
  ::signal(SIGPIPE, SIG_IGN);

  boost::asio::io_context io(1);
  wrenn::envd::Envd envd(io, opts);
  try {
    envd.start();
  } catch (const wrenn::Error& e) {
    wrenn::log::error("envd failed to start", {{"error", e.what()}});
    return 1;
  }
  if (ready_fd >= 0) {
    // Closed either way, so no process envd starts inherits it.
    char ready = 'R';
    if (::write(ready_fd, &ready, 1) != 1)
      wrenn::log::warn("envd: cannot signal readiness", {{"error", std::strerror(errno)}});
    ::close(ready_fd);
  }

  boost::asio::signal_set chld(io, SIGCHLD);
  std::function<void()> wait_chld = [&] {
    chld.async_wait([&](const boost::system::error_code& ec, int) {
      if (ec) return;
      envd.processes().reap();
      wait_chld();
    });
  };
  wait_chld();
  // A child may have exited before the handler was installed.
  envd.processes().reap();

  boost::asio::signal_set term(io, SIGTERM, SIGINT, SIGHUP);
  boost::asio::steady_timer grace(io);
  auto shutdown_deadline = std::chrono::steady_clock::now();
  // As PID 1, our exit makes the kernel SIGKILL everything in the namespace: give the
  // processes we forwarded the signal to a moment to finish first.
  std::function<void()> wait_for_children = [&] {
    envd.processes().reap();
    siginfo_t info{};
    bool children = ::waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT) == 0;
    if (!children || std::chrono::steady_clock::now() >= shutdown_deadline) {
      io.stop();
      return;
    }
    grace.expires_after(std::chrono::milliseconds(20));
    grace.async_wait([&](const boost::system::error_code&) { wait_for_children(); });
  };
  term.async_wait([&](const boost::system::error_code& ec, int sig) {
    if (ec) return;
    wrenn::log::info("envd stopping", {{"signal", std::to_string(sig)}});
    envd.stop();
    if (!pid1) {
      io.stop();
      return;
    }
    ::kill(-1, sig);  // forward to every process in the sandbox
    shutdown_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    wait_for_children();
  });

  io.run();
  return 0;
}
