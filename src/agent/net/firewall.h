// Firewall: the one nftables table the agent owns ("inet wrenn"), through libnftables.
// The rules match the sandbox subnet and the "wv*" link prefix, not individual sandboxes,
// so creating or destroying a sandbox never touches them and nothing per sandbox can leak.
//
// Rules:
//  - postrouting (nat): traffic from kSandboxSubnet leaving by a non-"wv" link is
//    masqueraded (egress to the Internet).
//  - forward: sandbox -> sandbox dropped; sandbox -> blocked destinations (169.254.0.0/16
//    incl. the metadata address, 10/8, 172.16/12, 192.168/16, 100.64/10, 127/8, and the
//    extra ones configured) dropped, except DNS to the configured nameservers; packets
//    entering from a "wv" link with a source outside its subnet dropped (spoofing);
//    replies (established/related) accepted.
//  - forward: new connections into a "wv" link from elsewhere are dropped (only the agent,
//    from its own namespace, opens connections to sandboxes).
//  - prerouting: IPv6 from a "wv" link is dropped (sandboxes are IPv4-only); the source
//    check is a strict reverse-path lookup (fib saddr . iif), so a sandbox can only use
//    the address routed to its own link.
//  - input: from a "wv" link only established/related and DNS to a configured nameserver
//    are accepted (sandbox -> host is dropped: the agent's port, any host listener).
// Addresses must be IPv4 (CIDR or plain); IPv6 nameservers are skipped, other malformed
// input throws Error(invalid_argument) before nft runs.
// Contract: install() replaces the table atomically (one nft transaction), so calling it
// again is a no-op in effect; remove() deletes it and succeeds when absent. Throws
// wrenn::Error with nft's own message on failure.
#pragma once

#include <string>
#include <vector>

namespace wrenn::agent {

struct FirewallOptions {
  std::vector<std::string> nameservers;    // allowed for DNS even if private
  std::vector<std::string> extra_blocked;  // more CIDRs to refuse from sandboxes
  bool allow_private = false;              // operator opt-out of private-network drops
};

void install_firewall(const FirewallOptions& opts);
void remove_firewall();
// The ruleset of table inet wrenn as nft prints it, or "" when the table is absent.
std::string firewall_ruleset();

// Turns on IPv4 forwarding in the calling thread's network namespace
// (/proc/sys/net/ipv4/ip_forward = 1) and checks it took. Sandboxes reach the outside only
// through it. Throws wrenn::Error on failure.
void enable_ip_forwarding();

}  // namespace wrenn::agent
