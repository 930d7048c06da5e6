#include "events/targets.h"

#include <array>
#include <boost/asio/io_context.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/url_view.hpp>
#include <cctype>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "api/api_error.h"

namespace wrenn::cp::events {

namespace {

namespace ip = boost::asio::ip;

constexpr const char* kAllowHint = " (set WRENN_ALLOW_PRIVATE_TARGETS=1 to allow private targets)";

[[noreturn]] void invalid(std::string message) {
  throw ApiError(ApiCode::kInvalidRequest, std::move(message));
}

// scheme://authority of a URL that may not parse, without user:password, path or query
// (chat webhook URLs carry tokens in their path), for error messages.
std::string redacted(const std::string& url) {
  auto sep = url.find("://");
  if (sep == std::string::npos) return "(not an absolute URL)";
  auto end = url.find_first_of("/?#", sep + 3);
  std::string authority = url.substr(sep + 3, end == std::string::npos ? end : end - sep - 3);
  if (auto at = authority.rfind('@'); at != std::string::npos) authority.erase(0, at + 1);
  std::string out = url.substr(0, sep) + "://" + authority;
  if (out.size() > 200) out.resize(200);
  return out;
}

bool in_v4(const ip::address_v4& a, std::uint32_t net, int bits) {
  std::uint32_t mask = bits == 0 ? 0 : ~std::uint32_t{0} << (32 - bits);
  return (a.to_uint() & mask) == (net & mask);
}

constexpr std::uint32_t v4(unsigned a, unsigned b, unsigned c, unsigned d) {
  return (a << 24) | (b << 16) | (c << 8) | d;
}

// Why an IPv4 address is refused without allow_private; nullopt for a public address.
std::optional<std::string> v4_class(const ip::address_v4& a) {
  if (in_v4(a, v4(169, 254, 169, 254), 32)) return "the cloud metadata address";
  if (in_v4(a, v4(0, 0, 0, 0), 8)) return "an unspecified address";
  if (in_v4(a, v4(127, 0, 0, 0), 8)) return "a loopback address";
  if (in_v4(a, v4(169, 254, 0, 0), 16)) return "a link-local address";
  if (in_v4(a, v4(10, 0, 0, 0), 8) || in_v4(a, v4(172, 16, 0, 0), 12) ||
      in_v4(a, v4(192, 168, 0, 0), 16))
    return "a private address";
  if (in_v4(a, v4(100, 64, 0, 0), 10)) return "a carrier-grade NAT address";
  if (in_v4(a, v4(224, 0, 0, 0), 4)) return "a multicast address";
  if (in_v4(a, v4(240, 0, 0, 0), 4)) return "a reserved address";
  return std::nullopt;
}

std::optional<std::string> v6_class(const ip::address_v6& a) {
  auto b = a.to_bytes();
  // AWS's IPv6 instance metadata endpoint fd00:ec2::254.
  if (a == ip::make_address_v6("fd00:ec2::254")) return "the cloud metadata address";
  bool first96_zero = true;
  for (int i = 0; i < 12; ++i) first96_zero = first96_zero && b[i] == 0;
  if (a.is_unspecified()) return "an unspecified address";
  if (a.is_loopback()) return "a loopback address";
  // IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d) and NAT64 (64:ff9b::a.b.c.d)
  // forms reach the embedded IPv4 address: judge that one.
  static constexpr std::array<unsigned char, 12> kNat64 = {0, 0x64, 0xff, 0x9b, 0, 0,
                                                           0, 0,    0,    0,    0, 0};
  if (a.is_v4_mapped() || first96_zero || std::equal(kNat64.begin(), kNat64.end(), b.begin())) {
    ip::address_v4::bytes_type v4b{b[12], b[13], b[14], b[15]};
    return v4_class(ip::address_v4(v4b));
  }
  if ((b[0] & 0xfe) == 0xfc) return "a private address";                     // fc00::/7
  if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) return "a link-local address";  // fe80::/10
  if (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0) return "a private address";     // fec0::/10
  if (b[0] == 0xff) return "a multicast address";                            // ff00::/8
  return std::nullopt;
}

std::optional<std::string> classify(const ip::address& a) {
  return a.is_v4() ? v4_class(a.to_v4()) : v6_class(a.to_v6());
}

bool is_metadata(const std::string& why) {
  return why == "the cloud metadata address";
}

// The refusal message for `a`, or nullopt when policy allows it.
std::optional<std::string> refusal(const ip::address& a, const TargetPolicy& policy,
                                   const std::string& label) {
  auto why = classify(a);
  if (!why) return std::nullopt;
  if (is_metadata(*why))
    return "channel target " + label + " is refused: " + a.to_string() + " is " + *why;
  if (policy.allow_private) return std::nullopt;
  return "channel target " + label + " is refused: " + a.to_string() + " is " + *why + kAllowHint;
}

std::vector<ip::tcp::endpoint> resolve(const std::string& host, const std::string& port,
                                       const TargetPolicy& policy, const std::string& label,
                                       std::chrono::milliseconds timeout) {
  // getaddrinfo cannot be cancelled: it runs on its own thread, which the caller stops
  // waiting for at the deadline (the thread ends when the system resolver gives up).
  struct State {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    boost::system::error_code ec;
    std::vector<ip::tcp::endpoint> endpoints;
  };
  auto st = std::make_shared<State>();
  boost::system::error_code literal_ec;
  auto literal = ip::make_address(host, literal_ec);
  if (!literal_ec) {
    // An IP literal: no resolver needed.
    unsigned long p = std::stoul(port);
    st->endpoints.emplace_back(literal, static_cast<unsigned short>(p));
    st->done = true;
  } else {
    std::thread([st, host, port] {
      boost::asio::io_context ioc;
      ip::tcp::resolver resolver(ioc);
      boost::system::error_code ec;
      auto results = resolver.resolve(host, port, ec);
      std::lock_guard lk(st->mu);
      st->ec = ec;
      if (!ec)
        for (const auto& r : results) st->endpoints.push_back(r.endpoint());
      st->done = true;
      st->cv.notify_all();
    }).detach();
  }
  std::unique_lock lk(st->mu);
  if (!st->cv.wait_for(lk, timeout, [&] { return st->done; }))
    invalid("channel target " + label + " is refused: resolving " + host + " timed out");
  if (st->ec)
    invalid("channel target " + label + " is refused: " + host + " does not resolve (" +
            st->ec.message() + ")");
  if (st->endpoints.empty())
    invalid("channel target " + label + " is refused: " + host + " has no address");
  for (const auto& ep : st->endpoints)
    if (auto msg = refusal(ep.address(), policy, label)) invalid(*msg);
  return st->endpoints;
}

}  // namespace

