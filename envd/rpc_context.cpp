#include "rpc_context.h"

#include <algorithm>

#include "error.h"

namespace wrenn::envd {

Identity caller(const State& state, const connect::CallContext& ctx) {
  return state.identity(State::basic_auth_user(ctx.header("authorization")));
}

std::chrono::seconds keepalive_interval(const connect::CallContext& ctx) {
  auto v = ctx.header("keepalive-ping-interval");
  if (v.empty()) return std::chrono::seconds(90);
  long n = 0;
  for (char c : v) {
    if (c < '0' || c > '9' || n > 86400)
      throw Error(Code::kInvalidArgument,
                  "Keepalive-Ping-Interval must be a number of seconds, got \"" + std::string(v) + "\"");
    n = n * 10 + (c - '0');
  }
  return std::chrono::seconds(std::max(1L, n));
}

}  // namespace wrenn::envd
