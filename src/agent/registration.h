// The agent's side of the control plane's host API (reference §3.10): registration with a
// one-time token, heartbeats, and host-token refresh.
//
// Contract:
//  - Credentials live in $WRENN_DIR/host-credentials.json (mode 0600, written atomically):
//    {"host_id","jwt","refresh_token","cp_url","cert_pem","key_pem","ca_cert_pem"}; the
//    last three are the agent's mutual-TLS identity issued by the control plane's CA.
//    When the file exists the agent is registered and any --register token is ignored;
//    when it is missing and a token is given, the agent registers (POST
//    /v1/hosts/register with its specs, address and agent token) and saves the answer. A restarted
//    agent needs no token.
//  - Everything runs on one background thread: registration (retried with backoff while
//    the control plane is unreachable; a refusal, 4xx, is logged and ends the thread),
//    then a heartbeat at once and every heartbeat_interval. A 401/403 heartbeat refreshes
//    the host token with the refresh token (rotated) and retries; a refused refresh ends
//    heartbeating. A 404 heartbeat means the control plane deleted the host: that is
//    logged, the credentials file is removed (a new --register is needed) and heartbeating
//    ends. Network failures are logged and retried at the next interval. Credentials loaded
//    without a certificate (registered before mutual TLS) are refreshed at once to get one.
//    on_credentials is called (on that thread) with every set of credentials that carries
//    a certificate: after registration and after each refresh (a reissued certificate).
//  - Tokens never appear in logs.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace wrenn::agent {

struct HostCredentials;

struct RegistrationOptions {
  std::string cp_url;       // http://host[:port][/prefix] of the control plane
  std::string token;        // one-time registration token ("" when registered already)
  std::string address;      // ip:port the control plane reaches this agent at
  std::string state_dir;    // $WRENN_DIR
  std::string agent_token;  // $WRENN_DIR/agent-token: how the control plane authenticates
  std::vector<std::string> runtimes;
  std::chrono::milliseconds heartbeat_interval = std::chrono::seconds(30);
  std::chrono::milliseconds request_timeout = std::chrono::seconds(5);
  std::function<void(const HostCredentials&)> on_credentials;
};

struct HostCredentials {
  std::string host_id;
  std::string host_token;  // "jwt" in the file
  std::string refresh_token;
  std::string cp_url;
  // The agent's TLS server identity ("" when the control plane sent none).
  std::string cert_pem;
  std::string key_pem;
  std::string ca_cert_pem;
  bool has_certificate() const {
    return !cert_pem.empty() && !key_pem.empty() && !ca_cert_pem.empty();
  }
};

// nullopt when the file does not exist; Error(invalid_argument) when it is unreadable JSON
// or readable by group/others.
std::optional<HostCredentials> load_credentials(const std::string& path);
void save_credentials(const std::string& path, const HostCredentials& c);

struct MachineSpecs {
  std::string arch;  // uname -m
  std::int64_t cpu_cores = 0;
  std::int64_t memory_mb = 0;
  std::int64_t disk_gb = 0;  // the filesystem holding state_dir
};
MachineSpecs collect_specs(const std::string& state_dir);

// "10.0.0.5" + 50051 -> "10.0.0.5:50051"; an address that has a port is kept as it is.
std::string address_with_port(const std::string& address, std::uint16_t port);

class CpRegistration {
 public:
  explicit CpRegistration(RegistrationOptions options);
  ~CpRegistration();  // stop()
  CpRegistration(const CpRegistration&) = delete;
  CpRegistration& operator=(const CpRegistration&) = delete;

  // Starts the background thread. Error(invalid_argument) for an unusable cp_url, or
  // failed_precondition when there are neither credentials nor a token.
  void start();
  void stop();
  // "" until registered.
  std::string host_id() const;
  std::uint64_t heartbeats_sent() const { return heartbeats_; }

 private:
  void run();
  // POST /v1/hosts/auth/refresh; false (logged) when refused.
  bool refresh(std::optional<HostCredentials>& creds);
  void adopt(const HostCredentials& creds);  // save, publish, notify
  bool wait(std::chrono::milliseconds d);    // false when stopping

  RegistrationOptions options_;
  std::string credentials_path_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::optional<HostCredentials> creds_;
  std::atomic<std::uint64_t> heartbeats_{0};
  std::thread thread_;
};

}  // namespace wrenn::agent
