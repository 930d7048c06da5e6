#include "process_service.h"

#include <signal.h>

#include <boost/asio/this_coro.hpp>
#include <cstdlib>

#include "paths.h"
#include "rpc_context.h"

namespace wrenn::envd {

using connect::CallContext;
using process::ProcessEvent;

namespace {



// Streams a subscriber's events to the client until the end event. When the client's
// deadline passes, the process is killed (it would otherwise run on unobserved) and the
// stream ends with deadline_exceeded after the end event.
template <class Resp>
asio::awaitable<void> pump(ProcessManager& pm, std::shared_ptr<Process> proc, std::shared_ptr<Subscriber> sub,
                           connect::ServerStream<Resp>& out, CallContext& ctx) {
  struct Detach {
    ProcessManager& pm;
    std::shared_ptr<Process> p;
    Subscriber* s;
    ~Detach() { pm.detach(p, s); }
  } guard{pm, proc, sub.get()};
  auto interval = keepalive_interval(ctx);
  bool deadline_hit = false;
  for (;;) {
    auto wait = std::chrono::steady_clock::duration(interval);
    if (ctx.deadline && !deadline_hit) {
      auto left = *ctx.deadline - std::chrono::steady_clock::now();
      if (left <= std::chrono::steady_clock::duration::zero()) {
        deadline_hit = true;
        pm.signal(proc, SIGKILL);
        continue;
      }
      wait = std::min(wait, left);
    }
    auto ev = co_await sub->next(wait);
    Resp resp;
    if (!ev) {
      if (ctx.deadline && std::chrono::steady_clock::now() >= *ctx.deadline) continue;
      resp.mutable_event()->mutable_keepalive();
      co_await out.send(resp);
      continue;
    }
    bool end = ev->has_end();
    *resp.mutable_event() = std::move(*ev);
    co_await out.send(resp);
    if (end) break;
  }
  if (deadline_hit)
    throw Error(Code::kDeadlineExceeded, "process " + std::to_string(proc->pid) +
                                             " was killed when the call's Connect-Timeout-Ms deadline passed");
}

}  // namespace

std::vector<std::pair<std::string, std::string>> process_environment(
    const User& user, const std::map<std::string, std::string>& defaults,
    const google::protobuf::Map<std::string, std::string>& request_envs, bool pty) {
  std::vector<std::pair<std::string, std::string>> env;
  auto set = [&env](const std::string& k, const std::string& v) {
    for (auto& e : env)
      if (e.first == k) {
        e.second = v;
        return;
      }
    env.emplace_back(k, v);
  };
  const char* path = std::getenv("PATH");
  set("PATH", path && *path ? path : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
  set("HOME", user.home);
  set("USER", user.name);
  set("LOGNAME", user.name);
  if (pty) set("TERM", "xterm-256color");
  for (auto& [k, v] : defaults) set(k, v);
  // Request envs in sorted order so the result does not depend on map iteration.
  std::map<std::string, std::string> req(request_envs.begin(), request_envs.end());
  for (auto& [k, v] : req) set(k, v);
  return env;
}

void register_process_service(connect::Router& router, State& state, ProcessManager& pm) {
  router.server_stream<process::StartRequest, process::StartResponse>(
      "/process.Process/Start",
      [&state, &pm](process::StartRequest req, connect::ServerStream<process::StartResponse>& out,
                    CallContext& ctx) -> asio::awaitable<void> {
        Identity id = caller(state, ctx);
        SpawnSpec spec;
        spec.cmd = req.process().cmd();
        spec.args.assign(req.process().args().begin(), req.process().args().end());
        spec.user = id.user;
        spec.cwd = resolve_path(req.process().has_cwd() ? req.process().cwd() : "", id.user, id.workdir);
        if (req.has_pty()) {
          if (!req.pty().has_size() || req.pty().size().cols() == 0 || req.pty().size().rows() == 0)
            throw Error(Code::kInvalidArgument, "pty.size needs cols and rows greater than 0");
          spec.pty = std::make_pair(req.pty().size().cols(), req.pty().size().rows());
        }
        spec.stdin_pipe = req.has_stdin() ? req.stdin() : true;
        if (req.has_tag()) spec.tag = req.tag();
        spec.env = process_environment(id.user, state.env(), req.process().envs(), spec.pty.has_value());
        spec.config = req.process();
        spec.config.set_cwd(spec.cwd);
        auto sub = std::make_shared<Subscriber>(co_await asio::this_coro::executor);
        auto proc = pm.start(spec, sub);
        co_await pump(pm, proc, sub, out, ctx);
      });

  router.server_stream<process::ConnectRequest, process::ConnectResponse>(
      "/process.Process/Connect",
      [&state, &pm](process::ConnectRequest req, connect::ServerStream<process::ConnectResponse>& out,
                    CallContext& ctx) -> asio::awaitable<void> {
        caller(state, ctx);
        auto proc = pm.find(req.process());
        auto sub = std::make_shared<Subscriber>(co_await asio::this_coro::executor);
        pm.attach(proc, sub);
        co_await pump(pm, proc, sub, out, ctx);
      });

  router.unary<process::ListRequest, process::ListResponse>(
      "/process.Process/List",
      [&state, &pm](process::ListRequest, CallContext& ctx) -> asio::awaitable<process::ListResponse> {
        caller(state, ctx);
        process::ListResponse resp;
        for (auto& p : pm.list()) {
          auto* info = resp.add_processes();
          *info->mutable_config() = p->config;
          info->set_pid(static_cast<std::uint32_t>(p->pid));
          if (p->tag) info->set_tag(*p->tag);
        }
        co_return resp;
      });

  router.unary<process::UpdateRequest, process::UpdateResponse>(
      "/process.Process/Update",
      [&state, &pm](process::UpdateRequest req, CallContext& ctx) -> asio::awaitable<process::UpdateResponse> {
        caller(state, ctx);
        auto proc = pm.find(req.process());
        if (req.has_pty()) pm.resize(proc, req.pty().size().cols(), req.pty().size().rows());
        co_return process::UpdateResponse{};
      });

  router.unary<process::SendInputRequest, process::SendInputResponse>(
      "/process.Process/SendInput",
      [&state, &pm](process::SendInputRequest req, CallContext& ctx) -> asio::awaitable<process::SendInputResponse> {
        caller(state, ctx);
        auto proc = pm.find(req.process());
        switch (req.input().input_case()) {
          case process::ProcessInput::kStdin: co_await pm.write_stdin(proc, req.input().stdin()); break;
          case process::ProcessInput::kPty: co_await pm.write_pty(proc, req.input().pty()); break;
          default: throw Error(Code::kInvalidArgument, "input needs stdin or pty bytes");
        }
        co_return process::SendInputResponse{};
      });

  router.client_stream<process::StreamInputRequest, process::StreamInputResponse>(
      "/process.Process/StreamInput",
      [&state, &pm](connect::ClientStream<process::StreamInputRequest>& in,
                    CallContext& ctx) -> asio::awaitable<process::StreamInputResponse> {
        caller(state, ctx);
        std::shared_ptr<Process> proc;
        while (auto msg = co_await in.next()) {
          switch (msg->event_case()) {
            case process::StreamInputRequest::kStart:
              proc = pm.find(msg->start().process());
              break;
            case process::StreamInputRequest::kData: {
              if (!proc)
                throw Error(Code::kFailedPrecondition, "StreamInput received data before a start message");
              const auto& input = msg->data().input();
              if (input.has_stdin())
                co_await pm.write_stdin(proc, input.stdin());
              else if (input.has_pty())
                co_await pm.write_pty(proc, input.pty());
              else
                throw Error(Code::kInvalidArgument, "StreamInput data needs stdin or pty bytes");
              break;
            }
            default: break;  // keepalive
          }
        }
        co_return process::StreamInputResponse{};
      });

  router.unary<process::SendSignalRequest, process::SendSignalResponse>(
      "/process.Process/SendSignal",
      [&state, &pm](process::SendSignalRequest req, CallContext& ctx) -> asio::awaitable<process::SendSignalResponse> {
        caller(state, ctx);
        int sig;
        switch (req.signal()) {
          case process::SIGNAL_SIGTERM: sig = SIGTERM; break;
          case process::SIGNAL_SIGKILL: sig = SIGKILL; break;
          default:
            throw Error(Code::kInvalidArgument, "signal " + std::to_string(static_cast<int>(req.signal())) +
                                                    " is not allowed; use SIGNAL_SIGTERM or SIGNAL_SIGKILL");
        }
        pm.signal(pm.find(req.process()), sig);
        co_return process::SendSignalResponse{};
      });

  router.unary<process::CloseStdinRequest, process::CloseStdinResponse>(
      "/process.Process/CloseStdin",
      [&state, &pm](process::CloseStdinRequest req, CallContext& ctx) -> asio::awaitable<process::CloseStdinResponse> {
        caller(state, ctx);
        pm.close_stdin(pm.find(req.process()));
        co_return process::CloseStdinResponse{};
      });
}

}  // namespace wrenn::envd
