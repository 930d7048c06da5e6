// The agent's calls to a sandbox's envd (readiness and /init), over a socket the caller
// opens inside the sandbox (connect_in_netns), with plain blocking HTTP/1.1.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <string>

namespace wrenn::agent {

// Returns a connected socket fd to envd, or throws wrenn::Error.
using EnvdConnector = std::function<int()>;

struct EnvdResponse {
  unsigned status = 0;
  std::string body;
};

// One request on a fresh connection; the socket gets send/receive timeouts of `timeout`.
EnvdResponse envd_request(const EnvdConnector& connect, const std::string& method,
                          const std::string& target, const std::string& body,
                          std::chrono::milliseconds timeout);

// Polls GET /health until envd answers 2xx. Throws Error(deadline_exceeded) naming the
// last failure once `budget` has passed, or as soon as `still_alive` returns false.
void wait_envd_ready(const EnvdConnector& connect, std::chrono::milliseconds budget,
                     const std::function<bool()>& still_alive);

struct EnvdDefaults {
  std::map<std::string, std::string> env;
  std::string user;
  std::string workdir;
};
// POST /init with the non-empty defaults (always sent: an empty body is fine). Throws
// Error carrying envd's own message when envd refuses them (an unknown user, say).
void envd_init(const EnvdConnector& connect, const EnvdDefaults& defaults,
               std::chrono::milliseconds timeout);

}  // namespace wrenn::agent
