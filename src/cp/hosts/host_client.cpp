#include "hosts/host_client.h"

#include <algorithm>
#include <random>

#include "connect/codec.h"
#include "connect/envelope.h"
#include "envd/filesystem.pb.h"
#include "envd/process.pb.h"
#include "error.h"
#include "hosts/http_exchange.h"

namespace wrenn::cp {

namespace bhttp = boost::beast::http;
namespace pb = wrenn::agent::v1;
using Headers = std::vector<std::pair<std::string, std::string>>;

namespace {

const std::string kAgentService = "/wrenn.agent.v1.AgentService/";
constexpr std::uint16_t kEnvdPort = 49983;
// Largest unary response accepted (a ListDir of a big tree, say).
constexpr std::size_t kMaxUnaryResponse = 64 * 1024 * 1024;
// Largest single message on a process stream (envd sends output in pieces of 32 KiB).
constexpr std::size_t kMaxStreamMessage = 16 * 1024 * 1024;
// exec: envd kills the command when its Connect-Timeout-Ms passes and says so; this much
// later the client stops waiting for that answer and kills the process itself.
constexpr auto kExecGrace = std::chrono::seconds(2);
// Bound of the best-effort SIGKILL after a failed exec.
constexpr auto kKillBudget = std::chrono::seconds(2);

bool valid_id(std::string_view id) {
  if (id.empty() || id.size() > 63) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
  });
}

void check_id(const std::string& id) {
  if (!valid_id(id))
    throw Error(Code::kInvalidArgument,
                "invalid sandbox id \"" + id.substr(0, 80) + "\" (want [a-z0-9-]{1,63})");
}

void check_path(const std::string& path) {
  if (path.empty()) throw Error(Code::kInvalidArgument, "path is empty");
}

void check_timeout(std::chrono::milliseconds t) {
  if (t.count() <= 0) throw Error(Code::kInvalidArgument, "timeout must be positive");
}

std::string base64(std::string_view in) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (std::size_t i = 0; i < in.size(); i += 3) {
    unsigned v = static_cast<unsigned char>(in[i]) << 16;
    if (i + 1 < in.size()) v |= static_cast<unsigned char>(in[i + 1]) << 8;
    if (i + 2 < in.size()) v |= static_cast<unsigned char>(in[i + 2]);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += i + 1 < in.size() ? kAlphabet[(v >> 6) & 63] : '=';
    out += i + 2 < in.size() ? kAlphabet[v & 63] : '=';
  }
  return out;
}

// Percent-encodes a query value (unreserved characters and '/' stay as they are).
std::string query_escape(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '.' || c == '_' || c == '~' || c == '/') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

std::string random_boundary() {
  thread_local std::mt19937_64 rng(std::random_device{}());
  char buf[48];
  std::snprintf(buf, sizeof buf, "wrenn-%016llx%016llx", static_cast<unsigned long long>(rng()),
                static_cast<unsigned long long>(rng()));
  return buf;
}

void check_deadline(Deadline deadline) {
  if (Clock::now() >= deadline)
    throw Error(Code::kDeadlineExceeded, "the call's deadline passed before it started");
}

FileType file_type(filesystem::FileType t) {
  switch (t) {
    case filesystem::FILE_TYPE_FILE:
      return FileType::kFile;
    case filesystem::FILE_TYPE_DIRECTORY:
      return FileType::kDirectory;
    case filesystem::FILE_TYPE_SYMLINK:
      return FileType::kSymlink;
    default:
      return FileType::kUnknown;
  }
}

FileEntry file_entry(const filesystem::EntryInfo& e) {
  FileEntry f;
  f.name = e.name();
  f.path = e.path();
  f.type = file_type(e.type());
  f.size = e.size();
  f.mode = e.mode();
  f.permissions = e.permissions();
  f.owner = e.owner();
  f.group = e.group();
  f.modified_at = e.modified_time().seconds();
  if (e.has_symlink_target()) f.symlink_target = e.symlink_target();
  return f;
}

process::ProcessSelector selector_of(const ProcessSelector& s) {
  process::ProcessSelector out;
  if (const auto* pid = std::get_if<std::uint32_t>(&s)) {
    out.set_pid(*pid);
  } else {
    const auto& tag = std::get<std::string>(s);
    if (tag.empty()) throw Error(Code::kInvalidArgument, "process tag is empty");
    out.set_tag(tag);
  }
  return out;
}

