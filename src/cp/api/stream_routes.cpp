// WebSocket routes of the capsule API (reference §4): exec stream, process attach, PTY.
//
//   GET /v1/capsules/{id}/exec/stream               first frame {"type":"start","cmd",…}
//   GET /v1/capsules/{id}/processes/{selector}/stream  attach (pid digits, else tag)
//   GET /v1/capsules/{id}/pty                       first frame start or connect
//
// Decisions (where upstream's behaviour was a quirk or left open):
//  - Before the upgrade only a malformed capsule id (400 invalid_request) and a request
//    that is not a WebSocket upgrade (400) are answered in HTTP. Everything else — a
//    capsule of another team, a missing or stopped one, an unreachable host — is an error
//    frame after the upgrade ("capsule not found", …), even with header credentials, as
//    upstream (the SDK reads errors from frames).
//  - Authentication: valid X-API-Key / Bearer on the upgrade, else the first frame must be
//    {"type":"auth","token":…} within 5 s. Otherwise: error frame "authentication failed"
//    (or "authentication timed out"), then a close frame (policy violation).
//  - The server always ends with a close frame (normal after exit, policy violation after
//    a fatal error) rather than dropping the TCP connection.
//  - stdout/stderr "data" stays a JSON string for the SDK. A UTF-8 character split between
//    two output pieces is carried over whole; bytes that are not UTF-8 become U+FFFD in
//    "data", and then the frame also carries the exact bytes in "data_base64".
//  - Exec stream: {"type":"stop"} and a client disconnect both kill the process (SIGKILL);
//    after stop the client still receives the exit frame. Attach: a disconnect only
//    detaches (the process runs on). PTY: the process survives a disconnect (reconnect by
//    tag); {"type":"kill"} kills it and the exit frame follows.
//  - PTY input frames are applied one at a time, in order (no coalescing, nothing dropped);
//    reading the socket waits meanwhile, which is the client's backpressure. Each control
//    call (input, resize, kill, stop) has a 5 s bound; its failure is a non-fatal error
//    frame.
//  - Backpressure towards the host: at most 1 MiB of frames wait for a slow client; beyond
//    that the host stream is not read (envd then holds the process's output).
//  - The host stream runs on its own thread (it lasts as long as the process), never on
//    the I/O thread or the worker pool; frames travel to the socket through a bounded
//    queue. last_active_at is set when the stream starts and when the socket ends.
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/json.hpp>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "api/api_error.h"
#include "api/capsule_json.h"
#include "api/capsule_routes.h"
#include "blocking.h"
#include "crypto/encoding.h"
#include "crypto/ids.h"
#include "crypto/random.h"
#include "log.h"

