// envd benchmark: starts the real envd binary on a loopback port and measures
//   1. Process.Start -> end round trip of `true` (binary proto codec, one kept-alive connection),
//   2. output throughput of a process writing 256 MiB through Process.Start,
//   3. envd's resident set size (VmRSS) after start and after the runs,
//   4. the size of the envd binary, as built and stripped.
// Not a test: it prints figures and exits non-zero only when a measurement itself fails
// (envd does not start, a byte count or an exit code is wrong). Run by scripts/bench.sh.
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <numeric>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "connect/client.h"
#include "envd/process.pb.h"
#include "envd_fixture.h"
#include "error.h"

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;
using wrenn::connect::Client;
using wrenn::connect::Codec;
using wrenn::test::EnvdProcess;

constexpr int kWarmupRuns = 50;
constexpr int kLatencyRuns = 1000;
constexpr int kBaselineRuns = 200;
constexpr std::uint64_t kThroughputBytes = 256ull << 20;  // 256 MiB
constexpr std::size_t kRssTargetBytes = 4u << 20;         // 4 MiB
constexpr double kMiB = 1024.0 * 1024.0;

// Runs one Process.Start and consumes the stream to its end. Returns the bytes received
// on stdout; throws when the stream lacks a start or end event or the exit code differs.
std::uint64_t run_process(Client& client, const std::string& cmd,
                          const std::vector<std::string>& args, int expected_exit) {
  process::StartRequest req;
  req.mutable_process()->set_cmd(cmd);
  for (const auto& a : args) req.mutable_process()->add_args(a);
  req.set_stdin(false);
  auto stream = client.server_stream("/process.Process/Start", req);
  process::StartResponse resp;
  bool started = false;
  bool ended = false;
  std::uint64_t stdout_bytes = 0;
  std::uint64_t stderr_bytes = 0;
  while (stream->next(resp)) {
    const auto& ev = resp.event();
    if (ev.has_start()) {
      started = true;
    } else if (ev.has_data()) {
      stdout_bytes += ev.data().stdout().size();
      stderr_bytes += ev.data().stderr().size();
    } else if (ev.has_end()) {
      ended = true;
      if (!ev.end().exited() || ev.end().exit_code() != expected_exit)
        throw std::runtime_error(
            cmd + " ended with exit_code " + std::to_string(ev.end().exit_code()) +
            " exited=" + (ev.end().exited() ? "true" : "false") + " status \"" + ev.end().status() +
            "\", expected exit code " + std::to_string(expected_exit));
    }
  }
  if (!started || !ended)
    throw std::runtime_error(cmd + ": stream ended without " + (started ? "an end" : "a start") +
                             " event");
  if (stderr_bytes != 0)
    throw std::runtime_error(cmd + " wrote " + std::to_string(stderr_bytes) + " bytes to stderr");
  return stdout_bytes;
}

double ms(Clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

// Nearest-rank percentile of sorted samples.
double percentile(const std::vector<double>& sorted, double p) {
  auto rank = static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(sorted.size())));
  return sorted[std::clamp<std::size_t>(rank, 1, sorted.size()) - 1];
}

std::string mib(std::uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f MiB", static_cast<double>(bytes) / kMiB);
  return buf;
}

void print_rss(const char* when, std::size_t rss) {
  std::printf("  %-52s %9zu bytes = %s  (target <= %s: %s)\n", when, rss, mib(rss).c_str(),
              mib(kRssTargetBytes).c_str(), rss <= kRssTargetBytes ? "met" : "NOT met");
}

// Runs a program found in PATH and waits for it; returns its exit status (-1 if killed).
int spawn_wait(std::vector<std::string> args) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid;
  if (int err = ::posix_spawnp(&pid, argv[0], nullptr, nullptr, argv.data(), environ); err != 0)
    throw std::runtime_error("cannot run " + args[0] + ": " + std::strerror(err));
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// CPU time (user + system) in seconds: of a process from /proc/PID/stat, of this one
// from getrusage.
double cpu_seconds(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  auto close = stat.rfind(')');  // the command name may contain spaces
  if (close == std::string::npos) return 0;
  std::vector<std::string> fields;
  std::string field;
  for (char c : stat.substr(close + 2)) {
    if (c == ' ') {
      fields.push_back(field);
      field.clear();
    } else {
      field += c;
    }
  }
  // Fields from 3 (state) on: utime and stime are fields 14 and 15.
  if (fields.size() < 13) return 0;
  double ticks = static_cast<double>(std::stoull(fields[11]) + std::stoull(fields[12]));
  return ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));
}
double self_cpu_seconds() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  auto sec = [](const timeval& tv) {
    return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) / 1e6;
  };
  return sec(ru.ru_utime) + sec(ru.ru_stime);
}

