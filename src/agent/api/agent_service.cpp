#include "api/agent_service.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cerrno>

#include "agent/agent.pb.h"
#include "error.h"
#include "private_file.h"

namespace wrenn::agent {

namespace asio = boost::asio;
namespace pb = wrenn::agent::v1;

namespace {

// Runs a blocking call on the pool; the awaiting coroutine resumes on its own executor.
// Not a coroutine itself, and callers keep the job and the awaitable in named locals: GCC 12
// destroys non-trivial temporaries of a co_await expression twice.
template <class F>
auto on_pool(asio::thread_pool& pool, F f) {
  using R = decltype(f());
  return asio::co_spawn(
      pool, [f = std::move(f)]() -> asio::awaitable<R> { co_return f(); }, asio::use_awaitable);
}

pb::SandboxState to_pb(SandboxState s) {
  switch (s) {
    case SandboxState::kStarting:
      return pb::SANDBOX_STATE_STARTING;
    case SandboxState::kRunning:
      return pb::SANDBOX_STATE_RUNNING;
    case SandboxState::kPaused:
      return pb::SANDBOX_STATE_PAUSED;
    case SandboxState::kStopping:
      return pb::SANDBOX_STATE_STOPPING;
  }
  return pb::SANDBOX_STATE_UNSPECIFIED;
}

void fill(pb::SandboxInfo& out, const SandboxView& v) {
  const SandboxRecord& r = v.record;
  out.set_sandbox_id(r.id);
  out.set_state(to_pb(r.state));
  out.set_template_(r.template_name);
  out.set_vcpus(r.vcpus);
  out.set_memory_mb(r.memory_mb);
  out.set_disk_mb(r.disk_mb);
  out.set_timeout_sec(r.timeout_sec);
  out.set_timeout_policy(r.destroy_on_timeout ? pb::TIMEOUT_POLICY_DESTROY
                                              : pb::TIMEOUT_POLICY_PAUSE);
  out.set_created_at_unix(r.created_at_unix);
  out.set_last_active_at_unix(v.last_active_unix);
  out.set_runtime(r.runtime);
  out.set_address(v.address);
  for (const auto& [k, val] : r.metadata) (*out.mutable_metadata())[k] = val;
  out.set_default_user(r.default_user);
  out.set_default_workdir(r.default_workdir);
  out.set_paused_reason(r.paused_reason);
}

std::map<std::string, std::string> to_map(
    const google::protobuf::Map<std::string, std::string>& m) {
  return {m.begin(), m.end()};
}

}  // namespace

void check_bearer(std::string_view authorization, const std::string& token) {
  constexpr std::string_view kPrefix = "Bearer ";
  if (authorization.size() <= kPrefix.size() || authorization.substr(0, kPrefix.size()) != kPrefix)
    throw Error(Code::kUnauthenticated, "missing \"Authorization: Bearer <agent token>\"");
  std::string_view given = authorization.substr(kPrefix.size());
  if (given.size() != token.size() || CRYPTO_memcmp(given.data(), token.data(), token.size()) != 0)
    throw Error(Code::kUnauthenticated, "the agent token is not valid");
}

void check_agent_token(std::string_view authorization, std::string_view x_agent_token,
                       const std::string& token) {
  if (x_agent_token.empty()) return check_bearer(authorization, token);
  if (x_agent_token.size() != token.size() ||
      CRYPTO_memcmp(x_agent_token.data(), token.data(), token.size()) != 0)
    throw Error(Code::kUnauthenticated, "the agent token is not valid");
}

std::string load_or_create_token(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0 && errno == ENOENT) {
    unsigned char raw[32];
    if (RAND_bytes(raw, sizeof raw) != 1)
      throw Error(Code::kInternal, "no randomness for the agent token");
    static const char* hex = "0123456789abcdef";
    std::string token;
    for (unsigned char c : raw) {
      token += hex[c >> 4];
      token += hex[c & 15];
    }
    // Another agent may create it meanwhile: then theirs is used.
    create_private_file(path, token + "\n", {.fsync = true, .owner = {}});
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  }
  if (fd < 0) throw errno_error(errno, "open " + path);
  struct stat st {};
  ::fstat(fd, &st);
  if (st.st_mode & 077) {
    ::close(fd);
    char mode[8];
    std::snprintf(mode, sizeof mode, "%03o", st.st_mode & 0777);
    throw Error(Code::kPermissionDenied,
                path + " is readable by group or others (mode " + mode + "); chmod 600 it");
  }
  char buf[256];
  ssize_t n = ::read(fd, buf, sizeof buf);
  ::close(fd);
  std::string token(buf, n > 0 ? static_cast<std::size_t>(n) : 0);
  while (!token.empty() && (token.back() == '\n' || token.back() == '\r' || token.back() == ' '))
    token.pop_back();
  if (token.size() < 16)
    throw Error(Code::kFailedPrecondition,
                path + " holds no usable token (at least 16 characters)");
  return token;
}

