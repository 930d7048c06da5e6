#include "net/slot_pool.h"

#include <arpa/inet.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include "error.h"
#include "log.h"

namespace wrenn::agent {
namespace {

// Life of an index. Only kFree indices may be picked for a new slot.
enum class State : std::uint8_t {
  kFree,
  kCreating,  // create_slot running (acquire or refill)
  kWarm,      // ready in the warm pool
  kHanded,    // returned by acquire()
  kAdopted,   // adopt()ed from a previous agent
  kTearing,   // queued for or under destruction (or being swept)
  kBroken,    // something of it is in the way or could not be removed; sweep_stale retries
};

constexpr auto kRefillBackoff = std::chrono::seconds(1);
// How long the pool must be quiet (no slot taken) before the refill makes a slot while
// warm ones remain.
constexpr auto kSettle = std::chrono::milliseconds(100);
using Clock = std::chrono::steady_clock;
constexpr int kAcquireAttempts = 8;

// Usable IPv4 nameservers from resolv.conf text: loopback ones (a host-local stub resolver)
// are unreachable from a sandbox, and sandboxes have no IPv6.
std::vector<std::string> nameservers_from_resolv_conf(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string key, value;
    if (!(words >> key >> value) || key != "nameserver") continue;
    in_addr a{};
    if (::inet_pton(AF_INET, value.c_str(), &a) != 1) continue;
    if ((ntohl(a.s_addr) >> 24) == 127 || a.s_addr == 0) continue;
    out.push_back(value);
  }
  return out;
}

}  // namespace

std::vector<std::string> resolve_nameservers(const std::vector<std::string>& configured,
                                             const std::string& resolv_conf_path) {
  if (!configured.empty()) return configured;
  std::ifstream file(resolv_conf_path);
  std::stringstream text;
  text << file.rdbuf();
  std::vector<std::string> found = nameservers_from_resolv_conf(text.str());
  if (found.empty()) found = {"1.1.1.1", "8.8.8.8"};
  return found;
}

struct SlotPool::Impl {
  SlotPoolOptions opts;
  std::vector<std::string> nameservers;

  mutable std::mutex mu;
  std::condition_variable cv;  // any state change below
  std::vector<State> state = std::vector<State>(kMaxSlots, State::kFree);
  std::map<std::uint32_t, NetSlot> warm;  // lowest index handed out first
  std::deque<std::uint32_t> teardown_queue;
  std::size_t in_use = 0;  // kHanded + kAdopted
  bool refill_enabled = false;
  bool refill_busy = false;
  bool refill_backoff = false;
  bool teardown_busy = false;
  bool stop_refill = false;
  bool stop_teardown = false;
  Clock::time_point last_acquire{};
  std::thread refill_thread;
  std::thread teardown_thread;

  // Lowest kFree index, or kMaxSlots when none. Caller holds mu.
  std::uint32_t lowest_free() const {
    for (std::uint32_t i = 0; i < kMaxSlots; ++i) {
      if (state[i] == State::kFree) return i;
    }
    return kMaxSlots;
  }

  bool refill_idle() const {
    return !refill_busy && (!refill_enabled || refill_backoff || warm.size() >= opts.warm);
  }

  // Creates slot i (marked kCreating by the caller); on failure puts i back (kBroken when a
  // leftover is in the way) and rethrows.
  NetSlot create(std::uint32_t i) {
    try {
      return create_slot(opts.state_dir, i);
    } catch (const Error& e) {
      std::lock_guard lock(mu);
      state[i] = e.code() == Code::kAlreadyExists ? State::kBroken : State::kFree;
      cv.notify_all();
      if (e.code() == Code::kAlreadyExists) {
        log::warn("slot index blocked by a leftover; skipped until sweep_stale",
                  {{"index", std::to_string(i)}, {"error", e.what()}});
      }
      throw;
    } catch (...) {
      std::lock_guard lock(mu);
      state[i] = State::kFree;
      cv.notify_all();
      throw;
    }
  }

