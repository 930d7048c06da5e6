// Event delivery benchmark: 10,000 events of one team fanned out to 10 webhook channels
// (100,000 deliveries) by a real wrenn-cp on a throwaway PostgreSQL, received by a local
// HTTP receiver. Events are written by events::record() in transactions of 100, as the
// control plane's state changes write them. Prints the delivery throughput and the end-to-
// end latency (commit of the event -> request at the receiver) p50/p99.
//
// Needs no agent and no root; run by scripts/bench.sh or directly with WRENN_BIN_DIR set.
#include <algorithm>
#include <boost/json.hpp>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "cp_fixture.h"
#include "events/event.h"
#include "http_receiver.h"

using namespace wrenn;
using namespace wrenn::test;
using Clock = std::chrono::steady_clock;
namespace json = boost::json;
namespace events = wrenn::cp::events;

namespace {

constexpr int kEvents = 10000, kChannels = 10, kPerTx = 100;

double ms(Clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

}  // namespace

int main() {
  HttpReceiver rx;
  CpOptions o;
  o.extra_args = {"--allow-private-targets"};
  CpProcess cp(o);
  auto team = cp.create_team("bench");
  for (int c = 0; c < kChannels; ++c) {
    json::object body;
    body["name"] = "hook-" + std::to_string(c);
    body["provider"] = "webhook";
    body["config"] = json::object{{"url", rx.url("/c" + std::to_string(c))}};
    json::array events;
    events.emplace_back("capsule.create");
    body["events"] = std::move(events);
    auto r = cp.post("/v1/channels", json::serialize(body), team.api_key);
    if (r.status != 201) {
      std::fprintf(stderr, "events_bench: channel create failed: %s\n", r.body.c_str());
      return 1;
    }
  }
  std::fprintf(stderr, "events_bench: %d events x %d webhook channels...\n", kEvents, kChannels);

  std::vector<Clock::time_point> committed(kEvents);
  auto pool = cp.pool();
  const auto start = Clock::now();
  for (int i = 0; i < kEvents; i += kPerTx) {
    pool->with_transaction([&](pg::Connection& tx) {
      for (int j = i; j < i + kPerTx; ++j) {
        events::Event ev;
        ev.type = "capsule.create";
        ev.outcome = "success";
        ev.team_id = team.team_id;
        ev.resource_id = std::to_string(j);
        ev.resource_type = "sandbox";
        events::record(tx, ev);
      }
    });
    const auto now = Clock::now();
    for (int j = i; j < i + kPerTx; ++j) committed[static_cast<std::size_t>(j)] = now;
  }
  const auto written = Clock::now();
  const std::size_t total = static_cast<std::size_t>(kEvents) * kChannels;
  if (!rx.wait_for(total, std::chrono::minutes(10))) {
    std::fprintf(stderr, "events_bench: only %zu of %zu deliveries arrived in 10 minutes\n",
                 rx.requests().size(), total);
    return 1;
  }
  auto got = rx.requests();
  std::vector<double> latency;
  latency.reserve(got.size());
  Clock::time_point last = start;
  for (const auto& r : got) {
    const auto id = json::parse(r.body).at("resource").at("id").as_string();
    const int j = std::stoi(std::string(id));
    latency.push_back(ms(r.at - committed[static_cast<std::size_t>(j)]));
    last = std::max(last, r.at);
  }
  std::sort(latency.begin(), latency.end());
  auto pct = [&](double p) {
    return latency[std::min(latency.size() - 1, static_cast<std::size_t>(p * latency.size()))];
  };
  const double seconds = std::chrono::duration<double>(last - start).count();
  std::printf("events_bench: %d events x %d channels = %zu deliveries\n", kEvents, kChannels,
              total);
  std::printf("  events written in            %8.2f s (%d per transaction)\n",
              std::chrono::duration<double>(written - start).count(), kPerTx);
  std::printf("  all delivered after          %8.2f s  (%.0f deliveries/s)\n", seconds,
              static_cast<double>(total) / seconds);
  std::printf("  end-to-end latency p50       %8.1f ms\n", pct(0.50));
  std::printf("  end-to-end latency p99       %8.1f ms\n", pct(0.99));
  return 0;
}