namespace wrenn::cp {

namespace json = boost::json;
namespace beast = boost::beast;
namespace websocket = boost::beast::websocket;
using namespace capsule_routes;
using namespace std::chrono_literals;

namespace {

constexpr auto kAuthWindow = 5s;
constexpr auto kControlTimeout = 5s;
constexpr auto kPingInterval = 30s;
constexpr std::size_t kMaxQueued = 1 << 20;
constexpr std::size_t kMaxClientFrame = 1 << 20;

enum class Mode { kExec, kAttach, kPty };

// ---- UTF-8 --------------------------------------------------------------------------------

// Length of the UTF-8 sequence starting with lead byte c (0: not a lead byte).
int utf8_length(unsigned char c) {
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return 2;
  if (c >= 0xE0 && c <= 0xEF) return 3;
  if (c >= 0xF0 && c <= 0xF4) return 4;
  return 0;
}

// Whether b may follow lead byte `lead` as the sequence's second byte (excludes overlong
// forms, surrogates and code points past U+10FFFF).
bool valid_second(unsigned char lead, unsigned char b) {
  switch (lead) {
    case 0xE0:
      return b >= 0xA0 && b <= 0xBF;
    case 0xED:
      return b >= 0x80 && b <= 0x9F;
    case 0xF0:
      return b >= 0x90 && b <= 0xBF;
    case 0xF4:
      return b >= 0x80 && b <= 0x8F;
    default:
      return b >= 0x80 && b <= 0xBF;
  }
}

// Turns one output stream's pieces into JSON-safe text: a character split across pieces is
// held back until it is complete; invalid bytes become U+FFFD.
class Utf8Stream {
 public:
  // The text of carry + piece (all of it when final). lossy: some bytes were replaced;
  // raw: the exact bytes the returned text stands for.
  std::string take(std::string_view piece, bool final, bool& lossy, std::string& raw) {
    std::string in = std::move(carry_);
    carry_.clear();
    in.append(piece);
    std::string out;
    out.reserve(in.size());
    lossy = false;
    std::size_t i = 0;
    while (i < in.size()) {
      const auto c = static_cast<unsigned char>(in[i]);
      const int len = utf8_length(c);
      if (len == 1) {
        out += in[i++];
        continue;
      }
      int have = 0;  // valid bytes of the sequence present
      if (len > 0) {
        have = 1;
        while (have < len && i + have < in.size()) {
          const auto b = static_cast<unsigned char>(in[i + have]);
          if (have == 1 ? !valid_second(c, b) : (b < 0x80 || b > 0xBF)) break;
          ++have;
        }
      }
      if (len > 0 && have == len) {
        out.append(in, i, len);
        i += len;
      } else if (len > 0 && i + have == in.size() && !final) {
        carry_ = in.substr(i);  // an incomplete character at the end: wait for the rest
        break;
      } else {
        out += "\xEF\xBF\xBD";
        lossy = true;
        i += 1;
      }
    }
    raw = in.substr(0, i);
    return out;
  }

 private:
  std::string carry_;
};

// ---- Frames -------------------------------------------------------------------------------

// A string member's text; "" when absent or not a string.
std::string str_of(const json::object& o, const char* key) {
  const auto* v = o.if_contains(key);
  return v && v->is_string() ? std::string(v->as_string()) : std::string();
}

std::string frame(json::object o) {
  return json::serialize(o);
}

std::string error_frame(std::string_view message, bool fatal) {
  json::object o;
  o["type"] = "error";
  o["data"] = message;
  if (fatal) o["fatal"] = true;
  return frame(std::move(o));
}

// The frames from the host thread (and the socket's own) waiting for the socket, bounded
// for the host side. Shared by the host thread and the socket; holds no I/O objects, so
// the host thread may outlive the socket safely.
struct Outbox {
  std::mutex mu;
  std::condition_variable space;
  std::deque<std::string> frames;
  std::size_t bytes = 0;
  bool host_done = false;      // the host thread has queued its last frame
  bool consumer_gone = false;  // the socket is finished: drop frames, stop waiting
  std::function<void()> wake;  // tells the socket's writer (called with mu held)
  // Exec stream: the process, and whether it must be killed as soon as its pid is known.
  std::optional<std::uint32_t> pid;
  bool kill_wanted = false;
  StreamCancel cancel;

