// Agent pieces without sandboxes: records on disk, metric tiers, validation, the token.
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <filesystem>

#include "api/agent_service.h"
#include "envd_fixture.h"
#include "sandbox/manager.h"
#include "sandbox/metrics.h"
#include "sandbox/record.h"

using namespace wrenn;
using namespace wrenn::agent;
namespace fs = std::filesystem;

TEST_CASE("a record survives a round trip through disk and a torn or foreign one is refused") {
  test::TempDir dir;
  fs::create_directories(dir.path() + "/sandboxes/sb-1");
  SandboxRecord r;
  r.id = "sb-1";
  r.template_name = "busybox";
  r.vcpus = 2;
  r.memory_mb = 1024;
  r.disk_mb = 5120;
  r.timeout_sec = 30;
  r.destroy_on_timeout = true;
  r.env = {{"A", "1"}, {"B", "two words"}};
  r.default_user = "wrenn-user";
  r.default_workdir = "/home/wrenn-user";
  r.metadata = {{"team", "t1"}};
  r.created_at_unix = 1790000000;
  r.state = SandboxState::kPaused;
  r.paused_reason = "timeout";
  r.slot = 7;
  r.handle = RuntimeHandle{4242, 987654321};
  write_record(dir.path(), r);
  struct stat st {};
  REQUIRE(::stat(record_path(dir.path(), "sb-1").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);

  SandboxRecord back = read_record(dir.path(), "sb-1");
  CHECK(back.template_name == "busybox");
  CHECK(back.vcpus == 2);
  CHECK(back.memory_mb == 1024);
  CHECK(back.timeout_sec == 30);
  CHECK(back.destroy_on_timeout);
  CHECK(back.env == r.env);
  CHECK(back.default_user == "wrenn-user");
  CHECK(back.metadata == r.metadata);
  CHECK(back.state == SandboxState::kPaused);
  CHECK(back.paused_reason == "timeout");
  REQUIRE(back.slot);
  CHECK(*back.slot == 7);
  REQUIRE(back.handle);
  CHECK(back.handle->pid == 4242);
  CHECK(back.handle->start_time == 987654321);

  CHECK(test::error_code_of([&] { read_record(dir.path(), "sb-2"); }) == Code::kNotFound);
  test::write_file(record_path(dir.path(), "sb-1"), "{\"id\":\"sb-1\",");
  CHECK(test::error_code_of([&] { read_record(dir.path(), "sb-1"); }) == Code::kDataLoss);
  fs::create_directories(dir.path() + "/sandboxes/sb-3");
  test::write_file(record_path(dir.path(), "sb-3"), "{\"id\":\"sb-1\"}");
  CHECK(test::error_code_of([&] { read_record(dir.path(), "sb-3"); }) == Code::kDataLoss);
}

TEST_CASE("metric tiers: raw for minutes and averages for hours - unknown ranges refused") {
  MetricsRing ring;
  const std::int64_t t0 = 1'000'000'000;
  for (int i = 0; i < 3600; ++i) {  // one hour at one sample a second
    MetricSample s;
    s.timestamp_ms = t0 + i * 1000;
    s.cpu_pct = i % 2 ? 100 : 0;
    s.memory_bytes = 1000;
    s.disk_bytes = static_cast<std::uint64_t>(i);
    ring.add(s);
  }
  const std::int64_t now = t0 + 3600 * 1000;
  auto five = ring.points("5m", now);
  CHECK(five.size() == 299);  // strictly newer than now - 5 min
  CHECK(five.front().timestamp_ms < five.back().timestamp_ms);
  auto ten = ring.points("10m", now);
  CHECK(ten.size() == 599);
  auto hour = ring.points("1h", now);
  CHECK(hour.size() == 120);  // 30 s averages, each stamped with its last sample
  CHECK(hour.back().cpu_pct == Approx(50));
  CHECK(hour.back().memory_bytes == 1000);
  CHECK(ring.points("24h", now).size() == 12);  // 5 min averages
  CHECK(test::error_code_of([&] { ring.points("3d", now); }) == Code::kInvalidArgument);
  CHECK(ring.points("", now).size() == five.size());
}

TEST_CASE("cpu percent is relative to the sandbox's vcpus and clamped") {
  using std::chrono::microseconds;
  CHECK(cpu_percent(500'000, microseconds(1'000'000), 1) == Approx(50));
  CHECK(cpu_percent(1'000'000, microseconds(1'000'000), 2) == Approx(50));
  CHECK(cpu_percent(5'000'000, microseconds(1'000'000), 1) == Approx(100));
  CHECK(cpu_percent(5, microseconds(0), 1) == 0);
}

TEST_CASE("sandbox ids and template names are validated with a clear error") {
  CHECK_NOTHROW(validate_sandbox_id("cl-0123456789abcdefghijklmno"));
  for (std::string bad :
       std::vector<std::string>{"", "-x", "A", "a/b", "a..b/", std::string(64, 'a'), "a b", "ä"}) {
    INFO(bad);
    CHECK(test::error_code_of([&] { validate_sandbox_id(bad); }) == Code::kInvalidArgument);
  }
  CHECK_NOTHROW(validate_template_name("python-3.12_slim"));
  for (std::string bad : {"", "..", "../etc", "a/b", ".hidden", "a..b"}) {
    INFO(bad);
    CHECK(test::error_code_of([&] { validate_template_name(bad); }) == Code::kInvalidArgument);
  }
}

TEST_CASE("the agent token is created once with mode 0600 and a group-readable one is refused") {
  test::TempDir dir;
  const std::string path = dir.path() + "/agent-token";
  std::string t1 = load_or_create_token(path);
  CHECK(t1.size() == 64);
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(load_or_create_token(path) == t1);
  ::chmod(path.c_str(), 0640);
  CHECK(test::error_code_of([&] { load_or_create_token(path); }) == Code::kPermissionDenied);

  CHECK_NOTHROW(check_bearer("Bearer " + t1, t1));
  CHECK(test::error_code_of([&] { check_bearer("", t1); }) == Code::kUnauthenticated);
  CHECK(test::error_code_of([&] { check_bearer("Bearer " + t1.substr(1), t1); }) ==
        Code::kUnauthenticated);
  CHECK(test::error_code_of([&] { check_bearer("Basic " + t1, t1); }) == Code::kUnauthenticated);
  CHECK_NOTHROW(check_agent_token("Basic cm9vdDo=", t1, t1));
  CHECK(test::error_code_of([&] { check_agent_token("Bearer " + t1, "wrong", t1); }) ==
        Code::kUnauthenticated);
}