process::StartRequest start_request(const ExecRequest& req, const std::string& tag) {
  if (req.cmd.empty()) throw Error(Code::kInvalidArgument, "cmd is empty");
  process::StartRequest sr;
  auto* p = sr.mutable_process();
  p->set_cmd(req.cmd);
  for (const auto& a : req.args) p->add_args(a);
  for (const auto& [k, v] : req.envs) (*p->mutable_envs())[k] = v;
  if (!req.cwd.empty()) p->set_cwd(req.cwd);
  if (!tag.empty()) sr.set_tag(tag);
  sr.set_stdin(false);
  return sr;
}

}  // namespace

std::string_view file_type_name(FileType t) {
  switch (t) {
    case FileType::kFile:
      return "file";
    case FileType::kDirectory:
      return "directory";
    case FileType::kSymlink:
      return "symlink";
    default:
      return "unknown";
  }
}

struct HostClient::Impl {
  Impl(HostEndpoint ep, HostClientOptions o)
      : pool(std::move(ep), o.transport ? o.transport : make_tcp_transport(), o.pool) {}

  const HostEndpoint& ep() const { return pool.endpoint(); }

  Headers agent_headers() const { return {{"Authorization", "Bearer " + ep().agent_token}}; }

  // Through the proxy the agent's token travels in its own header, so that Authorization
  // can name envd's user (Basic, no password).
  Headers envd_headers(const std::string& user = "") const {
    Headers h{{"X-Wrenn-Agent-Token", ep().agent_token}};
    if (!user.empty()) h.emplace_back("Authorization", "Basic " + base64(user + ":"));
    return h;
  }

  static std::string envd(const std::string& id, std::string_view rest) {
    check_id(id);
    return "/proxy/" + id + "/" + std::to_string(kEnvdPort) + std::string(rest);
  }

  void unary(const std::string& target, const google::protobuf::Message& req,
             google::protobuf::Message& resp, Headers headers, Deadline deadline, bool idempotent) {
    HttpRequest r;
    r.method = bhttp::verb::post;
    r.target = target;
    r.headers = std::move(headers);
    r.headers.emplace_back("Content-Type",
                           connect::content_type_string({connect::Codec::kProto, false}));
    r.headers.emplace_back("Connect-Protocol-Version", "1");
    // No Connect-Timeout-Ms on unary calls: wrenn's Connect server (src/common/connect/
    // server.cpp) then turns every error of the call into deadline_exceeded once the timeout
    // has passed (its `unary || timer` waits for one *success*). The deadline here bounds
    // the call all the same.
    check_deadline(deadline);
    r.body = connect::encode(connect::Codec::kProto, req);
    r.idempotent = idempotent;
    HttpExchange ex(pool, std::move(r), deadline);
    if (ex.status() != 200) throw ex.error_from_response();
    std::string body = ex.read_all(kMaxUnaryResponse);
    decode_response(body, resp);
  }

  void decode_response(std::string_view body, google::protobuf::Message& resp) const {
    if (!resp.ParseFromArray(body.data(), static_cast<int>(body.size())))
      throw Error(Code::kInternal, "host agent " + ep().address() + " sent a malformed " +
                                       std::string(resp.GetTypeName()));
  }

  void agent(const std::string& method, const google::protobuf::Message& req,
             google::protobuf::Message& resp, std::chrono::milliseconds timeout) {
    check_timeout(timeout);
    unary(kAgentService + method, req, resp, agent_headers(), Clock::now() + timeout, true);
  }

  // A process.Process/Start call with its response header read.
  std::unique_ptr<HttpExchange> start_stream(const std::string& id, const ExecRequest& req,
                                             const std::string& tag, Deadline deadline,
                                             std::optional<std::chrono::milliseconds> kill_after) {
    HttpRequest r;
    r.method = bhttp::verb::post;
    r.target = envd(id, "/process.Process/Start");
    r.headers = envd_headers(req.user);
    r.headers.emplace_back("Content-Type",
                           connect::content_type_string({connect::Codec::kProto, true}));
    r.headers.emplace_back("Connect-Protocol-Version", "1");
    // envd kills the process when this passes: only for foreground commands.
    if (kill_after)
      r.headers.emplace_back("Connect-Timeout-Ms", std::to_string(kill_after->count()));
    r.body = connect::encode_envelope(
        0, connect::encode(connect::Codec::kProto, start_request(req, tag)));
    auto ex = std::make_unique<HttpExchange>(pool, std::move(r), deadline);
    if (ex->status() != 200) throw ex->error_from_response();
    return ex;
  }

