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
//  - input: from a "wv" link only established/related is accepted (sandbox -> host is
//    dropped: the agent's port, any host listener).
// Contract: install() replaces the table atomically (one nft transaction), so calling it
// again is a no-op in effect; remove() deletes it and succeeds when absent. Throws
// wrenn::Error with nft's own message on failure.
#pragma once

#include <string>
#include <vector>

namespace wrenn::agent {

struct FirewallOptions {
  std::vector<std::string> nameservers;        // allowed for DNS even if private
  std::vector<std::string> extra_blocked;      // more CIDRs to refuse from sandboxes
  bool allow_private = false;                  // operator opt-out of private-network drops
};

void install_firewall(const FirewallOptions& opts);
void remove_firewall();
// The ruleset of table inet wrenn as nft prints it, or "" when the table is absent.
std::string firewall_ruleset();

}  // namespace wrenn::agent
