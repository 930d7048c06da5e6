// The agent's Connect service (wrenn.agent.v1.AgentService, src/proto/agent/agent.proto)
// on top of SandboxManager, plus the bearer-token check shared with the proxy.
//
// Manager calls block (clone, mounts, waiting for envd), so handlers run them on a thread
// pool and the HTTP io_context stays free for other requests and proxied streams.
#pragma once

#include <boost/asio/thread_pool.hpp>
#include <string>

#include "connect/server.h"
#include "sandbox/manager.h"

namespace wrenn::agent {

struct HostFacts {
  std::string agent_version;
  std::vector<std::string> runtimes;  // preferred first
  std::string state_dir;
};

// Registers every AgentService method on the router.
void register_agent_service(connect::Router& router, SandboxManager& manager, SlotPool& slots,
                            boost::asio::thread_pool& pool, HostFacts facts);

// Throws Error(unauthenticated) unless `authorization` is "Bearer <token>" (compared in
// constant time).
void check_bearer(std::string_view authorization, const std::string& token);
// The agent accepts its token either as "Authorization: Bearer <token>" or, so that
// Authorization can carry envd's own Basic user through the proxy, as
// "X-Wrenn-Agent-Token: <token>" (which wins when both are present).
void check_agent_token(std::string_view authorization, std::string_view x_agent_token,
                       const std::string& token);

// Reads the agent token from path, or creates it (32 random bytes, hex, mode 0600) when
// absent. A token file readable by group or others is refused.
std::string load_or_create_token(const std::string& path);

}  // namespace wrenn::agent