  void refill_loop() {
    std::unique_lock lock(mu);
    while (!stop_refill) {
      if (!refill_enabled || warm.size() >= opts.warm) {
        cv.wait(lock);
        continue;
      }
      // While slots are still warm, wait for a quiet moment: making one (netlink, a mount)
      // contends with the start of the sandbox that just took a slot.
      if (!warm.empty() && Clock::now() < last_acquire + kSettle) {
        cv.wait_until(lock, last_acquire + kSettle, [&] { return stop_refill; });
        continue;
      }
      std::uint32_t i = lowest_free();
      if (i == kMaxSlots) {
        refill_backoff = true;
        cv.notify_all();
        cv.wait_for(lock, kRefillBackoff, [&] { return stop_refill; });
        refill_backoff = false;
        continue;
      }
      state[i] = State::kCreating;
      refill_busy = true;
      lock.unlock();
      std::optional<NetSlot> slot;
      bool retry_now = false;
      try {
        slot = create(i);
      } catch (const Error& e) {
        retry_now = e.code() == Code::kAlreadyExists;
        if (!retry_now) log::error("warm slot creation failed", {{"error", e.what()}});
      } catch (const std::exception& e) {
        log::error("warm slot creation failed", {{"error", e.what()}});
      }
      lock.lock();
      refill_busy = false;
      if (slot) {
        state[i] = State::kWarm;
        warm.emplace(i, std::move(*slot));
      } else if (!retry_now) {
        refill_backoff = true;
        cv.notify_all();
        cv.wait_for(lock, kRefillBackoff, [&] { return stop_refill; });
        refill_backoff = false;
      }
      cv.notify_all();
    }
  }

  void teardown_loop() {
    std::unique_lock lock(mu);
    while (true) {
      cv.wait(lock, [&] { return stop_teardown || !teardown_queue.empty(); });
      if (teardown_queue.empty()) return;  // stop_teardown and nothing left
      std::uint32_t i = teardown_queue.front();
      teardown_queue.pop_front();
      teardown_busy = true;
      lock.unlock();
      bool ok = true;
      try {
        destroy_slot(opts.state_dir, i);
      } catch (const std::exception& e) {
        ok = false;
        log::error("slot teardown failed", {{"index", std::to_string(i)}, {"error", e.what()}});
      }
      lock.lock();
      teardown_busy = false;
      state[i] = ok ? State::kFree : State::kBroken;
      cv.notify_all();
    }
  }
};

SlotPool::SlotPool(SlotPoolOptions opts) : impl_(std::make_unique<Impl>()) {
  impl_->opts = std::move(opts);
  impl_->nameservers = resolve_nameservers(impl_->opts.nameservers);
  impl_->refill_thread = std::thread([this] { impl_->refill_loop(); });
  impl_->teardown_thread = std::thread([this] { impl_->teardown_loop(); });
}

SlotPool::~SlotPool() {
  {
    std::lock_guard lock(impl_->mu);
    impl_->stop_refill = true;
    impl_->cv.notify_all();
  }
  impl_->refill_thread.join();
  {
    // Warm slots belong to nobody else: tear them down with the queue.
    std::lock_guard lock(impl_->mu);
    for (auto& [i, slot] : impl_->warm) {
      impl_->state[i] = State::kTearing;
      impl_->teardown_queue.push_back(i);
    }
    impl_->warm.clear();
    impl_->stop_teardown = true;
    impl_->cv.notify_all();
  }
  impl_->teardown_thread.join();
}

NetSlot SlotPool::acquire() {
  Impl& p = *impl_;
  for (int attempt = 0;; ++attempt) {
    std::uint32_t i;
    {
      std::lock_guard lock(p.mu);
      if (!p.warm.empty()) {
        auto node = p.warm.extract(p.warm.begin());
        p.state[node.key()] = State::kHanded;
        ++p.in_use;
        p.last_acquire = Clock::now();
        p.cv.notify_all();  // wake the refill
        return std::move(node.mapped());
      }
      i = p.lowest_free();
      if (i == kMaxSlots) {
        throw Error(Code::kResourceExhausted,
                    "all " + std::to_string(kMaxSlots) + " network slots are in use");
      }
      p.state[i] = State::kCreating;
    }
    try {
      NetSlot slot = p.create(i);
      std::lock_guard lock(p.mu);
      p.state[i] = State::kHanded;
      ++p.in_use;
      return slot;
    } catch (const Error& e) {
      // A leftover blocks this index (it is now kBroken): take the next one.
      if (e.code() != Code::kAlreadyExists || attempt + 1 >= kAcquireAttempts) throw;
    }
  }
}

