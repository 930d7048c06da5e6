// What every envd RPC reads from its call: who the caller is and how often to send
// keepalives on long streams.
#pragma once

#include <chrono>

#include "connect/server.h"
#include "state.h"

namespace wrenn::envd {

// The user named by "Authorization: Basic base64(<user>:)", else the /init default user.
// Throws Error(unauthenticated) for a malformed header or an unknown user.
Identity caller(const State& state, const connect::CallContext& ctx);

// Keepalive interval of a stream from the Keepalive-Ping-Interval header (seconds,
// default 90 s, at least 1 s). Throws Error(invalid_argument) for a malformed value.
std::chrono::seconds keepalive_interval(const connect::CallContext& ctx);

}  // namespace wrenn::envd