  void send_signal(const std::string& id, const process::ProcessSelector& sel, Signal signal,
                   Deadline deadline) {
    process::SendSignalRequest req;
    *req.mutable_process() = sel;
    req.set_signal(signal == Signal::kKill ? process::SIGNAL_SIGKILL : process::SIGNAL_SIGTERM);
    process::SendSignalResponse resp;
    unary(envd(id, "/process.Process/SendSignal"), req, resp, envd_headers(), deadline, false);
  }

  ConnectionPool pool;
};

HostClient::HostClient(HostEndpoint endpoint, HostClientOptions options)
    : impl_(std::make_unique<Impl>(std::move(endpoint), std::move(options))) {}

HostClient::~HostClient() = default;

const HostEndpoint& HostClient::endpoint() const {
  return impl_->ep();
}
std::size_t HostClient::idle_connections() const {
  return impl_->pool.idle_count();
}
std::uint64_t HostClient::connections_opened() const {
  return impl_->pool.connections_opened();
}

// ---- Agent ------------------------------------------------------------------------------

pb::SandboxInfo HostClient::create_sandbox(const pb::CreateSandboxRequest& req, Timeout timeout) {
  check_id(req.sandbox_id());
  pb::CreateSandboxResponse resp;
  impl_->agent("CreateSandbox", req, resp, timeout);
  return resp.sandbox();
}

void HostClient::destroy_sandbox(const std::string& id, Timeout timeout) {
  check_id(id);
  pb::DestroySandboxRequest req;
  req.set_sandbox_id(id);
  pb::DestroySandboxResponse resp;
  impl_->agent("DestroySandbox", req, resp, timeout);
}

pb::SandboxInfo HostClient::get_sandbox(const std::string& id, Timeout timeout) {
  check_id(id);
  pb::GetSandboxRequest req;
  req.set_sandbox_id(id);
  pb::GetSandboxResponse resp;
  impl_->agent("GetSandbox", req, resp, timeout);
  return resp.sandbox();
}

std::vector<pb::SandboxInfo> HostClient::list_sandboxes(Timeout timeout) {
  pb::ListSandboxesResponse resp;
  impl_->agent("ListSandboxes", pb::ListSandboxesRequest{}, resp, timeout);
  return {resp.sandboxes().begin(), resp.sandboxes().end()};
}

pb::SandboxInfo HostClient::pause_sandbox(const std::string& id, Timeout timeout) {
  check_id(id);
  pb::PauseSandboxRequest req;
  req.set_sandbox_id(id);
  pb::PauseSandboxResponse resp;
  impl_->agent("PauseSandbox", req, resp, timeout);
  return resp.sandbox();
}

pb::SandboxInfo HostClient::resume_sandbox(const std::string& id, std::uint32_t timeout_sec,
                                           Timeout timeout) {
  check_id(id);
  pb::ResumeSandboxRequest req;
  req.set_sandbox_id(id);
  req.set_timeout_sec(timeout_sec);
  pb::ResumeSandboxResponse resp;
  impl_->agent("ResumeSandbox", req, resp, timeout);
  return resp.sandbox();
}

void HostClient::ping_sandbox(const std::string& id, Timeout timeout) {
  check_id(id);
  pb::PingSandboxRequest req;
  req.set_sandbox_id(id);
  pb::PingSandboxResponse resp;
  impl_->agent("PingSandbox", req, resp, timeout);
}

std::vector<pb::MetricPoint> HostClient::sandbox_metrics(const std::string& id,
                                                         const std::string& range,
                                                         Timeout timeout) {
  check_id(id);
  pb::GetSandboxMetricsRequest req;
  req.set_sandbox_id(id);
  req.set_range(range);
  pb::GetSandboxMetricsResponse resp;
  impl_->agent("GetSandboxMetrics", req, resp, timeout);
  return {resp.points().begin(), resp.points().end()};
}

