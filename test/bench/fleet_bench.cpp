// Declarative fleet benchmark: `wrennctl diff` and a no-op `wrennctl apply --yes` over a
// generated tree of 10,000 resources (1000 hosts, 4000 teams with 2 members and 1 API key
// each, 4000 templates, 1000 channels with a secret from an environment variable), end to
// end — process spawn to exit — against a real wrenn-cp on a throwaway PostgreSQL. Prints
// the set-up apply's time and the p50 of 3 runs of each. Target: under 1 s each.
//
// Needs no agent and no root; run by scripts/bench.sh or directly with WRENN_BIN_DIR set.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "cp_fixture.h"
#include "crypto/hash.h"

using namespace wrenn;
using namespace wrenn::test;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int kHosts = 1000, kTeams = 4000, kTemplates = 4000, kChannels = 1000;
constexpr int kPerFile = 500;  // resources per file

std::string num(int i) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%05d", i);
  return buf;
}

// Writes the tree: one kind per file, kPerFile resources each.
void generate(const std::string& dir) {
  fs::create_directories(dir);
  auto write_chunks = [&](const std::string& kind, int count, auto&& one) {
    for (int start = 0; start < count; start += kPerFile) {
      std::string text;
      for (int i = start; i < std::min(count, start + kPerFile); ++i) text += one(i);
      write_file(dir + "/" + kind + "-" + num(start / kPerFile) + ".toml", text);
    }
  };
  write_chunks("hosts", kHosts, [](int i) {
    return "[[host]]\nname = \"host-" + num(i) + "\"\naddress = \"10." + std::to_string(i / 250) +
           "." + std::to_string(i % 250) + ".1:7443\"\nlabels = { zone = \"z" +
           std::to_string(i % 4) + "\" }\n\n";
  });
  write_chunks("teams", kTeams, [](int i) {
    const std::string n = num(i);
    return "[[team]]\nname = \"team-" + n + "\"\nlimits = { vcpus = 64 }\n" +
           "[[team.members]]\nemail = \"owner-" + n + "@example.com\"\nrole = \"owner\"\n" +
           "[[team.members]]\nemail = \"dev-" + n + "@example.com\"\n" +
           "[[team.api_keys]]\nname = \"ci\"\nsha256 = \"" + crypto::sha256_hex("key-" + n) +
           "\"\n\n";
  });
  write_chunks("templates", kTemplates, [](int i) {
    return "[[template]]\nname = \"tpl-" + num(i) + "\"\nteam = \"team-" + num(i % kTeams) +
           "\"\nimage = \"busybox\"\nmemory_mb = 256\nbuild = [\"echo " + num(i) +
           " > /etc/tpl\"]\n\n";
  });
  write_chunks("channels", kChannels, [](int i) {
    return "[[channel]]\nname = \"ch-" + num(i) + "\"\nteam = \"team-" + num(i % kTeams) +
           "\"\nprovider = \"webhook\"\ntarget = \"https://hooks.example.com/" + num(i) +
           "\"\nsecrets = { signing_key = { env = \"FLEET_BENCH_SECRET\" } }\n"
           "events = [\"capsule.create\", \"host.down\"]\n\n";
  });
}

// Runs wrennctl (stdout and stderr to files); returns {exit code, milliseconds}.
std::pair<int, double> run_ctl(const std::vector<std::string>& args, const std::string& log) {
  const std::string bin = bin_dir() + "/wrennctl";
  const auto t0 = Clock::now();
  pid_t pid = fork();
  if (pid == 0) {
    int in = open("/dev/null", O_RDONLY);
    int out = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(in, 0);
    dup2(out, 1);
    dup2(out, 2);
    std::vector<char*> argv{const_cast<char*>(bin.c_str())};
    for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(bin.c_str(), argv.data());
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128, ms};
}

double p50(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main() {
  try {
    TempDir tmp;
    const std::string dir = tmp.path() + "/fleet";
    generate(dir);
    CpOptions o;
    o.env.push_back({"FLEET_BENCH_SECRET", "bench-signing-secret"});
    CpProcess cp(o);
    const std::vector<std::string> common = {"--server", cp.url(), "--api-key", cp.admin_api_key()};
    auto cmd = [&](std::vector<std::string> args) {
      args.insert(args.end(), common.begin(), common.end());
      return args;
    };
    const std::string log = tmp.path() + "/ctl.log";
    const int total = kHosts + kTeams + kTemplates + kChannels;
    std::printf(
        "fleet benchmark: %d resources (%d hosts, %d teams x 2 members + 1 key, %d "
        "templates, %d channels) in %d files; wrennctl -> wrenn-cp -> PostgreSQL\n",
        total, kHosts, kTeams, kTemplates, kChannels,
        (kHosts + kTeams + kTemplates + kChannels) / kPerFile);

    auto [setup_code, setup_ms] = run_ctl(cmd({"apply", "-f", dir, "--yes"}), log);
    if (setup_code != 0) {
      std::fprintf(stderr, "set-up apply failed (exit %d):\n%s\n", setup_code,
                   read_file(log).c_str());
      return 1;
    }
    std::printf("  set-up apply (create everything)          %8.1f ms\n", setup_ms);

    // The apply wakes the reconciler (NOTIFY wrenn_fleet) for a pass over everything; the
    // figures below are of a settled fleet.
    std::this_thread::sleep_for(std::chrono::seconds(3));
    std::vector<double> diff_ms, apply_ms;
    // Interleaved, so that whatever else the control plane does (the reconciler) weighs on
    // both alike.
    for (int i = 0; i < 3; ++i) {
      auto [code, ms] = run_ctl(cmd({"diff", "-f", dir}), log);
      if (code != 0) {
        std::fprintf(stderr, "diff after apply exited %d (want 0):\n%s\n", code,
                     read_file(log).substr(0, 4000).c_str());
        return 1;
      }
      diff_ms.push_back(ms);
      auto [acode, ams] = run_ctl(cmd({"apply", "-f", dir, "--yes"}), log);
      if (acode != 0 || read_file(log).find("No changes.") == std::string::npos) {
        std::fprintf(stderr, "no-op apply exited %d:\n%s\n", acode,
                     read_file(log).substr(0, 4000).c_str());
        return 1;
      }
      apply_ms.push_back(ams);
    }
    const double d = p50(diff_ms), a = p50(apply_ms);
    std::printf("  wrennctl diff (no changes)        p50 %8.1f ms  (runs %.1f %.1f %.1f)\n", d,
                diff_ms[0], diff_ms[1], diff_ms[2]);
    std::printf("  wrennctl apply --yes (no-op)      p50 %8.1f ms  (runs %.1f %.1f %.1f)\n", a,
                apply_ms[0], apply_ms[1], apply_ms[2]);
    std::printf("\ntargets: diff < 1 s (%s), no-op apply < 1 s (%s)\n", d < 1000 ? "met" : "missed",
                a < 1000 ? "met" : "missed");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fleet_bench: %s\n", e.what());
    return 1;
  }
}
