// Network-namespace helpers.
#pragma once

#include <cstdint>
#include <string>

namespace wrenn::agent {

// Opens a TCP socket inside the network namespace bound at netns_path and connects it to
// 127.0.0.1:port there (falling back to fallback_ip:port when given and loopback refuses).
// The socket lives in that namespace from then on, so the agent reaches loopback-only
// listeners of a sandbox without any forwarder. Returns a connected, blocking fd (the
// caller owns it). Throws Error(unavailable) naming the port when nothing listens.
int connect_in_netns(const std::string& netns_path, std::uint16_t port,
                     const std::string& fallback_ip = "");

}  // namespace wrenn::agent