pb::HostInfoResponse HostClient::host_info(Timeout timeout) {
  pb::HostInfoResponse resp;
  impl_->agent("HostInfo", pb::HostInfoRequest{}, resp, timeout);
  return resp;
}

std::uint64_t HostClient::create_snapshot(const std::string& sandbox_id,
                                          const std::string& template_id, Timeout timeout) {
  check_id(sandbox_id);
  pb::CreateSnapshotRequest req;
  req.set_sandbox_id(sandbox_id);
  req.set_template_id(template_id);
  pb::CreateSnapshotResponse resp;
  impl_->agent("CreateSnapshot", req, resp, timeout);
  return resp.size_bytes();
}

void HostClient::delete_snapshot(const std::string& template_id, Timeout timeout) {
  pb::DeleteSnapshotRequest req;
  req.set_template_id(template_id);
  pb::DeleteSnapshotResponse resp;
  impl_->agent("DeleteSnapshot", req, resp, timeout);
}

// ---- Processes --------------------------------------------------------------------------

ExecResult HostClient::exec(const std::string& id, const ExecRequest& req) {
  check_id(id);
  check_timeout(req.timeout);
  const auto start = Clock::now();
  ExecResult result;
  std::optional<std::uint32_t> pid;
  bool ended = false;
  std::optional<Error> failure;
  try {
    auto ex = impl_->start_stream(id, req, "", start + req.timeout + kExecGrace, req.timeout);
    connect::EnvelopeDecoder decoder(kMaxStreamMessage);
    auto keep = [&](std::string& into, bool& truncated, const std::string& bytes) {
      std::size_t room = req.max_output_bytes - std::min(req.max_output_bytes, into.size());
      if (bytes.size() > room) truncated = true;
      into.append(bytes, 0, std::min(room, bytes.size()));
    };
    for (bool done = false; !done;) {
      std::string_view piece = ex->read_some();
      if (piece.empty())
        throw Error(Code::kUnavailable,
                    "host agent " + impl_->ep().address() +
                        ": the process stream ended without an end-of-stream message");
      decoder.feed(piece);
      while (auto env = decoder.next()) {
        if (env->end_stream()) {
          // Read the (empty) rest so that the connection can go back to the pool.
          while (!ex->read_some().empty()) {
          }
          if (auto e = connect::parse_error_json(env->payload)) {
            if (e->code() == Code::kDeadlineExceeded)
              throw Error(Code::kDeadlineExceeded, "command did not finish within " +
                                                       std::to_string(req.timeout.count()) +
                                                       " ms and was killed");
            throw *e;
          }
          if (!ended)
            throw Error(Code::kInternal, "envd ended the process stream without an end event");
          done = true;
          break;
        }
        process::StartResponse msg;
        impl_->decode_response(env->payload, msg);
        const auto& ev = msg.event();
        if (ev.has_start()) {
          pid = ev.start().pid();
        } else if (ev.has_data()) {
          if (ev.data().has_stdout())
            keep(result.stdout_data, result.stdout_truncated, ev.data().stdout());
          else if (ev.data().has_stderr())
            keep(result.stderr_data, result.stderr_truncated, ev.data().stderr());
        } else if (ev.has_end()) {
          ended = true;
          result.exit_code = ev.end().exit_code();
          result.status = ev.end().status();
        }
      }
    }
  } catch (const Error& e) {
    failure = e;
  }
  if (failure) {
    // A foreground command never outlives its call: if it may still run (the stream broke
    // or envd did not answer in time), kill it; best effort.
    if (pid && !ended) {
      try {
        process::ProcessSelector sel;
        sel.set_pid(*pid);
        impl_->send_signal(id, sel, Signal::kKill, Clock::now() + kKillBudget);
      } catch (const Error&) {
      }
      if (failure->code() == Code::kDeadlineExceeded)
        failure = Error(Code::kDeadlineExceeded, "command did not finish within " +
                                                     std::to_string(req.timeout.count()) +
                                                     " ms and was killed");
    }
    throw *failure;
  }
  result.duration = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
  return result;
}

