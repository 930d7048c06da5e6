#include "net/netlink.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netlink/cache.h>
#include <netlink/errno.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/link/veth.h>
#include <netlink/route/nexthop.h>
#include <netlink/route/route.h>
#include <sys/socket.h>

#include <cstring>
#include <string_view>

#include "error.h"

namespace wrenn::agent::nl {
namespace {

template <typename T, void (*Free)(T*)>
struct Deleter {
  void operator()(T* p) const {
    if (p) Free(p);
  }
};
using Link = std::unique_ptr<rtnl_link, Deleter<rtnl_link, rtnl_link_put>>;
using Veth = std::unique_ptr<rtnl_link, Deleter<rtnl_link, rtnl_link_veth_release>>;
using Addr = std::unique_ptr<rtnl_addr, Deleter<rtnl_addr, rtnl_addr_put>>;
using Route = std::unique_ptr<rtnl_route, Deleter<rtnl_route, rtnl_route_put>>;
using NlAddr = std::unique_ptr<nl_addr, Deleter<nl_addr, nl_addr_put>>;
using Cache = std::unique_ptr<nl_cache, Deleter<nl_cache, nl_cache_free>>;

[[noreturn]] void fail(int err, std::string_view what) {
  err = err < 0 ? -err : err;
  std::string msg = std::string(what) + ": " + nl_geterror(err);
  switch (err) {
    case NLE_EXIST:
      throw Error(Code::kAlreadyExists, std::move(msg));
    case NLE_NODEV:
    case NLE_OBJ_NOTFOUND:
      throw Error(Code::kNotFound, std::move(msg));
    case NLE_PERM:
      throw Error(Code::kPermissionDenied, std::move(msg));
    default:
      throw Error(Code::kInternal, std::move(msg));
  }
}

void check(int err, std::string_view what) {
  if (err < 0) fail(err, what);
}

Link alloc_link() {
  Link link(rtnl_link_alloc());
  if (!link) throw Error(Code::kResourceExhausted, "rtnl_link_alloc: out of memory");
  return link;
}

NlAddr parse_ipv4(const std::string& text) {
  nl_addr* addr = nullptr;
  int err = nl_addr_parse(text.c_str(), AF_INET, &addr);
  if (err < 0)
    throw Error(Code::kInvalidArgument, "bad IPv4 address " + text + ": " + nl_geterror(-err));
  return NlAddr(addr);
}

std::string ipv4_string(nl_addr* addr, bool with_prefix) {
  in_addr in{};
  if (addr && nl_addr_get_len(addr) == sizeof(in)) {
    std::memcpy(&in, nl_addr_get_binary_addr(addr), sizeof(in));
  }
  char buf[INET_ADDRSTRLEN] = {};
  ::inet_ntop(AF_INET, &in, buf, sizeof(buf));
  std::string out = buf;
  if (with_prefix) out += "/" + std::to_string(addr ? nl_addr_get_prefixlen(addr) : 0);
  return out;
}

// Applies `changes` to the link with this index (RTM_NEWLINK, falling back to SETLINK).
void change_link(nl_sock* sock, int ifindex, rtnl_link* changes, std::string_view what) {
  Link orig = alloc_link();
  rtnl_link_set_ifindex(orig.get(), ifindex);
  check(rtnl_link_change(sock, orig.get(), changes, 0), what);
}

}  // namespace

void SocketDeleter::operator()(nl_sock* sock) const {
  nl_socket_free(sock);
}

Socket open_route_socket() {
  Socket sock(nl_socket_alloc());
  if (!sock) throw Error(Code::kResourceExhausted, "nl_socket_alloc: out of memory");
  check(nl_connect(sock.get(), NETLINK_ROUTE), "connect rtnetlink socket");
  // nl_connect leaves the fd without FD_CLOEXEC; sandboxes are started by fork+exec.
  int fd = nl_socket_get_fd(sock.get());
  ::fcntl(fd, F_SETFD, ::fcntl(fd, F_GETFD) | FD_CLOEXEC);
  return sock;
}

int link_index(nl_sock* sock, const std::string& name) {
  rtnl_link* raw = nullptr;
  int err = rtnl_link_get_kernel(sock, 0, name.c_str(), &raw);
  if (err == -NLE_OBJ_NOTFOUND || err == -NLE_NODEV) return 0;
  check(err, "look up link " + name);
  Link link(raw);
  return rtnl_link_get_ifindex(link.get());
}

void set_link_up(nl_sock* sock, int ifindex, const std::string& name) {
  Link changes = alloc_link();
  rtnl_link_set_flags(changes.get(), IFF_UP);
  change_link(sock, ifindex, changes.get(), "set link " + name + " up");
}

void add_address(nl_sock* sock, int ifindex, const std::string& cidr) {
  NlAddr local = parse_ipv4(cidr);
  Addr addr(rtnl_addr_alloc());
  if (!addr) throw Error(Code::kResourceExhausted, "rtnl_addr_alloc: out of memory");
  rtnl_addr_set_ifindex(addr.get(), ifindex);
  rtnl_addr_set_family(addr.get(), AF_INET);
  check(rtnl_addr_set_local(addr.get(), local.get()), "set address " + cidr);
  check(rtnl_addr_add(sock, addr.get(), NLM_F_EXCL), "add address " + cidr);
}

void add_default_route(nl_sock* sock, int ifindex, const std::string& gateway) {
  NlAddr dst = parse_ipv4("0.0.0.0/0");
  NlAddr gw = parse_ipv4(gateway);
  Route route(rtnl_route_alloc());
  if (!route) throw Error(Code::kResourceExhausted, "rtnl_route_alloc: out of memory");
  rtnl_route_set_family(route.get(), AF_INET);
  rtnl_route_set_table(route.get(), RT_TABLE_MAIN);
  rtnl_route_set_protocol(route.get(), RTPROT_STATIC);
  rtnl_route_set_scope(route.get(), RT_SCOPE_UNIVERSE);
  check(rtnl_route_set_dst(route.get(), dst.get()), "set route destination");
  rtnl_nexthop* nh = rtnl_route_nh_alloc();
  if (!nh) throw Error(Code::kResourceExhausted, "rtnl_route_nh_alloc: out of memory");
  rtnl_route_nh_set_ifindex(nh, ifindex);
  rtnl_route_nh_set_gateway(nh, gw.get());
  rtnl_route_nh_set_flags(nh, RTNH_F_ONLINK);
  rtnl_route_add_nexthop(route.get(), nh);  // the route owns nh from here
  check(rtnl_route_add(sock, route.get(), NLM_F_CREATE | NLM_F_EXCL),
        "add default route via " + gateway);
}

void create_veth(nl_sock* sock, const std::string& name, const std::string& peer_name,
                 int peer_netns_fd) {
  Veth veth(rtnl_link_veth_alloc());
  if (!veth) throw Error(Code::kResourceExhausted, "rtnl_link_veth_alloc: out of memory");
  rtnl_link_set_name(veth.get(), name.c_str());
  Link peer(rtnl_link_veth_get_peer(veth.get()));
  rtnl_link_set_name(peer.get(), peer_name.c_str());
  if (peer_netns_fd >= 0) rtnl_link_set_ns_fd(peer.get(), peer_netns_fd);
  check(rtnl_link_add(sock, veth.get(), NLM_F_CREATE | NLM_F_EXCL),
        "create veth " + name + " <-> " + peer_name);
}

void move_link_to_netns(nl_sock* sock, int ifindex, const std::string& name, int netns_fd) {
  Link changes = alloc_link();
  rtnl_link_set_ns_fd(changes.get(), netns_fd);
  change_link(sock, ifindex, changes.get(), "move link " + name + " to the agent's namespace");
}

bool delete_link(nl_sock* sock, const std::string& name) {
  Link link = alloc_link();
  rtnl_link_set_name(link.get(), name.c_str());
  int err = rtnl_link_delete(sock, link.get());
  if (err == -NLE_OBJ_NOTFOUND || err == -NLE_NODEV) return false;
  check(err, "delete link " + name);
  return true;
}

std::vector<LinkInfo> list_links(nl_sock* sock) {
  nl_cache* raw = nullptr;
  check(rtnl_link_alloc_cache(sock, AF_UNSPEC, &raw), "list links");
  Cache cache(raw);
  std::vector<LinkInfo> out;
  for (nl_object* obj = nl_cache_get_first(cache.get()); obj; obj = nl_cache_get_next(obj)) {
    auto* link = reinterpret_cast<rtnl_link*>(obj);
    const char* name = rtnl_link_get_name(link);
    out.push_back({name ? name : "", rtnl_link_get_ifindex(link), rtnl_link_get_flags(link)});
  }
  return out;
}

std::optional<LinkInfo> find_link(nl_sock* sock, const std::string& name) {
  rtnl_link* raw = nullptr;
  int err = rtnl_link_get_kernel(sock, 0, name.c_str(), &raw);
  if (err == -NLE_OBJ_NOTFOUND || err == -NLE_NODEV) return std::nullopt;
  check(err, "look up link " + name);
  Link link(raw);
  return LinkInfo{name, rtnl_link_get_ifindex(link.get()), rtnl_link_get_flags(link.get())};
}

std::vector<std::string> ipv4_addresses(nl_sock* sock, int ifindex) {
  nl_cache* raw = nullptr;
  check(rtnl_addr_alloc_cache(sock, &raw), "list addresses");
  Cache cache(raw);
  std::vector<std::string> out;
  for (nl_object* obj = nl_cache_get_first(cache.get()); obj; obj = nl_cache_get_next(obj)) {
    auto* addr = reinterpret_cast<rtnl_addr*>(obj);
    if (rtnl_addr_get_family(addr) != AF_INET || rtnl_addr_get_ifindex(addr) != ifindex) continue;
    out.push_back(ipv4_string(rtnl_addr_get_local(addr), false) + "/" +
                  std::to_string(rtnl_addr_get_prefixlen(addr)));
  }
  return out;
}

std::vector<RouteInfo> ipv4_routes(nl_sock* sock) {
  nl_cache* raw = nullptr;
  check(rtnl_route_alloc_cache(sock, AF_INET, 0, &raw), "list routes");
  Cache cache(raw);
  std::vector<RouteInfo> out;
  for (nl_object* obj = nl_cache_get_first(cache.get()); obj; obj = nl_cache_get_next(obj)) {
    auto* route = reinterpret_cast<rtnl_route*>(obj);
    if (rtnl_route_get_table(route) != RT_TABLE_MAIN) continue;
    RouteInfo info;
    info.dst = ipv4_string(rtnl_route_get_dst(route), true);
    info.table = rtnl_route_get_table(route);
    if (rtnl_route_get_nnexthops(route) > 0) {
      rtnl_nexthop* nh = rtnl_route_nexthop_n(route, 0);
      info.oif = rtnl_route_nh_get_ifindex(nh);
      if (nl_addr* gw = rtnl_route_nh_get_gateway(nh)) info.gateway = ipv4_string(gw, false);
    }
    out.push_back(std::move(info));
  }
  return out;
}

}  // namespace wrenn::agent::nl
