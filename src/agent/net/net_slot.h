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

// Pure address maths for slot i (no I/O).
NetSlot slot_layout(const std::string& state_dir, std::uint32_t index);

}  // namespace wrenn::agent