std::uint32_t HostClient::start_background(const std::string& id, const ExecRequest& req,
                                           const std::string& tag) {
  check_id(id);
  check_timeout(req.timeout);
  auto ex = impl_->start_stream(id, req, tag, Clock::now() + req.timeout, std::nullopt);
  connect::EnvelopeDecoder decoder(kMaxStreamMessage);
  for (;;) {
    std::string_view piece = ex->read_some();
    if (piece.empty())
      throw Error(Code::kUnavailable, "host agent " + impl_->ep().address() +
                                          ": the process stream ended before the start event");
    decoder.feed(piece);
    while (auto env = decoder.next()) {
      if (env->end_stream()) {
        if (auto e = connect::parse_error_json(env->payload)) throw *e;
        throw Error(Code::kInternal, "envd ended the process stream without a start event");
      }
      process::StartResponse msg;
      impl_->decode_response(env->payload, msg);
      // Dropping the stream (the exchange's connection) leaves the process running.
      if (msg.event().has_start()) return msg.event().start().pid();
    }
  }
}

std::vector<ProcessInfo> HostClient::list_processes(const std::string& id, Timeout timeout) {
  check_timeout(timeout);
  process::ListResponse resp;
  impl_->unary(Impl::envd(id, "/process.Process/List"), process::ListRequest{}, resp,
               impl_->envd_headers(), Clock::now() + timeout, true);
  std::vector<ProcessInfo> out;
  for (const auto& p : resp.processes()) {
    ProcessInfo info;
    info.pid = p.pid();
    info.tag = p.has_tag() ? p.tag() : "";
    info.cmd = p.config().cmd();
    info.args.assign(p.config().args().begin(), p.config().args().end());
    info.envs.insert(p.config().envs().begin(), p.config().envs().end());
    info.cwd = p.config().cwd();
    out.push_back(std::move(info));
  }
  return out;
}

void HostClient::kill(const std::string& id, const ProcessSelector& process, Signal signal,
                      Timeout timeout) {
  check_id(id);
  check_timeout(timeout);
  impl_->send_signal(id, selector_of(process), signal, Clock::now() + timeout);
}

// ---- Process streams ----------------------------------------------------------------------

namespace {

// A process stream has no deadline of its own: this one is only there because
// HttpExchange wants one (and it is far beyond any sandbox's life).
constexpr auto kStreamDeadline = std::chrono::hours(24 * 365 * 10);

HttpRequest stream_request(std::string target, Headers headers, std::string payload) {
  HttpRequest r;
  r.method = bhttp::verb::post;
  r.target = std::move(target);
  r.headers = std::move(headers);
  r.headers.emplace_back("Content-Type",
                         connect::content_type_string({connect::Codec::kProto, true}));
  r.headers.emplace_back("Connect-Protocol-Version", "1");
  // envd sends a keepalive this often when the process is quiet: the reading thread
  // wakes up to notice cancellation.
  r.headers.emplace_back("Keepalive-Ping-Interval", std::to_string(kStreamPoll.count()));
  r.body = connect::encode_envelope(0, std::move(payload));
  return r;  // not idempotent: never sent twice
}

// Reads a Start or Connect stream (the same wire: ProcessEvent at field 1) to its end.
template <class ImplT>
StreamEnd pump_process_stream(ImplT& impl, HttpRequest request, const ProcessEventSink& sink,
                              const StreamCancel& cancel) {
  if (cancel.cancelled()) return StreamEnd::kCancelled;
  HttpExchange ex(impl.pool, std::move(request), Clock::now() + kStreamDeadline);
  if (ex.status() != 200) throw ex.error_from_response();
  connect::EnvelopeDecoder decoder(kMaxStreamMessage);
  bool ended = false;
  for (;;) {
    if (cancel.cancelled()) return StreamEnd::kCancelled;
    std::string_view piece = ex.read_some();
    if (piece.empty())
      throw Error(Code::kUnavailable,
                  "host agent " + impl.ep().address() +
                      ": the process stream ended without an end-of-stream message");
    decoder.feed(piece);
    while (auto env = decoder.next()) {
      if (env->end_stream()) {
        while (!ex.read_some().empty()) {
        }
        if (auto e = connect::parse_error_json(env->payload)) throw *e;
        if (!ended)
          throw Error(Code::kInternal, "envd ended the process stream without an end event");
        return StreamEnd::kEnded;
      }
      if (ended) continue;  // nothing follows the end event but the end of the stream
      process::StartResponse msg;
      impl.decode_response(env->payload, msg);
      const auto& e = msg.event();
      ProcessEvent out;
      if (e.has_start()) {
        out.kind = ProcessEvent::Kind::kStart;
        out.pid = e.start().pid();
      } else if (e.has_data()) {
        const auto& d = e.data();
        if (d.has_stdout()) {
          out.kind = ProcessEvent::Kind::kStdout;
          out.data = d.stdout();
        } else if (d.has_stderr()) {
          out.kind = ProcessEvent::Kind::kStderr;
          out.data = d.stderr();
        } else if (d.has_pty()) {
          out.kind = ProcessEvent::Kind::kPty;
          out.data = d.pty();
        } else {
          continue;
        }
      } else if (e.has_end()) {
        ended = true;
        out.kind = ProcessEvent::Kind::kEnd;
        out.exit_code = e.end().exit_code();
        out.status = e.end().status();
      } else {
        continue;  // keepalive
      }
      sink(std::move(out));
    }
  }
}

}  // namespace

