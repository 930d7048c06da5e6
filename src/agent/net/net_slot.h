// A sandbox's network: a network namespace, a veth pair and a /31 link to the agent's
// namespace. Slots are numbered; everything about slot i is derived from i, so a record
// holding only the index (and the state dir) is enough to find or remove its parts.
//
// Addressing (slot i in [0, kMaxSlots)): host side 10.12.0.0 + 2i, sandbox side
// 10.12.0.0 + 2i + 1, both /31. Host-side link "wv<i>" (at most 7 characters, well under
// IFNAMSIZ), its peer is "eth0" inside the namespace. The namespace is bind-mounted at
// <state_dir>/netns/slot-<i> (per agent, so agents in different network namespaces — the
// tests — never collide).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace wrenn::agent {

inline constexpr std::uint32_t kMaxSlots = 32768;
inline constexpr const char* kSandboxSubnet = "10.12.0.0/16";
inline constexpr const char* kHostLinkPrefix = "wv";

struct NetSlot {
  std::uint32_t index = 0;
  std::string netns_path;   // bind mount of the slot's network namespace
  std::string host_ifname;  // "wv<i>" in the agent's namespace
  std::string host_ip;      // 10.12.x.y (even), gateway for the sandbox
  std::string sandbox_ip;   // 10.12.x.y+1, "eth0" inside
};

// Pure address maths for slot i (no I/O). Throws Error(invalid_argument) for
// index >= kMaxSlots.
NetSlot slot_layout(const std::string& state_dir, std::uint32_t index);

// <state_dir>/netns, where the slot namespaces are bound.
std::string netns_dir(const std::string& state_dir);

// Creates slot i, with the calling thread's network namespace as the agent's side. The work
// runs on a short-lived thread that unshares a new network namespace (never the mount
// namespace, so the bind mount lands in the caller's mount namespace). On return the
// slot is as SlotPool::acquire() describes it. The veth pair is made by one netlink
// request from the agent's side with the peer placed straight into the new namespace
// (about 1-2 ms per slot; moving a link between namespaces would add an RCU grace period). On
// failure nothing of it remains and wrenn::Error is thrown; already_exists means a leftover of slot
// i (file or "wv<i>" link) is in the way, which create_slot does not remove.
NetSlot create_slot(const std::string& state_dir, std::uint32_t index);

// Removes slot i: deletes "wv<i>" (which takes "eth0" with it), detaches the bind mount
// and unlinks the namespace file. Parts already gone are fine. Every step is attempted;
// the first failure is thrown afterwards.
void destroy_slot(const std::string& state_dir, std::uint32_t index);

// Indices of the "slot-<i>" files under netns_dir(state_dir) (none when it is missing).
std::vector<std::uint32_t> list_slot_files(const std::string& state_dir);
// Indices of the "wv<i>" links in the calling thread's network namespace.
std::vector<std::uint32_t> list_host_links();

}  // namespace wrenn::agent
