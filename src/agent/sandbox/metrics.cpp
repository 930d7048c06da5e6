#include "sandbox/metrics.h"

#include <algorithm>

#include "error.h"

namespace wrenn::agent {

namespace {
constexpr std::size_t kRawCap = 600;                  // 10 min at one sample a second
constexpr std::size_t kMidEvery = 30, kMidCap = 240;  // 30 s points, 2 h
constexpr std::size_t kDayEvery = 10, kDayCap = 288;  // 5 min points, 24 h
}  // namespace

void MetricsRing::push(std::deque<MetricSample>& tier, const MetricSample& s, std::size_t cap) {
  tier.push_back(s);
  while (tier.size() > cap) tier.pop_front();
}

MetricSample MetricsRing::average(const std::vector<MetricSample>& v) {
  MetricSample a;
  if (v.empty()) return a;
  double mem = 0, disk = 0;
  for (const auto& s : v) {
    a.cpu_pct += s.cpu_pct;
    mem += static_cast<double>(s.memory_bytes);
    disk += static_cast<double>(s.disk_bytes);
  }
  const double n = static_cast<double>(v.size());
  a.cpu_pct /= n;
  a.memory_bytes = static_cast<std::uint64_t>(mem / n);
  a.disk_bytes = static_cast<std::uint64_t>(disk / n);
  a.timestamp_ms = v.back().timestamp_ms;
  return a;
}

void MetricsRing::add(const MetricSample& s) {
  push(raw_, s, kRawCap);
  pending_mid_.push_back(s);
  if (pending_mid_.size() < kMidEvery) return;
  MetricSample mid = average(pending_mid_);
  pending_mid_.clear();
  push(mid_, mid, kMidCap);
  pending_day_.push_back(mid);
  if (pending_day_.size() < kDayEvery) return;
  push(day_, average(pending_day_), kDayCap);
  pending_day_.clear();
}

std::vector<MetricSample> MetricsRing::points(const std::string& range, std::int64_t now_ms) const {
  const std::deque<MetricSample>* tier = nullptr;
  std::int64_t minutes = 0;
  if (range.empty() || range == "5m")
    tier = &raw_, minutes = 5;
  else if (range == "10m")
    tier = &raw_, minutes = 10;
  else if (range == "1h")
    tier = &mid_, minutes = 60;
  else if (range == "2h")
    tier = &mid_, minutes = 120;
  else if (range == "6h")
    tier = &day_, minutes = 360;
  else if (range == "12h")
    tier = &day_, minutes = 720;
  else if (range == "24h")
    tier = &day_, minutes = 1440;
  else
    throw Error(Code::kInvalidArgument,
                "range \"" + range + "\" is not one of 5m, 10m, 1h, 2h, 6h, 12h, 24h");
  const std::int64_t cutoff = now_ms - minutes * 60 * 1000;
  std::vector<MetricSample> out;
  for (const auto& s : *tier)
    if (s.timestamp_ms > cutoff) out.push_back(s);
  return out;
}

double cpu_percent(std::uint64_t cpu_usec_delta, std::chrono::microseconds elapsed,
                   std::uint32_t vcpus) {
  if (elapsed.count() <= 0 || vcpus == 0) return 0;
  double pct =
      100.0 * static_cast<double>(cpu_usec_delta) / (static_cast<double>(elapsed.count()) * vcpus);
  return std::clamp(pct, 0.0, 100.0);
}

}  // namespace wrenn::agent