StreamEnd HostClient::start_stream(const std::string& id, const ExecRequest& req,
                                   const std::string& tag, std::optional<PtySize> pty,
                                   const ProcessEventSink& sink, const StreamCancel& cancel) {
  check_id(id);
  process::StartRequest sr = start_request(req, tag);
  if (pty) {
    if (pty->cols == 0 || pty->rows == 0)
      throw Error(Code::kInvalidArgument, "pty size needs cols and rows greater than 0");
    auto* size = sr.mutable_pty()->mutable_size();
    size->set_cols(pty->cols);
    size->set_rows(pty->rows);
  }
  return pump_process_stream(
      *impl_,
      stream_request(Impl::envd(id, "/process.Process/Start"), impl_->envd_headers(req.user),
                     connect::encode(connect::Codec::kProto, sr)),
      sink, cancel);
}

StreamEnd HostClient::attach(const std::string& id, const ProcessSelector& process,
                             const ProcessEventSink& sink, const StreamCancel& cancel) {
  check_id(id);
  process::ConnectRequest cr;
  *cr.mutable_process() = selector_of(process);
  return pump_process_stream(
      *impl_,
      stream_request(Impl::envd(id, "/process.Process/Connect"), impl_->envd_headers(),
                     connect::encode(connect::Codec::kProto, cr)),
      sink, cancel);
}

void HostClient::send_input(const std::string& id, const ProcessSelector& process,
                            const std::string& bytes, InputTarget target, Timeout timeout) {
  check_id(id);
  check_timeout(timeout);
  process::SendInputRequest req;
  *req.mutable_process() = selector_of(process);
  if (target == InputTarget::kPty)
    req.mutable_input()->set_pty(bytes);
  else
    req.mutable_input()->set_stdin(bytes);
  process::SendInputResponse resp;
  impl_->unary(Impl::envd(id, "/process.Process/SendInput"), req, resp, impl_->envd_headers(),
               Clock::now() + timeout, false);
}

void HostClient::resize_pty(const std::string& id, const ProcessSelector& process, PtySize size,
                            Timeout timeout) {
  check_id(id);
  check_timeout(timeout);
  if (size.cols == 0 || size.rows == 0)
    throw Error(Code::kInvalidArgument, "pty size needs cols and rows greater than 0");
  process::UpdateRequest req;
  *req.mutable_process() = selector_of(process);
  req.mutable_pty()->mutable_size()->set_cols(size.cols);
  req.mutable_pty()->mutable_size()->set_rows(size.rows);
  process::UpdateResponse resp;
  // Setting a size twice is harmless, so a stale pooled connection may be retried.
  impl_->unary(Impl::envd(id, "/process.Process/Update"), req, resp, impl_->envd_headers(),
               Clock::now() + timeout, true);
}

// ---- Files ------------------------------------------------------------------------------

