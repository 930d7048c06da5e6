// Thin RAII layer over libnl-route-3 for the few rtnetlink operations network slots need.
// Private to wrenn_agent_net (and its tests).
//
// Contract: a Socket talks to the network namespace the calling thread was in when it was
// opened, for its whole life, whatever the thread does afterwards. Every function throws
// wrenn::Error naming the operation and the object on failure: already_exists for
// NLE_EXIST, not_found for a missing link, permission_denied for NLE_PERM, internal
// otherwise.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

struct nl_sock;

namespace wrenn::agent::nl {

struct SocketDeleter {
  void operator()(nl_sock* sock) const;
};
using Socket = std::unique_ptr<nl_sock, SocketDeleter>;

// A connected NETLINK_ROUTE socket in the calling thread's network namespace.
Socket open_route_socket();

// Interface index of `name`, or 0 when there is no such link.
int link_index(nl_sock* sock, const std::string& name);
// Sets IFF_UP on the link.
void set_link_up(nl_sock* sock, int ifindex, const std::string& name);
// Adds an IPv4 address in CIDR form ("10.12.0.0/31").
void add_address(nl_sock* sock, int ifindex, const std::string& cidr);
// Adds a default IPv4 route through `gateway` on the link, flagged onlink (the gateway
// only needs to share the link, which is up).
void add_default_route(nl_sock* sock, int ifindex, const std::string& gateway);
// Creates a veth pair `name` <-> `peer`: `name` in the socket's namespace, `peer` in the
// namespace of peer_netns_fd (the socket's when -1).
void create_veth(nl_sock* sock, const std::string& name, const std::string& peer,
                 int peer_netns_fd = -1);
// Moves the link into the network namespace of `netns_fd` (IFLA_NET_NS_FD).
void move_link_to_netns(nl_sock* sock, int ifindex, const std::string& name, int netns_fd);
// Deletes the link; returns false when it did not exist.
bool delete_link(nl_sock* sock, const std::string& name);

struct LinkInfo {
  std::string name;
  int ifindex = 0;
  unsigned flags = 0;  // IFF_*
};
std::vector<LinkInfo> list_links(nl_sock* sock);
std::optional<LinkInfo> find_link(nl_sock* sock, const std::string& name);

// IPv4 addresses of a link in CIDR form.
std::vector<std::string> ipv4_addresses(nl_sock* sock, int ifindex);

struct RouteInfo {
  std::string dst;      // CIDR; "0.0.0.0/0" for the default route
  std::string gateway;  // "" when none
  int oif = 0;
  unsigned table = 0;
};
// IPv4 routes of the main table.
std::vector<RouteInfo> ipv4_routes(nl_sock* sock);

}  // namespace wrenn::agent::nl