void SlotPool::release(const NetSlot& slot) {
  Impl& p = *impl_;
  std::uint32_t i = slot.index;
  if (i >= kMaxSlots) return;
  std::lock_guard lock(p.mu);
  switch (p.state[i]) {
    case State::kHanded:
    case State::kAdopted:
      --p.in_use;
      break;
    case State::kFree:
    case State::kBroken:
      log::warn("releasing a slot the pool did not hand out", {{"index", std::to_string(i)}});
      break;
    case State::kCreating:
    case State::kWarm:
    case State::kTearing:
      log::warn("ignoring release of a slot that is not in use", {{"index", std::to_string(i)}});
      return;
  }
  p.state[i] = State::kTearing;
  p.teardown_queue.push_back(i);
  p.cv.notify_all();
}

void SlotPool::adopt(std::uint32_t index) {
  Impl& p = *impl_;
  if (index >= kMaxSlots) {
    throw Error(Code::kInvalidArgument, "slot index " + std::to_string(index) + " out of range");
  }
  std::lock_guard lock(p.mu);
  switch (p.state[index]) {
    case State::kFree:
    case State::kBroken:
      p.state[index] = State::kAdopted;
      ++p.in_use;
      break;
    case State::kHanded:
    case State::kAdopted:
      break;
    case State::kWarm:
      p.warm.erase(index);
      p.state[index] = State::kAdopted;
      ++p.in_use;
      break;
    case State::kCreating:
    case State::kTearing:
      throw Error(Code::kFailedPrecondition,
                  "slot " + std::to_string(index) + " is being created or torn down");
  }
  p.cv.notify_all();
}

void SlotPool::sweep_stale() {
  Impl& p = *impl_;
  std::vector<std::uint32_t> found = list_slot_files(p.opts.state_dir);
  for (std::uint32_t i : list_host_links()) found.push_back(i);
  std::vector<std::uint32_t> stale;
  {
    // Reserve what nobody owns, so a concurrent acquire cannot pick it mid-sweep.
    std::lock_guard lock(p.mu);
    for (std::uint32_t i : found) {
      if (p.state[i] == State::kFree || p.state[i] == State::kBroken) {
        p.state[i] = State::kTearing;
        stale.push_back(i);
      }
    }
    for (std::uint32_t i = 0; i < kMaxSlots; ++i) {
      if (p.state[i] == State::kBroken) {
        p.state[i] = State::kTearing;
        stale.push_back(i);
      }
    }
  }
  for (std::uint32_t i : stale) {
    bool ok = true;
    try {
      destroy_slot(p.opts.state_dir, i);
      log::info("removed stale network slot", {{"index", std::to_string(i)}});
    } catch (const std::exception& e) {
      ok = false;
      log::error("stale slot removal failed", {{"index", std::to_string(i)}, {"error", e.what()}});
    }
    std::lock_guard lock(p.mu);
    p.state[i] = ok ? State::kFree : State::kBroken;
  }
  std::lock_guard lock(p.mu);
  p.refill_enabled = true;
  p.cv.notify_all();
}

void SlotPool::drain() {
  Impl& p = *impl_;
  std::unique_lock lock(p.mu);
  p.cv.wait(lock, [&] { return p.teardown_queue.empty() && !p.teardown_busy && p.refill_idle(); });
}

std::size_t SlotPool::in_use() const {
  std::lock_guard lock(impl_->mu);
  return impl_->in_use;
}

std::vector<std::string> SlotPool::nameservers() const {
  return impl_->nameservers;
}

std::string SlotPool::resolv_conf() const {
  std::string out;
  for (const auto& ns : impl_->nameservers) out += "nameserver " + ns + "\n";
  return out;
}

}  // namespace wrenn::agent