void register_agent_service(connect::Router& router, SandboxManager& m, SlotPool& slots,
                            asio::thread_pool& pool, HostFacts facts) {
  const std::string svc = "/wrenn.agent.v1.AgentService/";
  using connect::CallContext;

  router.unary<pb::CreateSandboxRequest, pb::CreateSandboxResponse>(
      svc + "CreateSandbox",
      [&m, &pool](pb::CreateSandboxRequest req,
                  CallContext&) -> asio::awaitable<pb::CreateSandboxResponse> {
        CreateParams p;
        p.id = req.sandbox_id();
        if (p.id.empty()) throw Error(Code::kInvalidArgument, "sandbox_id is required");
        p.template_name = req.template_();
        if (p.template_name.empty()) throw Error(Code::kInvalidArgument, "template is required");
        p.vcpus = req.vcpus();
        p.memory_mb = req.memory_mb();
        p.disk_mb = req.disk_mb();
        p.timeout_sec = req.timeout_sec();
        p.destroy_on_timeout = req.timeout_policy() == pb::TIMEOUT_POLICY_DESTROY;
        p.env = to_map(req.env());
        p.default_user = req.default_user();
        p.default_workdir = req.default_workdir();
        p.metadata = to_map(req.metadata());
        auto task = on_pool(pool, [&m, p] { return m.create(p); });
        SandboxView v = co_await std::move(task);
        pb::CreateSandboxResponse resp;
        fill(*resp.mutable_sandbox(), v);
        co_return resp;
      });

  router.unary<pb::DestroySandboxRequest, pb::DestroySandboxResponse>(
      svc + "DestroySandbox",
      [&m, &pool](pb::DestroySandboxRequest req,
                  CallContext&) -> asio::awaitable<pb::DestroySandboxResponse> {
        std::string id = req.sandbox_id();
        auto task = on_pool(pool, [&m, id] {
          m.destroy(id);
          return 0;
        });
        co_await std::move(task);
        co_return pb::DestroySandboxResponse{};
      });

  router.unary<pb::GetSandboxRequest, pb::GetSandboxResponse>(
      svc + "GetSandbox",
      [&m](pb::GetSandboxRequest req, CallContext&) -> asio::awaitable<pb::GetSandboxResponse> {
        pb::GetSandboxResponse resp;
        fill(*resp.mutable_sandbox(), m.get(req.sandbox_id()));
        co_return resp;
      });

  router.unary<pb::ListSandboxesRequest, pb::ListSandboxesResponse>(
      svc + "ListSandboxes",
      [&m](pb::ListSandboxesRequest, CallContext&) -> asio::awaitable<pb::ListSandboxesResponse> {
        pb::ListSandboxesResponse resp;
        for (const auto& v : m.list()) fill(*resp.add_sandboxes(), v);
        co_return resp;
      });

  router.unary<pb::PauseSandboxRequest, pb::PauseSandboxResponse>(
      svc + "PauseSandbox",
      [&m, &pool](pb::PauseSandboxRequest req,
                  CallContext&) -> asio::awaitable<pb::PauseSandboxResponse> {
        std::string id = req.sandbox_id();
        auto task = on_pool(pool, [&m, id] { return m.pause(id); });
        SandboxView v = co_await std::move(task);
        pb::PauseSandboxResponse resp;
        fill(*resp.mutable_sandbox(), v);
        co_return resp;
      });

  router.unary<pb::ResumeSandboxRequest, pb::ResumeSandboxResponse>(
      svc + "ResumeSandbox",
      [&m, &pool](pb::ResumeSandboxRequest req,
                  CallContext&) -> asio::awaitable<pb::ResumeSandboxResponse> {
        std::string id = req.sandbox_id();
        std::uint32_t t = req.timeout_sec();
        auto task = on_pool(pool, [&m, id, t] { return m.resume(id, t); });
        SandboxView v = co_await std::move(task);
        pb::ResumeSandboxResponse resp;
        fill(*resp.mutable_sandbox(), v);
        co_return resp;
      });

  router.unary<pb::PingSandboxRequest, pb::PingSandboxResponse>(
      svc + "PingSandbox",
      [&m](pb::PingSandboxRequest req, CallContext&) -> asio::awaitable<pb::PingSandboxResponse> {
        validate_sandbox_id(req.sandbox_id());
        m.touch(req.sandbox_id());
        co_return pb::PingSandboxResponse{};
      });

  router.unary<pb::GetSandboxMetricsRequest, pb::GetSandboxMetricsResponse>(
      svc + "GetSandboxMetrics",
      [&m](pb::GetSandboxMetricsRequest req,
           CallContext&) -> asio::awaitable<pb::GetSandboxMetricsResponse> {
        pb::GetSandboxMetricsResponse resp;
        for (const auto& s : m.metrics(req.sandbox_id(), req.range())) {
          auto* p = resp.add_points();
          p->set_timestamp_unix_ms(s.timestamp_ms);
          p->set_cpu_pct(s.cpu_pct);
          p->set_memory_bytes(s.memory_bytes);
          p->set_disk_bytes(s.disk_bytes);
        }
        co_return resp;
      });

  router.unary<pb::HostInfoRequest, pb::HostInfoResponse>(
      svc + "HostInfo",
      [&m, &slots, facts](pb::HostInfoRequest,
                          CallContext&) -> asio::awaitable<pb::HostInfoResponse> {
        pb::HostInfoResponse resp;
        struct utsname u {};
        ::uname(&u);
        resp.set_arch(u.machine);
        resp.set_kernel(std::string(u.sysname) + " " + u.release);
        resp.set_cpus(static_cast<std::uint32_t>(::sysconf(_SC_NPROCESSORS_ONLN)));
        resp.set_memory_bytes(static_cast<std::uint64_t>(::sysconf(_SC_PHYS_PAGES)) *
                              static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE)));
        struct statvfs sv {};
        if (::statvfs(facts.state_dir.c_str(), &sv) == 0) {
          resp.set_disk_bytes(static_cast<std::uint64_t>(sv.f_blocks) * sv.f_frsize);
          resp.set_disk_free_bytes(static_cast<std::uint64_t>(sv.f_bavail) * sv.f_frsize);
        }
        for (const auto& r : facts.runtimes) resp.add_runtimes(r);
        resp.set_slots_in_use(static_cast<std::uint32_t>(slots.in_use()));
        resp.set_sandboxes(static_cast<std::uint32_t>(m.size()));
        resp.set_agent_version(facts.agent_version);
        for (const auto& t : m.templates()) resp.add_templates(t);
        co_return resp;
      });

  router.unary<pb::CreateSnapshotRequest, pb::CreateSnapshotResponse>(
      svc + "CreateSnapshot",
      [&m, &pool](pb::CreateSnapshotRequest req,
                  CallContext&) -> asio::awaitable<pb::CreateSnapshotResponse> {
        std::string id = req.sandbox_id(), tmpl = req.template_id();
        auto task = on_pool(pool, [&m, id, tmpl] { return m.create_snapshot(id, tmpl); });
        std::uint64_t size = co_await std::move(task);
        pb::CreateSnapshotResponse resp;
        resp.set_size_bytes(size);
        co_return resp;
      });

  router.unary<pb::DeleteSnapshotRequest, pb::DeleteSnapshotResponse>(
      svc + "DeleteSnapshot",
      [&m, &pool](pb::DeleteSnapshotRequest req,
                  CallContext&) -> asio::awaitable<pb::DeleteSnapshotResponse> {
        std::string tmpl = req.template_id();
        auto task = on_pool(pool, [&m, tmpl] {
          m.delete_snapshot(tmpl);
          return true;
        });
        co_await std::move(task);
        co_return pb::DeleteSnapshotResponse{};
      });
}

}  // namespace wrenn::agent
