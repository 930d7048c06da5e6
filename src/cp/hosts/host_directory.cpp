#include "hosts/host_directory.h"

#include <boost/asio/ip/address.hpp>

#include "api/api_error.h"
#include "crypto/encoding.h"
#include "error.h"

namespace wrenn::cp {

namespace {
constexpr auto kStatusTtl = std::chrono::seconds(1);
}

std::optional<std::pair<std::string, std::uint16_t>> parse_host_address(std::string_view address) {
  auto colon = address.rfind(':');
  if (colon == std::string_view::npos || colon + 1 >= address.size()) return std::nullopt;
  std::string_view host = address.substr(0, colon);
  std::string_view port = address.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
    if (host.find(':') == std::string_view::npos) return std::nullopt;
  } else if (host.find(':') != std::string_view::npos) {
    return std::nullopt;  // IPv6 literals need brackets
  }
  if (port.empty() || port.size() > 5) return std::nullopt;
  unsigned p = 0;
  for (char c : port) {
    if (c < '0' || c > '9') return std::nullopt;
    p = p * 10 + static_cast<unsigned>(c - '0');
  }
  if (p == 0 || p > 65535) return std::nullopt;
  boost::system::error_code ec;
  auto ip = boost::asio::ip::make_address(std::string(host), ec);
  if (ec || ip.is_unspecified() || ip.is_multicast()) return std::nullopt;
  return std::make_pair(ip.to_string(), static_cast<std::uint16_t>(p));
}

std::string seal_agent_token(const crypto::AeadKey& key, const std::string& host_id,
                             const std::string& token) {
  return crypto::base64_encode(crypto::seal(key, token, host_id));
}

std::string open_agent_token(const crypto::AeadKey& key, const std::string& host_id,
                             const std::string& sealed) {
  std::string raw;
  try {
    raw = crypto::base64_decode(sealed);
  } catch (const Error&) {
    throw Error(Code::kDataLoss, "the stored agent token of " + host_id + " is corrupt");
  }
  return crypto::open(key, raw, host_id);
}

PgHostDirectory::PgHostDirectory(pg::Pool& db, crypto::AeadKey key, HostClientOptions options)
    : db_(db), key_(key), options_(std::move(options)) {}

std::shared_ptr<HostClient> PgHostDirectory::make_client(const store::Host& h) {
  auto addr = parse_host_address(h.address);
  if (!addr || h.agent_token_sealed.empty())
    throw ApiError(ApiCode::kHostUnavailable, "host " + h.id + " has no usable address");
  HostEndpoint ep;
  ep.host = addr->first;
  ep.port = addr->second;
  ep.agent_token = open_agent_token(key_, h.id, h.agent_token_sealed);
  return std::make_shared<HostClient>(std::move(ep), options_);
}

std::shared_ptr<HostClient> PgHostDirectory::client_for(const store::Host& h) {
  std::lock_guard lock(mu_);
  auto it = entries_.find(h.id);
  if (it != entries_.end() && it->second.address == h.address &&
      it->second.sealed == h.agent_token_sealed) {
    it->second.status = h.status;
    it->second.checked = std::chrono::steady_clock::now();
    return it->second.client;
  }
  Entry e;
  e.address = h.address;
  e.sealed = h.agent_token_sealed;
  e.status = h.status;
  e.client = make_client(h);
  e.checked = std::chrono::steady_clock::now();
  auto client = e.client;
  entries_[h.id] = std::move(e);
  return client;
}

std::shared_ptr<HostClient> PgHostDirectory::client(const std::string& host_id) {
  {
    std::lock_guard lock(mu_);
    auto it = entries_.find(host_id);
    if (it != entries_.end() &&
        std::chrono::steady_clock::now() - it->second.checked < kStatusTtl) {
      if (it->second.status != "online")
        throw ApiError(ApiCode::kHostUnavailable, "host " + host_id + " is " + it->second.status);
      return it->second.client;
    }
  }
  std::optional<store::Host> host;
  {
    auto lease = db_.acquire();
    host = store::get_host(*lease, host_id);
  }
  if (!host) {
    evict(host_id);
    throw ApiError(ApiCode::kHostUnavailable, "host " + host_id + " does not exist");
  }
  auto client = client_for(*host);
  if (host->status != "online")
    throw ApiError(ApiCode::kHostUnavailable, "host " + host_id + " is " + host->status);
  return client;
}

void PgHostDirectory::evict(const std::string& host_id) {
  std::lock_guard lock(mu_);
  entries_.erase(host_id);
}

std::size_t PgHostDirectory::cached() const {
  std::lock_guard lock(mu_);
  return entries_.size();
}

}  // namespace wrenn::cp