  // Host thread: waits while more than kMaxQueued bytes are queued.
  void push_blocking(std::string f) {
    std::unique_lock lk(mu);
    space.wait(lk, [&] { return bytes < kMaxQueued || consumer_gone; });
    if (consumer_gone) return;
    bytes += f.size();
    frames.push_back(std::move(f));
    if (wake) wake();
  }
  // Socket side: never waits.
  void push(std::string f) {
    std::lock_guard lk(mu);
    bytes += f.size();
    frames.push_back(std::move(f));
    if (wake) wake();
  }
};

// What the host thread needs to run the stream.
struct HostJob {
  Mode mode = Mode::kExec;
  std::shared_ptr<HostClient> client;
  std::string capsule_id;
  ExecRequest req;
  std::string tag;
  std::optional<PtySize> pty;
  std::optional<ProcessSelector> attach;  // attach / PTY connect
};

void run_host_stream(std::shared_ptr<Outbox> out, HostJob job) {
  Utf8Stream utf_out, utf_err;
  bool started = false;
  auto text_frame = [](const char* type, Utf8Stream& u, std::string_view piece,
                       bool final) -> std::optional<std::string> {
    bool lossy = false;
    std::string raw;
    std::string text = u.take(piece, final, lossy, raw);
    if (raw.empty()) return std::nullopt;
    json::object o;
    o["type"] = type;
    o["data"] = text;
    if (lossy) o["data_base64"] = crypto::base64_encode(raw);
    return frame(std::move(o));
  };
  auto sink = [&](ProcessEvent&& e) {
    switch (e.kind) {
      case ProcessEvent::Kind::kStart: {
        started = true;
        bool kill_now = false;
        {
          std::lock_guard lk(out->mu);
          out->pid = e.pid;
          kill_now = out->kill_wanted;
        }
        if (kill_now) {
          try {
            job.client->kill(job.capsule_id, e.pid, Signal::kKill, kControlTimeout);
          } catch (const std::exception&) {
          }
        }
        json::object o;
        if (job.mode == Mode::kPty) {
          if (job.attach) return;  // a re-attach sends no started frame
          o["type"] = "started";
          o["tag"] = job.tag;
        } else {
          o["type"] = "start";
        }
        o["pid"] = e.pid;
        out->push_blocking(frame(std::move(o)));
        return;
      }
      case ProcessEvent::Kind::kStdout:
      case ProcessEvent::Kind::kStderr: {
        const bool is_out = e.kind == ProcessEvent::Kind::kStdout;
        auto f =
            text_frame(is_out ? "stdout" : "stderr", is_out ? utf_out : utf_err, e.data, false);
        if (f) out->push_blocking(std::move(*f));
        return;
      }
      case ProcessEvent::Kind::kPty: {
        json::object o;
        o["type"] = "output";
        o["data"] = crypto::base64_encode(e.data);
        out->push_blocking(frame(std::move(o)));
        return;
      }
      case ProcessEvent::Kind::kEnd: {
        for (auto* u : {&utf_out, &utf_err}) {
          auto f = text_frame(u == &utf_out ? "stdout" : "stderr", *u, "", true);
          if (f) out->push_blocking(std::move(*f));
        }
        json::object o;
        o["type"] = "exit";
        o["exit_code"] = e.exit_code;
        out->push_blocking(frame(std::move(o)));
        return;
      }
    }
  };
  std::optional<std::string> failure;
  try {
    if (job.attach)
      job.client->attach(job.capsule_id, *job.attach, sink, out->cancel);
    else
      job.client->start_stream(job.capsule_id, job.req, job.tag, job.pty, sink, out->cancel);
  } catch (const std::exception& e) {
    if (is_internal(e))
      log::warn("capsule process stream failed",
                {{"capsule", job.capsule_id}, {"error", e.what()}});
    failure = to_api_error(e).what();
  }
  if (failure) {
    // PTY: a failure before the process started is a setup failure (fatal).
    out->push_blocking(error_frame(*failure, job.mode == Mode::kPty && !started));
  }
  std::lock_guard lk(out->mu);
  out->host_done = true;
  if (out->wake) out->wake();
}

// ---- The socket -----------------------------------------------------------------------------

struct Session {
  Session(ServerContext& c, RequestContext& r, Mode m, beast::tcp_stream&& s)
      : ctx(c), rc(r), mode(m), ws(std::move(s)), timer(ws.get_executor()) {}

  ServerContext& ctx;
  RequestContext& rc;
  Mode mode;
  websocket::stream<beast::tcp_stream> ws;
  asio::steady_timer timer;  // the writer's wake-up
  std::shared_ptr<Outbox> out = std::make_shared<Outbox>();

