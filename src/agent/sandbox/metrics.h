// MetricsRing: a sandbox's sampled usage in three tiers, so a day of history costs a few
// kilobytes. Raw samples (one per sampling tick) feed the 10-minute tier; every 30 raw
// samples are averaged into the 2-hour tier, and every 10 of those into the 24-hour tier.
//
// Contract: not thread-safe (the manager guards it). points(range) returns the chosen
// tier's points newer than now - range, oldest first; an unknown range is
// Error(invalid_argument) naming the accepted ones.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <string>
#include <vector>

namespace wrenn::agent {

struct MetricSample {
  std::int64_t timestamp_ms = 0;
  double cpu_pct = 0;
  std::uint64_t memory_bytes = 0;
  std::uint64_t disk_bytes = 0;
};

class MetricsRing {
 public:
  void add(const MetricSample& s);
  std::vector<MetricSample> points(const std::string& range, std::int64_t now_ms) const;
  std::size_t size() const { return raw_.size(); }

 private:
  static void push(std::deque<MetricSample>& tier, const MetricSample& s, std::size_t cap);
  static MetricSample average(const std::vector<MetricSample>& v);
  std::deque<MetricSample> raw_, mid_, day_;
  std::vector<MetricSample> pending_mid_, pending_day_;
};

// Turns two cumulative CPU readings into a percentage of the sandbox's vcpus, 0..100.
double cpu_percent(std::uint64_t cpu_usec_delta, std::chrono::microseconds elapsed,
                   std::uint32_t vcpus);

}  // namespace wrenn::agent
