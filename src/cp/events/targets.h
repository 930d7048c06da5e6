// Outbound targets of notification channels, checked against server-side request forgery:
// a channel must not make the control plane call itself, its database, the cloud metadata
// service or anything else on a private network.
//
// Contract:
//  - check_url(url, policy) parses an absolute http(s) URL (boost::url) and resolves its
//    host; it throws ApiError invalid_request naming the URL and the reason when the URL is
//    malformed, not http(s), carries user:password, or when ANY address it resolves to is
//    refused by policy (a name resolving to one public and one private address is refused).
//    The message never contains the URL's query string (chat webhook URLs carry tokens in
//    their path, so only scheme://host[:port] is named).
//  - Refused unless policy.allow_private: loopback (127/8, ::1), unspecified (0.0.0.0, ::),
//    link-local (169.254/16 — the metadata address 169.254.169.254 among them — fe80::/10),
//    private (10/8, 172.16/12, 192.168/16, fc00::/7), carrier-grade NAT (100.64/10),
//    multicast and reserved (224/4, 240/4, ff00::/8), and IPv4-mapped/compatible IPv6 forms
//    of all of those. The metadata address is refused even with allow_private.
//  - resolve_checked(host, port, policy) returns the addresses to connect to, each checked
//    as above; the sender connects only to these (no second resolution an attacker's DNS
//    could answer differently).
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <string>
#include <vector>

namespace wrenn::cp::events {

struct TargetPolicy {
  bool allow_private = false;  // WRENN_ALLOW_PRIVATE_TARGETS: local and on-premises receivers
};

struct ParsedUrl {
  bool tls = false;
  std::string host;    // without brackets for IPv6
  std::string port;    // explicit or the scheme's default
  std::string target;  // path + query, "/" when empty
  std::string origin;  // "https://host[:port]" for messages
};

// Parses and checks an http(s) URL (throws ApiError invalid_request).
ParsedUrl check_url(const std::string& url, const TargetPolicy& policy);
// Parses without resolving (throws ApiError invalid_request).
ParsedUrl parse_url(const std::string& url);
// True when the address is refused by policy.
bool is_refused(const boost::asio::ip::address& a, const TargetPolicy& policy);
// Resolves and checks; throws ApiError invalid_request when the name does not resolve or
// any address is refused.
std::vector<boost::asio::ip::tcp::endpoint> resolve_checked(const std::string& host,
                                                            const std::string& port,
                                                            const TargetPolicy& policy);
// The same for a parsed URL, naming url.origin in messages; gives up resolving (refused,
// "timed out") after `timeout`. An IP literal host is never sent to the resolver.
std::vector<boost::asio::ip::tcp::endpoint> resolve_checked(
    const ParsedUrl& url, const TargetPolicy& policy,
    std::chrono::milliseconds timeout = std::chrono::seconds(30));

}  // namespace wrenn::cp::events