std::uint64_t HostClient::read_file(const std::string& id, const std::string& path,
                                    const ChunkSink& sink, Timeout timeout) {
  check_path(path);
  check_timeout(timeout);
  HttpRequest r;
  r.method = bhttp::verb::get;
  r.target = Impl::envd(id, "/files?path=" + query_escape(path));
  r.headers = impl_->envd_headers();
  // The bytes as stored: no gzip (the host link is fast; compression would cost CPU).
  r.headers.emplace_back("Accept-Encoding", "identity");
  r.idempotent = true;
  HttpExchange ex(impl_->pool, std::move(r), Clock::now() + timeout);
  if (ex.status() != 200) throw ex.error_from_response();
  std::uint64_t total = 0;
  for (;;) {
    std::string_view piece = ex.read_some();
    if (piece.empty()) return total;
    total += piece.size();
    sink(piece);
  }
}

std::uint64_t HostClient::write_file(const std::string& id, const std::string& path,
                                     const ChunkSource& source, Timeout timeout) {
  check_path(path);
  check_timeout(timeout);
  // envd's upload is multipart/form-data: one "file" part, framed around the streamed
  // bytes. The boundary is 128 random bits, so file contents cannot plausibly contain it.
  const std::string boundary = random_boundary();
  const std::string preamble =
      "--" + boundary +
      "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"upload\"\r\n"
      "Content-Type: application/octet-stream\r\n\r\n";
  const std::string epilogue = "\r\n--" + boundary + "--\r\n";
  std::uint64_t total = 0;
  int stage = 0;  // 0 preamble, 1 file bytes, 2 epilogue sent
  HttpRequest r;
  r.method = bhttp::verb::post;
  r.target = Impl::envd(id, "/files?path=" + query_escape(path));
  r.headers = impl_->envd_headers();
  r.headers.emplace_back("Content-Type", "multipart/form-data; boundary=" + boundary);
  r.source = [&]() -> std::string {
    if (stage == 0) {
      stage = 1;
      return preamble;
    }
    if (stage == 1) {
      std::string piece = source();
      if (!piece.empty()) {
        total += piece.size();
        return piece;
      }
      stage = 2;
      return epilogue;
    }
    return {};
  };
  HttpExchange ex(impl_->pool, std::move(r), Clock::now() + timeout);
  if (ex.status() != 200) throw ex.error_from_response();
  if (stage != 2)
    throw Error(Code::kInternal, "host agent " + impl_->ep().address() +
                                     " answered the upload of " + path + " before it was complete");
  ex.read_all(1 << 20);  // the list of written files: nothing we need
  return total;
}

std::vector<FileEntry> HostClient::list_dir(const std::string& id, const std::string& path,
                                            std::uint32_t depth, Timeout timeout) {
  check_path(path);
  check_timeout(timeout);
  filesystem::ListDirRequest req;
  req.set_path(path);
  req.set_depth(depth);
  filesystem::ListDirResponse resp;
  impl_->unary(Impl::envd(id, "/filesystem.Filesystem/ListDir"), req, resp, impl_->envd_headers(),
               Clock::now() + timeout, true);
  std::vector<FileEntry> out;
  out.reserve(static_cast<std::size_t>(resp.entries_size()));
  for (const auto& e : resp.entries()) out.push_back(file_entry(e));
  return out;
}

FileEntry HostClient::make_dir(const std::string& id, const std::string& path, Timeout timeout) {
  check_path(path);
  check_timeout(timeout);
  filesystem::MakeDirRequest req;
  req.set_path(path);
  filesystem::MakeDirResponse resp;
  impl_->unary(Impl::envd(id, "/filesystem.Filesystem/MakeDir"), req, resp, impl_->envd_headers(),
               Clock::now() + timeout, false);
  return file_entry(resp.entry());
}

void HostClient::remove(const std::string& id, const std::string& path, Timeout timeout) {
  check_path(path);
  check_timeout(timeout);
  filesystem::RemoveRequest req;
  req.set_path(path);
  filesystem::RemoveResponse resp;
  impl_->unary(Impl::envd(id, "/filesystem.Filesystem/Remove"), req, resp, impl_->envd_headers(),
               Clock::now() + timeout, false);
}

FileEntry HostClient::stat(const std::string& id, const std::string& path, Timeout timeout) {
  check_path(path);
  check_timeout(timeout);
  filesystem::StatRequest req;
  req.set_path(path);
  filesystem::StatResponse resp;
  impl_->unary(Impl::envd(id, "/filesystem.Filesystem/Stat"), req, resp, impl_->envd_headers(),
               Clock::now() + timeout, true);
  return file_entry(resp.entry());
}

}  // namespace wrenn::cp
