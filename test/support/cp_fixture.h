// Test support for the control plane: a real `wrenn-cp` process on a throwaway PostgreSQL
// (pg_fixture.h), HTTP helpers for its API, teams/users/keys for scoping tests, and real
// wrenn-agents registered with it (agent_fixture.h: call enter_private_netns() first).
//
// Usage:
//   wrenn::test::CpProcess cp;                          // migrated DB, admin key ready
//   auto r = cp.get("/v1/hosts", cp.admin_api_key());   // r.status, r.json()
//   auto team = cp.create_team("acme");                 // {team_id, api_key}
//   enter_private_netns();                              // before any agent
//   auto agent = cp.start_agent(tmp.path() + "/agent"); // registers itself, heartbeats 1/s
//   agent.host_id ...                                   // online host, schedulable
// or, for a standalone AgentProcess started some other way:
//   auto host = cp.register_agent(agent_process);       // registered through the REST API,
//                                                       // restarted with TLS (same port)
//
// wrenn-cp runs with --listen 127.0.0.1:0, WRENN_DIR in a temporary directory, DATABASE_URL
// of the fixture's PostgreSQL (migrated in-process first unless CpOptions::migrate is
// false), a fixed JWT_SECRET (so tests can sign user tokens) and a long heartbeat timeout
// (hosts registered with register_agent() stay online without heartbeats).
#pragma once

#include <sys/types.h>

#include <boost/beast/http/verb.hpp>
#include <boost/json.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "agent_fixture.h"
#include "envd_fixture.h"
#include "pg/pool.h"
#include "pg_fixture.h"

namespace wrenn::test {

inline constexpr const char* kTestJwtSecret = "wrenn-test-jwt-secret-0123456789abcdefghij";

struct CpOptions {
  std::string jwt_secret = kTestJwtSecret;  // "" -> wrenn-cp generates one in the database
  std::string encryption_key;               // "" -> generated in the database
  std::chrono::seconds heartbeat_timeout{600};
  std::chrono::seconds reconcile_interval{3600};
  std::chrono::milliseconds monitor_interval{200};
  bool migrate = true;       // migrate the database before starting wrenn-cp
  bool embedded_pg = false;  // no PgServer: wrenn-cp runs its own PostgreSQL under dir()/pg
  bool wait_ready = true;    // wait for "wrenn-cp listening" (false: for start failures)
  std::vector<std::string> extra_args;
  std::vector<std::pair<std::string, std::string>> env;  // extra environment
};

struct HttpReply {
  unsigned status = 0;
  std::string body;
  std::map<std::string, std::string> headers;  // lowercase names
  // The body as JSON; throws when it is not.
  boost::json::value json() const;
  // error.code / error.message of an error envelope ("" when absent).
  std::string error_code() const;
  std::string error_message() const;
};

struct TeamCreds {
  std::string team_id;
  std::string api_key;
};

struct RegisteredHost {
  std::string host_id;
  std::string host_token;
  std::string refresh_token;
  std::string cert_pem;  // the agent's TLS certificate and the CA that issued it
  std::string ca_cert_pem;
};

struct CpAgent {
  std::unique_ptr<AgentProcess> agent;
  std::string host_id;
};

class CpProcess {
 public:
  explicit CpProcess(CpOptions options = {});
  ~CpProcess();  // stop()
  CpProcess(const CpProcess&) = delete;
  CpProcess& operator=(const CpProcess&) = delete;

  unsigned short port() const { return port_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  const std::string& admin_api_key() const { return admin_key_; }
  const std::string& dir() const { return dir_; }  // WRENN_DIR
  const std::string& conninfo() const { return conninfo_; }
  PgServer* pg() { return pg_.get(); }  // null with embedded_pg
  // A pool on the database (direct SQL in tests).
  std::unique_ptr<pg::Pool> pool() const;
  std::string log() const;  // wrenn-cp's stdout+stderr since the fixture began
  bool running() const;
  pid_t pid() const { return pid_; }
  const CpOptions& options() const { return options_; }

  // SIGTERM and wait (SIGKILL after 15 s); returns the exit status (as waitpid), -1 when
  // not running.
  int stop();
  // Starts wrenn-cp again on the same directory and database.
  void start();
  // Runs `wrenn-cp <args>` to completion with this fixture's environment; returns
  // {exit code, output}.
  std::pair<int, std::string> run_command(const std::vector<std::string>& args) const;

  // ---- HTTP ----
  HttpReply request(boost::beast::http::verb method, const std::string& target,
                    const std::string& body = "",
                    const std::map<std::string, std::string>& headers = {}) const;
  HttpReply get(const std::string& target, const std::string& api_key = {}) const;
  HttpReply post(const std::string& target, const std::string& body,
                 const std::string& api_key = {}) const;
  HttpReply del(const std::string& target, const std::string& api_key = {}) const;

  // ---- Tenancy ----
  // A new team (slug from the name plus a random suffix) with one API key.
  TeamCreds create_team(const std::string& name);
  // A user in the team (role owner/admin/member) and a JWT for it signed with the
  // fixture's secret. Returns {user_id, token}.
  std::pair<std::string, std::string> create_user(const std::string& team_id,
                                                  const std::string& role = "member",
                                                  bool is_admin = false);

  // ---- Hosts ----
  // Creates a host with the admin key and returns its registration token.
  std::pair<std::string, std::string> create_host();  // {host_id, token}
  // Registers an already running standalone agent through the REST API on its behalf
  // (address 127.0.0.1:<port>, its agent token, this machine's memory, and a generous 16
  // cores and 1000 GB of disk so that placement never limits a test), writes the issued
  // credentials (with its TLS certificate) into the agent's dir and restarts the agent with
  // --cp-url, so that it serves mutual TLS on the same port like a self-registered one.
  // It heartbeats every 5 s.
  RegisteredHost register_agent(AgentProcess& agent, const std::string& runtime = "ns");
  // Starts a wrenn-agent in dir that registers itself (--cp-url/--register/--address) and
  // heartbeats every heartbeat_interval; returns once the host is online and the agent has
  // saved its credentials.
  CpAgent start_agent(const std::string& dir, std::vector<std::string> extra_args = {},
                      unsigned heartbeat_interval_s = 1);
  // Same as start_agent, for a host created elsewhere (a declared fleet host): the agent
  // registers itself with this registration token.
  CpAgent start_agent_with_token(const std::string& dir, const std::string& host_id,
                                 const std::string& token, std::vector<std::string> extra_args = {},
                                 unsigned heartbeat_interval_s = 1);
  // The host's JSON (GET /v1/hosts/{id} with the admin key).
  boost::json::object host(const std::string& host_id) const;

 private:
  void spawn();
  std::vector<std::string> environment() const;

  CpOptions options_;
  TempDir tmp_;
  std::string dir_;
  std::unique_ptr<PgServer> pg_;
  std::string conninfo_;
  std::string log_path_;
  pid_t pid_ = -1;
  unsigned short port_ = 0;
  std::string admin_key_;
};

// Waits until pred() holds (polling every 20 ms); returns pred() at the deadline.
bool wait_until(const std::function<bool()>& pred,
                std::chrono::milliseconds budget = std::chrono::seconds(10));

}  // namespace wrenn::test
