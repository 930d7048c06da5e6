#include "net/firewall.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <nftables/libnftables.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <memory>
#include <string_view>

#include "error.h"
#include "log.h"
#include "net/net_slot.h"
#include "net/unique_fd.h"

namespace wrenn::agent {
namespace {

struct CtxDeleter {
  void operator()(nft_ctx* ctx) const { nft_ctx_free(ctx); }
};

struct NftResult {
  bool ok = false;
  std::string output;
  std::string error;
};

NftResult run_nft(const std::string& script) {
  std::unique_ptr<nft_ctx, CtxDeleter> ctx(nft_ctx_new(NFT_CTX_DEFAULT));
  if (!ctx) throw Error(Code::kInternal, "nft_ctx_new failed");
  if (nft_ctx_buffer_output(ctx.get()) != 0 || nft_ctx_buffer_error(ctx.get()) != 0) {
    throw Error(Code::kInternal, "nft: cannot buffer output");
  }
  NftResult result;
  result.ok = nft_run_cmd_from_buffer(ctx.get(), script.c_str()) == 0;
  if (const char* out = nft_ctx_get_output_buffer(ctx.get())) result.output = out;
  if (const char* err = nft_ctx_get_error_buffer(ctx.get())) result.error = err;
  return result;
}

void run_nft_or_throw(const std::string& script, std::string_view what) {
  NftResult r = run_nft(script);
  if (!r.ok) {
    Code code = r.error.find("Operation not permitted") != std::string::npos
                    ? Code::kPermissionDenied
                    : Code::kInternal;
    throw Error(code, std::string(what) + ": " + r.error);
  }
}

bool is_ipv6(const std::string& text) {
  in6_addr a{};
  std::string addr = text.substr(0, text.find('/'));
  return ::inet_pton(AF_INET6, addr.c_str(), &a) == 1;
}

// Returns the canonical text of an IPv4 address or CIDR, or throws invalid_argument; only
// validated text ever reaches the nft script.
std::string ipv4_element(const std::string& text, std::string_view what) {
  auto bad = [&] {
    return Error(Code::kInvalidArgument, std::string(what) + ": bad IPv4 " + text);
  };
  std::string::size_type slash = text.find('/');
  std::string addr = text.substr(0, slash);
  in_addr a{};
  if (::inet_pton(AF_INET, addr.c_str(), &a) != 1) throw bad();
  char buf[INET_ADDRSTRLEN] = {};
  ::inet_ntop(AF_INET, &a, buf, sizeof(buf));
  std::string out = buf;
  if (slash != std::string::npos) {
    std::string_view len = std::string_view(text).substr(slash + 1);
    unsigned prefix = 0;
    auto [end, ec] = std::from_chars(len.data(), len.data() + len.size(), prefix);
    if (len.empty() || ec != std::errc() || end != len.data() + len.size() || prefix > 32) {
      throw bad();
    }
    // nft refuses a CIDR with host bits set; mask them off.
    std::uint32_t host = ntohl(a.s_addr);
    std::uint32_t mask = prefix == 0 ? 0 : ~std::uint32_t{0} << (32 - prefix);
    a.s_addr = htonl(host & mask);
    ::inet_ntop(AF_INET, &a, buf, sizeof(buf));
    out = std::string(buf) + "/" + std::to_string(prefix);
  }
  return out;
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) {
    if (!out.empty()) out += ", ";
    out += item;
  }
  return out;
}

std::string build_script(const FirewallOptions& opts) {
  std::vector<std::string> blocked = {"169.254.0.0/16", "127.0.0.0/8"};
  if (!opts.allow_private) {
    for (const char* net : {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"}) {
      blocked.push_back(net);
    }
  }
  for (const auto& cidr : opts.extra_blocked)
    blocked.push_back(ipv4_element(cidr, "extra_blocked"));
  std::vector<std::string> dns;
  for (const auto& ns : opts.nameservers) {
    if (is_ipv6(ns)) continue;  // sandboxes have no IPv6
    dns.push_back(ipv4_element(ns, "nameserver"));
  }
  const std::string wv = std::string("\"") + kHostLinkPrefix + "*\"";
  const std::string dns_set = dns.empty() ? "" : "    elements = { " + join(dns) + " }\n";

  // "add" then "delete" makes the delete valid when the table does not exist yet; the
  // whole buffer is one transaction, so the old ruleset is replaced atomically.
  std::string s;
  s += "add table inet wrenn\n";
  s += "delete table inet wrenn\n";
  s += "table inet wrenn {\n";
  s += "  set blocked4 {\n    type ipv4_addr\n    flags interval\n    auto-merge\n";
  s += "    elements = { " + join(blocked) + " }\n  }\n";
  s += "  set dns4 {\n    type ipv4_addr\n" + dns_set + "  }\n";
  s += "  chain prerouting {\n    type filter hook prerouting priority raw; policy accept;\n";
  s += "    iifname " + wv + " meta nfproto ipv6 drop\n";
  s += "    iifname " + wv + " fib saddr . iif oif missing drop\n  }\n";
  s += "  chain input {\n    type filter hook input priority filter; policy accept;\n";
  s += "    iifname " + wv + " ct state established,related accept\n";
  s += "    iifname " + wv + " ip daddr @dns4 meta l4proto { tcp, udp } th dport 53 accept\n";
  s += "    iifname " + wv + " drop\n  }\n";
  s += "  chain forward {\n    type filter hook forward priority filter; policy accept;\n";
  s += "    iifname " + wv + " oifname " + wv + " drop\n";
  s += "    ct state established,related accept\n";
  s += "    oifname " + wv + " drop\n";
  s += "    iifname " + wv + " ip saddr != " + kSandboxSubnet + " drop\n";
  s += "    iifname " + wv + " ip daddr @dns4 meta l4proto { tcp, udp } th dport 53 accept\n";
  s += "    iifname " + wv + " ip daddr @blocked4 drop\n  }\n";
  s += "  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n";
  s += "    ip saddr " + std::string(kSandboxSubnet) + " oifname != " + wv + " masquerade\n  }\n";
  s += "}\n";
  return s;
}

}  // namespace

void install_firewall(const FirewallOptions& opts) {
  run_nft_or_throw(build_script(opts), "install nftables table inet wrenn");
  log::info("firewall installed", {{"table", "inet wrenn"}});
}

void remove_firewall() {
  run_nft_or_throw("add table inet wrenn\ndelete table inet wrenn\n",
                   "remove nftables table inet wrenn");
}

std::string firewall_ruleset() {
  NftResult r = run_nft("list table inet wrenn");
  if (r.ok) return r.output;
  if (r.error.find("No such file or directory") != std::string::npos) return "";
  throw Error(Code::kInternal, "list nftables table inet wrenn: " + r.error);
}

void enable_ip_forwarding() {
  constexpr const char* kPath = "/proc/sys/net/ipv4/ip_forward";
  {
    UniqueFd fd(::open(kPath, O_WRONLY | O_CLOEXEC));
    if (!fd) throw errno_error(errno, std::string("open ") + kPath);
    if (::write(fd.get(), "1\n", 2) != 2) throw errno_error(errno, std::string("write ") + kPath);
  }
  UniqueFd fd(::open(kPath, O_RDONLY | O_CLOEXEC));
  if (!fd) throw errno_error(errno, std::string("open ") + kPath);
  char c = 0;
  if (::read(fd.get(), &c, 1) != 1 || c != '1') {
    throw Error(Code::kInternal, std::string(kPath) + " is still not 1 after writing it");
  }
}

}  // namespace wrenn::agent