int run() {
  // Binaries under test: WRENN_BIN_DIR, else the directory this benchmark lives in (build/bin).
  if (!std::getenv("WRENN_BIN_DIR")) {
    auto self = std::filesystem::read_symlink("/proc/self/exe").parent_path();
    ::setenv("WRENN_BIN_DIR", self.c_str(), 1);
  }
  const std::string envd_path = wrenn::test::bin_dir() + "/envd";
  if (!std::filesystem::exists(envd_path))
    throw std::runtime_error(envd_path + " does not exist (build the envd target first)");

  std::printf("envd benchmark (%s)\n", envd_path.c_str());
  EnvdProcess envd;
  // Let envd finish its start-up work before sampling the idle figure.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const std::size_t rss_start = envd.rss_bytes();
  std::printf("  envd pid %d listening on 127.0.0.1:%u\n\n", static_cast<int>(envd.pid()),
              envd.port());

  Client client("127.0.0.1", envd.port(), Codec::kProto);

  // 1. Start -> end round trip of `true`.
  for (int i = 0; i < kWarmupRuns; ++i) run_process(client, "true", {}, 0);
  std::vector<double> samples;
  samples.reserve(kLatencyRuns);
  auto all_start = Clock::now();
  for (int i = 0; i < kLatencyRuns; ++i) {
    auto t0 = Clock::now();
    run_process(client, "true", {}, 0);
    samples.push_back(ms(Clock::now() - t0));
  }
  double all_s = ms(Clock::now() - all_start) / 1000.0;
  std::sort(samples.begin(), samples.end());
  double mean =
      std::accumulate(samples.begin(), samples.end(), 0.0) / static_cast<double>(samples.size());
  std::printf(
      "1. Process.Start `true` -> end event + end-of-stream, binary proto codec, one kept-alive\n"
      "   connection over loopback (%d runs after %d warm-up runs, %.2f s, %.0f runs/s)\n",
      kLatencyRuns, kWarmupRuns, all_s, kLatencyRuns / all_s);
  std::printf("  p50   %8.3f ms\n", percentile(samples, 50));
  std::printf("  p99   %8.3f ms\n", percentile(samples, 99));
  std::printf("  mean  %8.3f ms\n", mean);
  std::printf("  min   %8.3f ms\n  max   %8.3f ms\n\n", samples.front(), samples.back());

  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const std::size_t rss_latency = envd.rss_bytes();

  // Context for figure 1: what spawning and reaping `true` costs on this host without envd.
  std::vector<double> base;
  for (int i = 0; i < kBaselineRuns; ++i) {
    auto t0 = Clock::now();
    if (spawn_wait({"true"}) != 0) throw std::runtime_error("true failed");
    base.push_back(ms(Clock::now() - t0));
  }
  std::sort(base.begin(), base.end());
  std::printf(
      "   baseline for comparison: posix_spawn + waitpid of `true` by this benchmark, no envd\n"
      "   (%d runs): p50 %.3f ms, p99 %.3f ms\n\n",
      kBaselineRuns, percentile(base, 50), percentile(base, 99));

  // 2. Output throughput.
  const std::string count = std::to_string(kThroughputBytes / 65536);
  double envd_cpu0 = cpu_seconds(envd.pid());
  double self_cpu0 = self_cpu_seconds();
  auto t0 = Clock::now();
  std::uint64_t got =
      run_process(client, "dd", {"if=/dev/zero", "bs=65536", "count=" + count, "status=none"}, 0);
  double secs = ms(Clock::now() - t0) / 1000.0;
  double envd_cpu = cpu_seconds(envd.pid()) - envd_cpu0;
  double self_cpu = self_cpu_seconds() - self_cpu0;
  std::printf(
      "2. Output throughput: `dd if=/dev/zero bs=65536 count=%s` (256 MiB in 64 KiB writes)\n"
      "   streamed through Process.Start, binary proto codec\n",
      count.c_str());
  std::printf("  received  %llu bytes (expected %llu: %s)\n", static_cast<unsigned long long>(got),
              static_cast<unsigned long long>(kThroughputBytes),
              got == kThroughputBytes ? "ok" : "MISMATCH");
  std::printf("  time      %.3f s\n  rate      %.1f MiB/s\n", secs,
              static_cast<double>(got) / kMiB / secs);
  std::printf("  CPU       envd %.2f s, client %.2f s (user + system; dd itself not counted)\n\n",
              envd_cpu, self_cpu);
  if (got != kThroughputBytes)
    throw std::runtime_error("throughput run received the wrong number of bytes");

  // 3. Resident set size.
  client.disconnect();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const std::size_t rss_after = envd.rss_bytes();
  std::printf("3. envd resident set size (VmRSS of pid %d)\n", static_cast<int>(envd.pid()));
  print_rss("after start (idle)", rss_start);
  print_rss("after the Start runs of figure 1 (idle)", rss_latency);
  print_rss("after the 256 MiB stream (idle, client disconnected)", rss_after);
  std::printf("\n");

  // 4. Binary size.
  const auto built = std::filesystem::file_size(envd_path);
  char tmpl[] = "/tmp/envd-stripped-XXXXXX";
  int fd = ::mkstemp(tmpl);
  if (fd < 0) throw std::runtime_error("mkstemp failed");
  ::close(fd);
  std::uintmax_t stripped = 0;
  try {
    if (spawn_wait({"strip", "-o", tmpl, envd_path}) != 0)
      throw std::runtime_error("strip " + envd_path + " failed");
    stripped = std::filesystem::file_size(tmpl);
  } catch (...) {
    std::remove(tmpl);
    throw;
  }
  std::remove(tmpl);
  std::printf("4. envd binary size\n");
  std::printf("  as built  %10ju bytes = %s  (%s)\n", built, mib(built).c_str(), envd_path.c_str());
  std::printf("  stripped  %10ju bytes = %s\n", stripped, mib(stripped).c_str());

  if (!envd.running())
    throw std::runtime_error("envd exited during the benchmark; log:\n" + envd.log());
  return 0;
}

}  // namespace

int main() {
  try {
    return run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "envd_bench: %s\n", e.what());
  }
  return 1;
}