ParsedUrl parse_url(const std::string& url) {
  auto parsed = boost::urls::parse_uri(url);
  if (!parsed)
    invalid("channel target " + redacted(url) + " is not a valid URL (" + parsed.error().message() +
            ")");
  const auto& u = *parsed;
  ParsedUrl out;
  auto scheme = u.scheme_id();
  if (scheme == boost::urls::scheme::https)
    out.tls = true;
  else if (scheme != boost::urls::scheme::http)
    invalid("channel target " + redacted(url) + " is not an http or https URL");
  if (u.has_userinfo())
    invalid("channel target " + redacted(url) + " must not carry user:password");
  switch (u.host_type()) {
    case boost::urls::host_type::ipv4:
      out.host = u.host_ipv4_address().to_string();
      break;
    case boost::urls::host_type::ipv6:
      out.host = u.host_ipv6_address().to_string();
      break;
    case boost::urls::host_type::name: {
      out.host = u.host_name();
      for (auto& c : out.host) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (!out.host.empty() && out.host.back() == '.') out.host.pop_back();
      break;
    }
    default:
      break;
  }
  if (out.host.empty()) invalid("channel target " + redacted(url) + " has no host");
  for (unsigned char c : out.host)
    if (c <= 0x20 || c >= 0x7f || c == '%' || c == '/' || c == '@')
      invalid("channel target " + redacted(url) + " has an invalid host name");
  bool explicit_port = u.has_port() && !u.port().empty();
  if (explicit_port) {
    std::string p = u.port();
    if (p.size() > 5 || u.port_number() == 0 || std::stoul(p) > 65535)
      invalid("channel target " + redacted(url) + " has an invalid port");
    out.port = std::to_string(u.port_number());
  } else {
    out.port = out.tls ? "443" : "80";
  }
  auto et = u.encoded_target();
  std::string target(et.data(), et.size());
  if (target.empty() || target.front() != '/') target.insert(0, "/");
  out.target = target;
  std::string host_text =
      u.host_type() == boost::urls::host_type::ipv6 ? "[" + out.host + "]" : out.host;
  out.origin = std::string(out.tls ? "https" : "http") + "://" + host_text;
  if (explicit_port) out.origin += ":" + out.port;
  return out;
}

ParsedUrl check_url(const std::string& url, const TargetPolicy& policy) {
  ParsedUrl p = parse_url(url);
  resolve_checked(p, policy);
  return p;
}

bool is_refused(const boost::asio::ip::address& a, const TargetPolicy& policy) {
  return refusal(a, policy, "").has_value();
}

std::vector<boost::asio::ip::tcp::endpoint> resolve_checked(const std::string& host,
                                                            const std::string& port,
                                                            const TargetPolicy& policy) {
  return resolve(host, port, policy, host + ":" + port, std::chrono::seconds(30));
}

std::vector<boost::asio::ip::tcp::endpoint> resolve_checked(const ParsedUrl& url,
                                                            const TargetPolicy& policy,
                                                            std::chrono::milliseconds timeout) {
  return resolve(url.host, url.port, policy, url.origin, timeout);
}

}  // namespace wrenn::cp::events
