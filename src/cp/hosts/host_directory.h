// The control plane's HostDirectory (server_context.h) on PostgreSQL, plus what goes with
// it: the agent-token sealing and the host address format.
//
// Clients are cached per host id. A cached client is reused while the host's row keeps
// the same address and sealed agent token; the row's status is re-read at most once a
// second (so a host the monitor marks unreachable stops being handed out within a second).
// A changed address or token replaces the client; evict() drops it (host deleted).
// Clients connect with options.transport: the server passes mutual TLS with its own client
// certificate (auth/host_ca.h), so registered agents are never reached over plain TCP.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "crypto/aead.h"
#include "pg/pool.h"
#include "server_context.h"
#include "store/hosts.h"

namespace wrenn::cp {

// "10.0.0.5:50051" or "[fd00::1]:50051" -> (IP, port); nullopt unless the host part is an
// IP literal and the port is 1..65535.
std::optional<std::pair<std::string, std::uint16_t>> parse_host_address(std::string_view address);

// The agent token sealed for storage (base64 of crypto::seal with the host id as associated
// data, so a sealed value cannot be moved to another host's row) and its inverse
// (Error(data_loss) when it does not open).
std::string seal_agent_token(const crypto::AeadKey& key, const std::string& host_id,
                             const std::string& token);
std::string open_agent_token(const crypto::AeadKey& key, const std::string& host_id,
                             const std::string& sealed);

class PgHostDirectory : public HostDirectory {
 public:
  PgHostDirectory(pg::Pool& db, crypto::AeadKey key, HostClientOptions options = {});

  // ApiError host_unavailable when the host is unknown, has no address or is not online.
  std::shared_ptr<HostClient> client(const std::string& host_id) override;
  void evict(const std::string& host_id) override;

  // A client for a row just read (monitor, reconcile, forced delete): no status check.
  std::shared_ptr<HostClient> client_for(const store::Host& host);
  std::size_t cached() const;

 private:
  struct Entry {
    std::string address;
    std::string sealed;
    std::string status;
    std::shared_ptr<HostClient> client;
    std::chrono::steady_clock::time_point checked;
  };
  std::shared_ptr<HostClient> make_client(const store::Host& host);

  pg::Pool& db_;
  crypto::AeadKey key_;
  HostClientOptions options_;
  mutable std::mutex mu_;
  std::map<std::string, Entry> entries_;
};

}  // namespace wrenn::cp