  bool authed = false;
  bool started = false;      // the host stream was launched (or is being set up)
  bool closing = false;      // a fatal error or the end: no more client frames matter
  bool reader_done = false;  // the client closed or vanished
  websocket::close_code close_code = websocket::close_code::normal;

  std::string team;
  std::string capsule_id;
  std::shared_ptr<HostClient> client;
  std::optional<ProcessSelector> control;  // PTY: the process input/resize/kill go to

  void wake() { timer.cancel(); }
  void fatal(std::string_view message) {
    out->push(error_frame(message, mode == Mode::kPty));
    closing = true;
    close_code = websocket::close_code::policy_error;
    wake();
  }
};

// Loads the capsule (team-scoped, running) and launches the host stream. Any failure is a
// fatal error frame.
asio::awaitable<void> begin(std::shared_ptr<Session> s, json::object first) {
  s->started = true;
  HostJob job;
  job.mode = s->mode;
  std::optional<std::string> failure;
  try {
    if (s->mode == Mode::kExec) {
      job.req.cmd = std::string(first.at("cmd").as_string());
      if (const auto* a = first.if_contains("args")) {
        if (!a->is_array()) throw ApiError(ApiCode::kInvalidRequest, "args must be an array");
        for (const auto& v : a->as_array()) {
          if (!v.is_string())
            throw ApiError(ApiCode::kInvalidRequest, "args must be an array of strings");
          job.req.args.emplace_back(v.as_string());
        }
      }
    } else if (s->mode == Mode::kAttach) {
      job.attach = parse_process_selector(s->rc.param("selector"));
      if (const auto* tag = std::get_if<std::string>(&*job.attach); tag && tag->empty())
        throw ApiError(ApiCode::kInvalidRequest, "process selector is required");
    } else if (str_of(first, "type") == "connect") {
      std::string tag = str_of(first, "tag");
      if (tag.empty()) throw ApiError(ApiCode::kInvalidRequest, "connect needs a 'tag'");
      job.attach = tag;
      s->control = tag;
    } else {
      job.req.cmd = first.contains("cmd") ? str_of(first, "cmd") : "/bin/bash";
      if (job.req.cmd.empty()) job.req.cmd = "/bin/bash";
      if (const auto* a = first.if_contains("args"); a && a->is_array())
        for (const auto& v : a->as_array())
          if (v.is_string()) job.req.args.emplace_back(v.as_string());
      if (const auto* e = first.if_contains("envs"); e && e->is_object())
        for (const auto& kv : e->as_object())
          if (kv.value().is_string())
            job.req.envs[std::string(kv.key())] = std::string(kv.value().as_string());
      job.req.cwd = str_of(first, "cwd");  // "user" is accepted and ignored, as upstream
      PtySize size;
      if (const auto* c = first.if_contains("cols"); c && c->is_int64() && c->as_int64() > 0)
        size.cols = static_cast<std::uint32_t>(std::min<std::int64_t>(c->as_int64(), 10000));
      if (const auto* r = first.if_contains("rows"); r && r->is_int64() && r->as_int64() > 0)
        size.rows = static_cast<std::uint32_t>(std::min<std::int64_t>(r->as_int64(), 10000));
      job.pty = size;
      job.tag = "pty-" + crypto::random_hex(4);
      s->control = job.tag;
    }
  } catch (const std::exception& e) {
    failure = to_api_error(e).what();
  }
  if (failure) {
    s->fatal(*failure);
    co_return;
  }
  std::exception_ptr err;
  try {
    auto load = load_running(s->ctx, s->rc, true);
    store::Capsule c = co_await std::move(load);
    s->team = c.team_id;
    s->capsule_id = c.id;
    s->client = host_for(s->ctx, c);
  } catch (...) {
    err = std::current_exception();
  }
  if (err) {
    s->fatal(to_api_error(err).what());
    co_return;
  }
  job.client = s->client;
  job.capsule_id = s->capsule_id;
  try {
    std::thread(run_host_stream, s->out, std::move(job)).detach();
  } catch (const std::exception&) {
    failure = "cannot start the process stream (out of threads)";
  }
  if (failure) s->fatal(*failure);
}

// A control call for the PTY or the exec stream on the worker pool; its failure is a
// non-fatal error frame.
asio::awaitable<void> control(std::shared_ptr<Session> s, std::function<void()> call) {
  std::optional<std::string> failure;
  try {
    auto task = run_blocking(s->ctx.workers, [&call] { agent_call(call); });
    co_await std::move(task);
  } catch (const std::exception& e) {
    failure = to_api_error(e).what();
  }
  if (failure) {
    s->out->push(error_frame(*failure, false));
    s->wake();
  }
}

// Exec stream: kill the process now if its pid is known, else as soon as it is.
asio::awaitable<void> stop_exec(std::shared_ptr<Session> s) {
  std::optional<std::uint32_t> pid;
  {
    std::lock_guard lk(s->out->mu);
    s->out->kill_wanted = true;
    pid = s->out->pid;
  }
  if (!pid) co_return;
  auto client = s->client;
  auto id = s->capsule_id;
  std::uint32_t p = *pid;
  auto task = control(s, [client, id, p] { client->kill(id, p, Signal::kKill, kControlTimeout); });
  co_await std::move(task);
}

std::string type_of(const json::object& o) {
  return str_of(o, "type");
}

asio::awaitable<void> on_frame(std::shared_ptr<Session> s, json::object o) {
  const std::string type = type_of(o);
  if (!s->authed) {
    std::optional<Caller> who;
    if (type == "auth" && o.contains("token") && o.at("token").is_string()) {
      try {
        auto task = s->ctx.auth.authenticate_token(std::string(o.at("token").as_string()));
        who = co_await std::move(task);
      } catch (const std::exception&) {
      }
    }
    if (!who || who->team_id.empty()) {
      s->fatal("authentication failed");
      co_return;
    }
    s->rc.set_caller(*who);
    s->authed = true;
    if (s->mode == Mode::kAttach) {
      auto b = begin(s, json::object());
      co_await std::move(b);
    }
    co_return;
  }
  if (type == "auth") co_return;  // already authenticated by header
  if (!s->started) {
    if (s->mode == Mode::kExec) {
      if (type != "start" || !o.contains("cmd") || !o.at("cmd").is_string() ||
          o.at("cmd").as_string().empty()) {
        s->fatal("first message must be type 'start' with a 'cmd' field");
        co_return;
      }
    } else if (s->mode == Mode::kPty) {
      if (type != "start" && type != "connect") {
        s->fatal("first message must be type 'start' or 'connect'");
        co_return;
      }
    } else {
      co_return;  // attach: client frames are ignored
    }
    auto b = begin(s, std::move(o));
    co_await std::move(b);
    co_return;
  }
  if (s->mode == Mode::kExec && type == "stop") {
    auto t = stop_exec(s);
    co_await std::move(t);
    co_return;
  }
  if (s->mode != Mode::kPty || !s->client || !s->control) co_return;
  auto client = s->client;
  auto id = s->capsule_id;
  ProcessSelector sel = *s->control;
  if (type == "input") {
    std::string bytes;
    bool bad = false;
    try {
      bytes = crypto::base64_decode(str_of(o, "data"));
    } catch (const std::exception&) {
      bad = true;
    }
    if (bad) {
      s->out->push(error_frame("input data must be base64", false));
      s->wake();
      co_return;
    }
    if (bytes.empty()) co_return;
    auto t = control(s, [client, id, sel, bytes] {
      client->send_input(id, sel, bytes, InputTarget::kPty, kControlTimeout);
    });
    co_await std::move(t);
  } else if (type == "resize") {
    auto dim = [&o](const char* k) -> std::int64_t {
      const auto* v = o.if_contains(k);
      return v && v->is_int64() ? v->as_int64() : 0;
    };
    const std::int64_t cols = dim("cols"), rows = dim("rows");
    if (cols <= 0 || rows <= 0 || cols > 10000 || rows > 10000) co_return;  // as upstream
    PtySize size{static_cast<std::uint32_t>(cols), static_cast<std::uint32_t>(rows)};
    auto t =
        control(s, [client, id, sel, size] { client->resize_pty(id, sel, size, kControlTimeout); });
    co_await std::move(t);
  } else if (type == "kill") {
    auto t =
        control(s, [client, id, sel] { client->kill(id, sel, Signal::kKill, kControlTimeout); });
    co_await std::move(t);
  }
  // anything else (a browser's pong, …) is ignored
}

// Reads client frames until the client closes or vanishes.
asio::awaitable<void> reader(std::shared_ptr<Session> s) {
  if (s->authed && s->mode == Mode::kAttach) {
    auto b = begin(s, json::object());
    co_await std::move(b);
  }
  for (;;) {
    beast::flat_buffer buf;
    beast::error_code ec;
    auto read = s->ws.async_read(buf, asio::redirect_error(asio::use_awaitable, ec));
    co_await std::move(read);
    if (ec) break;
    if (s->closing) continue;
    json::error_code jec;
    json::value v = json::parse(beast::buffers_to_string(buf.data()), jec);
    json::object o;
    if (!jec && v.is_object()) o = std::move(v.as_object());
    auto handle = on_frame(s, std::move(o));
    co_await std::move(handle);
  }
  s->reader_done = true;
  s->wake();
}

// Best effort: last_active_at when the socket ends.
void touch(ServerContext& ctx, const std::string& team, const std::string& id) {
  try {
    auto lease = ctx.db.acquire();
    store::touch_running(*lease, team, id);
  } catch (const std::exception&) {
  }
}

asio::awaitable<void> serve_socket(ServerContext& ctx, RequestContext& rc, Mode mode) {
  http::Exchange& ex = rc.exchange();
  if (!ids::try_parse_id(ids::Kind::kCapsule, rc.param("id")))
    throw ApiError(ApiCode::kInvalidRequest, "invalid capsule id");
  if (!websocket::is_upgrade(ex.request()))
    throw ApiError(ApiCode::kInvalidRequest, "this endpoint needs a WebSocket upgrade");
  bhttp::request<bhttp::empty_body> upgrade(ex.request().base());

  rc.note_status(101);
  auto s = std::make_shared<Session>(ctx, rc, mode, std::move(ex.stream()));
  beast::get_lowest_layer(s->ws).expires_never();
  auto opt = websocket::stream_base::timeout::suggested(beast::role_type::server);
  opt.handshake_timeout = 5s;  // also bounds our close handshake
  s->ws.set_option(opt);
  s->ws.read_message_max(kMaxClientFrame);
  beast::error_code ec;
  auto accept = s->ws.async_accept(upgrade, asio::redirect_error(asio::use_awaitable, ec));
  co_await std::move(accept);
  if (ec) co_return;

  s->authed = rc.caller().kind != Caller::Kind::kAnonymous && !rc.caller().team_id.empty();
  // However this coroutine ends (also destroyed unfinished at shutdown), the host thread
  // must stop touching the socket's executor and stop waiting for room.
  struct Detach {
    std::shared_ptr<Outbox> out;
    ~Detach() {
      {
        std::lock_guard lk(out->mu);
        out->wake = nullptr;
        out->consumer_gone = true;
      }
      out->space.notify_all();
    }
  } detach{s->out};
  {
    std::weak_ptr<Session> weak = s;
    auto exec = s->ws.get_executor();
    std::lock_guard lk(s->out->mu);
    s->out->wake = [weak, exec] {
      asio::post(exec, [weak] {
        if (auto live = weak.lock()) live->wake();
      });
    };
  }
  asio::co_spawn(s->ws.get_executor(), reader(s), [s](std::exception_ptr) {
    s->reader_done = true;
    s->wake();
  });

  // The writer: the only one sending on the socket.
  const auto auth_deadline = std::chrono::steady_clock::now() + kAuthWindow;
  auto next_ping = std::chrono::steady_clock::now() + kPingInterval;
  bool client_gone = false;
  for (;;) {
    std::optional<std::string> f;
    bool host_done = false;
    {
      std::lock_guard lk(s->out->mu);
      if (!s->out->frames.empty()) {
        f = std::move(s->out->frames.front());
        s->out->frames.pop_front();
        s->out->bytes -= f->size();
      }
      host_done = s->out->host_done;
    }
    if (f) {
      s->out->space.notify_all();
      s->ws.text(true);
      auto write =
          s->ws.async_write(asio::buffer(*f), asio::redirect_error(asio::use_awaitable, ec));
      co_await std::move(write);
      if (ec) {
        client_gone = true;
        break;
      }
      continue;
    }
    if (s->reader_done) break;
    if (host_done || s->closing) break;
    const auto now = std::chrono::steady_clock::now();
    if (!s->authed && now >= auth_deadline) {
      s->fatal("authentication timed out");
      continue;
    }
    if (mode == Mode::kPty && now >= next_ping) {
      s->out->push(R"({"type":"ping"})");
      next_ping = now + kPingInterval;
      continue;
    }
    auto wait_until = std::chrono::steady_clock::time_point::max();
    if (!s->authed) wait_until = auth_deadline;
    if (mode == Mode::kPty) wait_until = std::min(wait_until, next_ping);
    s->timer.expires_at(wait_until);
    auto wait = s->timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    co_await std::move(wait);
  }

  if (!client_gone && !s->reader_done && s->ws.is_open()) {
    auto close = s->ws.async_close(websocket::close_reason(s->close_code),
                                   asio::redirect_error(asio::use_awaitable, ec));
    co_await std::move(close);
  }

  // Teardown: the host side stops; an exec stream's process is killed.
  bool ended = false;
  {
    std::lock_guard lk(s->out->mu);
    s->out->consumer_gone = true;
    s->out->wake = nullptr;
    ended = s->out->host_done;
  }
  s->out->space.notify_all();
  if (!ended && s->started && s->client) {
    if (mode == Mode::kExec) {
      auto stop = stop_exec(s);
      co_await std::move(stop);
    } else {
      s->out->cancel.cancel();
    }
  }
  if (!s->reader_done) beast::get_lowest_layer(s->ws).close();
  while (!s->reader_done) {
    s->timer.expires_after(50ms);
    auto wait = s->timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    co_await std::move(wait);
  }
  if (!s->capsule_id.empty()) {
    auto t = run_blocking(ctx.workers, [&ctx, s] { touch(ctx, s->team, s->capsule_id); });
    co_await std::move(t);
  }
}

}  // namespace

namespace capsule_routes {

void register_stream_routes(ServerContext& ctx) {
  Router& r = ctx.router;
  ServerContext* c = &ctx;
  r.add(bhttp::verb::get, "/v1/capsules/{id}/exec/stream", Access::kWebSocket,
        [c](RequestContext& rc) { return serve_socket(*c, rc, Mode::kExec); });
  r.add(bhttp::verb::get, "/v1/capsules/{id}/processes/{selector}/stream", Access::kWebSocket,
        [c](RequestContext& rc) { return serve_socket(*c, rc, Mode::kAttach); });
  r.add(bhttp::verb::get, "/v1/capsules/{id}/pty", Access::kWebSocket,
        [c](RequestContext& rc) { return serve_socket(*c, rc, Mode::kPty); });
}

}  // namespace capsule_routes
}  // namespace wrenn::cp
