// SlotPool: hands out ready network slots (netns + veth + addresses + routes) and takes
// them back. Creating a slot costs about a millisecond, tearing one down tens of
// milliseconds (netdev unregistration waits for RCU), so the pool keeps `warm` slots made
// ahead of time and tears released slots down on a background thread.
//
// Contract:
//  - acquire() returns a fully configured slot: inside its namespace lo and eth0 are up,
//    eth0 has sandbox_ip/31, the default route goes via host_ip, and resolv_conf() names
//    a resolver reachable from there; in the agent's namespace host_ifname is up with
//    host_ip/31. Throws wrenn::Error (resource_exhausted when all kMaxSlots are used).
//  - release() returns immediately; the slot is destroyed in the background and its index
//    becomes free only once nothing of it remains.
//  - adopt() marks an index in use without touching it (a restarted agent re-adopting a
//    running sandbox). Call adopt() for every live sandbox before sweep_stale().
//  - sweep_stale() removes every slot namespace under <state_dir>/netns and every "wv*"
//    link in the agent's namespace that is neither adopted nor handed out — what a crash
//    left half-made. Then it starts filling the warm pool.
//  - drain() waits until background teardown and refill are idle (shutdown and tests).
//    A refill that failed counts as idle (it retries every second).
//  - Before sweep_stale() the warm pool stays empty and acquire() creates slots itself.
//  - An index blocked by a leftover (a slot-<i> file or "wv<i>" link nobody owns) is
//    skipped until sweep_stale() removes it; a slot whose teardown failed likewise.
//  - The destructor tears down warm slots and queued releases; handed-out and adopted
//    slots stay (the next agent adopts or sweeps them).
//  - The agent's namespace is that of the thread constructing the pool (its background
//    threads inherit it); acquire() and sweep_stale() work in the calling thread's.
//  Thread-safe.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "net/net_slot.h"

namespace wrenn::agent {

struct SlotPoolOptions {
  std::string state_dir;                 // $WRENN_DIR
  std::size_t warm = 4;                  // slots kept ready
  std::vector<std::string> nameservers;  // written to the sandbox's resolv.conf
};

// The nameserver choice described at SlotPool::nameservers(), reading resolv_conf_path.
std::vector<std::string> resolve_nameservers(
    const std::vector<std::string>& configured,
    const std::string& resolv_conf_path = "/etc/resolv.conf");

class SlotPool {
 public:
  explicit SlotPool(SlotPoolOptions opts);
  ~SlotPool();  // stops background work; does not destroy handed-out slots
  SlotPool(const SlotPool&) = delete;
  SlotPool& operator=(const SlotPool&) = delete;

  NetSlot acquire();
  void release(const NetSlot& slot);
  void adopt(std::uint32_t index);
  void sweep_stale();
  void drain();
  std::size_t in_use() const;
  // The sandboxes' nameservers: SlotPoolOptions::nameservers, or else the IPv4
  // non-loopback ones of the host's /etc/resolv.conf, or else 1.1.1.1 and 8.8.8.8. Pass
  // them to FirewallOptions::nameservers.
  std::vector<std::string> nameservers() const;
  // resolv.conf contents for sandboxes ("nameserver a.b.c.d\n" lines).
  std::string resolv_conf() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace wrenn::agent
