// Commands and processes: POST …/exec (foreground and background), GET …/processes,
// DELETE …/processes/{selector}.
//
// Foreground exec differs from upstream on purpose (reference §15): envs and cwd are
// honoured, and timeout_sec (default 30) is the only limit — the host client hands it to
// envd, which kills the command when it passes; the call then fails with
// deadline_exceeded, which to_api_error() answers 504 with code agent_error (kAgentTimeout;
// upstream said 502 agent_error, and the SDK maps both to WrennAgentError).
#include <boost/json.hpp>

#include "api/api_error.h"
#include "api/capsule_json.h"
#include "api/capsule_routes.h"
#include "blocking.h"
#include "crypto/random.h"

namespace wrenn::cp {

namespace json = boost::json;
using namespace capsule_routes;

namespace {

ExecRequest to_exec_request(const ExecParams& p) {
  ExecRequest r;
  r.cmd = p.cmd;
  r.args = p.args;
  r.envs = p.envs;
  r.cwd = p.cwd;
  r.timeout = p.background ? std::chrono::milliseconds(kBackgroundStartTimeout)
                           : std::chrono::milliseconds(std::chrono::seconds(p.timeout_sec));
  return r;
}

json::object background_json(const std::string& id, const std::string& cmd, std::uint32_t pid,
                             const std::string& tag) {
  json::object o;
  o["sandbox_id"] = id;
  o["cmd"] = cmd;
  o["pid"] = pid;
  o["tag"] = tag;
  return o;
}

// Both kinds update last_active_at (in the lookup's own statement, before the command).
asio::awaitable<void> exec(ServerContext& ctx, RequestContext& rc) {
  auto load = load_running(ctx, rc, true);
  store::Capsule c = co_await std::move(load);
  auto body_task = rc.json_body();
  json::object body = co_await std::move(body_task);
  const ExecParams p = parse_exec_request(body);
  const ExecRequest req = to_exec_request(p);
  auto client = host_for(ctx, c);

  if (p.background) {
    const std::string tag = p.tag.empty() ? "proc-" + crypto::random_hex(4) : p.tag;
    auto task = run_blocking(ctx.workers, [&] {
      return agent_call([&] { return client->start_background(c.id, req, tag); });
    });
    std::uint32_t pid = co_await std::move(task);
    auto send = rc.send_json(bhttp::status::accepted, background_json(c.id, p.cmd, pid, tag));
    co_await std::move(send);
    co_return;
  }
  auto task = run_blocking(ctx.workers,
                           [&] { return agent_call([&] { return client->exec(c.id, req); }); });
  ExecResult r = co_await std::move(task);
  auto send = rc.send_json(bhttp::status::ok, exec_result_json(c.id, p.cmd, r));
  co_await std::move(send);
}

asio::awaitable<void> list_processes(ServerContext& ctx, RequestContext& rc) {
  auto load = load_running(ctx, rc, false);
  store::Capsule c = co_await std::move(load);
  auto client = host_for(ctx, c);
  auto task = run_blocking(ctx.workers, [&] {
    return agent_call([&] { return client->list_processes(c.id, kQuickTimeout); });
  });
  std::vector<ProcessInfo> list = co_await std::move(task);
  json::array a;
  for (const auto& p : list) a.push_back(process_json(p));
  json::object o;
  o["processes"] = std::move(a);
  auto send = rc.send_json(bhttp::status::ok, o);
  co_await std::move(send);
}

// Selector: all digits (fitting uint32) is a pid, anything else a tag; unknown -> 404.
// ?signal=SIGTERM sends SIGTERM, anything else SIGKILL (as upstream).
asio::awaitable<void> kill_process(ServerContext& ctx, RequestContext& rc) {
  auto load = load_running(ctx, rc, false);
  store::Capsule c = co_await std::move(load);
  const ProcessSelector sel = parse_process_selector(rc.param("selector"));
  if (const auto* tag = std::get_if<std::string>(&sel); tag && tag->empty())
    throw ApiError(ApiCode::kInvalidRequest, "process selector is required");
  const auto sig = rc.exchange().query("signal");
  const Signal signal = sig && *sig == "SIGTERM" ? Signal::kTerm : Signal::kKill;
  auto client = host_for(ctx, c);
  auto task = run_blocking(
      ctx.workers, [&] { agent_call([&] { client->kill(c.id, sel, signal, kQuickTimeout); }); });
  co_await std::move(task);
  auto send = rc.send_empty();
  co_await std::move(send);
}

}  // namespace

namespace capsule_routes {

void register_exec_routes(ServerContext& ctx) {
  Router& r = ctx.router;
  ServerContext* c = &ctx;
  r.add(bhttp::verb::post, "/v1/capsules/{id}/exec", Access::kTeam,
        [c](RequestContext& rc) { return exec(*c, rc); });
  r.add(bhttp::verb::get, "/v1/capsules/{id}/processes", Access::kTeam,
        [c](RequestContext& rc) { return list_processes(*c, rc); });
  r.add(bhttp::verb::delete_, "/v1/capsules/{id}/processes/{selector}", Access::kTeam,
        [c](RequestContext& rc) { return kill_process(*c, rc); });
}

}  // namespace capsule_routes
}  // namespace wrenn::cp
