// Files: POST …/files/{write,read,list,mkdir,remove,stream/write,stream/read}.
//
// Transfers stream end to end in constant memory: the request or response body moves
// through a ChunkPipe (4 chunks of at most 64 KiB) between this I/O coroutine and one
// worker thread running the blocking HostClient read_file / write_file. There is no size
// cap (upstream's 100 MiB limit on files/write is gone): the sandbox's disk is the limit.
// files/read and files/stream/read are the same streamed download; files/write and
// files/stream/write the same streamed upload, except that files/write also accepts the
// `file` part before the `path` field (then up to kMaxBufferedUpload bytes are held until
// the path arrives), while files/stream/write requires `path` first, as upstream.
//
// Errors: a missing file is 404 not_found (before any byte is sent); an error after the
// response started closes the connection, so the client sees a truncated body. A failed or
// interrupted upload leaves the old file untouched (the host client replaces it only once
// complete). File operations do not touch last_active_at (as upstream).
//
// Paths must be absolute and free of NUL bytes; ".." is left to envd, which resolves it
// inside the sandbox: the sandbox's root is all envd can reach, so no path escapes it.
#include <boost/asio/post.hpp>
#include <boost/json.hpp>

#include "api/api_error.h"
#include "api/capsule_json.h"
#include "api/capsule_routes.h"
#include "api/chunk_pipe.h"
#include "blocking.h"
#include "http/multipart.h"

namespace wrenn::cp {

namespace json = boost::json;
using namespace capsule_routes;

namespace {

constexpr std::size_t kPipeChunks = 4;
constexpr std::size_t kReadBuffer = 64 * 1024;
constexpr std::size_t kMaxBufferedUpload = 8 * 1024 * 1024;
constexpr std::size_t kMaxPathField = 4096;

bhttp::response<bhttp::empty_body> octet_stream_header() {
  bhttp::response<bhttp::empty_body> res(bhttp::status::ok, 11);
  res.set(bhttp::field::content_type, "application/octet-stream");
  return res;
}

// Streams the file to the client: 200 application/octet-stream, chunked.
asio::awaitable<void> download(ServerContext& ctx, RequestContext& rc) {
  auto load = load_capsule(ctx, rc);
  store::Capsule c = co_await std::move(load);
  if (c.status != "running") throw_not_in_status(c, "running");
  auto body_task = rc.json_body();
  json::object body = co_await std::move(body_task);
  const std::string path = parse_path(body);
  std::shared_ptr<HostClient> client = host_for(ctx, c);

  auto pipe = std::make_shared<ChunkPipe>(kPipeChunks);
  asio::post(ctx.workers, [pipe, client, id = c.id, path] {
    std::exception_ptr failure;
    try {
      agent_call([&] {
        return client->read_file(
            id, path, [&](std::string_view piece) { pipe->push(std::string(piece)); },
            kTransferTimeout);
      });
    } catch (...) {
      failure = std::current_exception();
    }
    pipe->finish(failure);
  });

  http::Exchange& ex = rc.exchange();
  bool started = false;
  std::exception_ptr failure;
  try {
    for (;;) {
      auto pop = pipe->async_pop();
      std::optional<std::string> chunk = co_await std::move(pop);
      if (!chunk) break;
      if (!started) {
        auto head = rc.send_header(octet_stream_header());
        co_await std::move(head);
        started = true;
      }
      auto write = ex.write_body(*chunk);
      co_await std::move(write);
    }
  } catch (...) {
    failure = std::current_exception();
  }
  if (failure) pipe->abort();  // the worker's next push throws, ending read_file
  auto done = pipe->wait_finished();
  std::exception_ptr worker_failure = co_await std::move(done);
  if (failure) std::rethrow_exception(failure);
  // Before the header: the error envelope (404 for a missing file); after: a cut body.
  if (worker_failure) std::rethrow_exception(worker_failure);
  if (!started) {
    auto head = rc.send_header(octet_stream_header());
    co_await std::move(head);
  }
  auto fin = ex.finish_body();
  co_await std::move(fin);
}

// Collects a feed()'s parser events so they can be acted on with co_await in between.
struct PartEvents : http::MultipartParser::Handler {
  enum class Kind { kBegin, kData, kEnd };
  struct Event {
    Kind kind;
    std::string name;  // kBegin: the part's name
    std::string data;  // kData
  };
  std::vector<Event> events;

  void on_part_begin(const http::PartHeaders& h) override {
    events.push_back(Event{Kind::kBegin, h.name, {}});
  }
  void on_part_data(std::string_view bytes) override {
    if (!events.empty() && events.back().kind == Kind::kData)
      events.back().data.append(bytes);
    else
      events.push_back(Event{Kind::kData, {}, std::string(bytes)});
  }
  void on_part_end() override { events.push_back(Event{Kind::kEnd, {}, {}}); }
};

[[noreturn]] void bad(std::string message) {
  throw ApiError(ApiCode::kInvalidRequest, std::move(message));
}

std::string boundary_of(http::Exchange& ex) {
  try {
    return http::multipart_boundary(ex.header(bhttp::field::content_type));
  } catch (const Error&) {
    bad("expected multipart/form-data with boundary");
  }
}

// The state of one multipart upload (see upload()).
struct Upload {
  enum class Part { kNone, kPath, kFile, kOther };
  Part part = Part::kNone;
  std::string path_field;
  std::optional<std::string> path;
  bool file_seen = false;
  bool file_done = false;
  bool buffering = false;  // the file part came before the path: held in `buffered`
  std::string buffered;
  bool streaming = false;  // the worker runs write_file from the pipe
  bool worker_gone = false;
};

void start_writer(ServerContext& ctx, const std::shared_ptr<ChunkPipe>& pipe,
                  const std::shared_ptr<HostClient>& client, const std::string& id,
                  const std::string& path) {
  asio::post(ctx.workers, [pipe, client, id, path] {
    std::exception_ptr failure;
    try {
      agent_call([&] {
        return client->write_file(
            id, path, [&] { return pipe->pop(); }, kTransferTimeout);
      });
    } catch (...) {
      failure = std::current_exception();
    }
    pipe->finish(failure);
  });
}

// Reads the multipart body and streams the `file` part into the sandbox at `path`.
asio::awaitable<void> pump_upload(ServerContext& ctx, http::Exchange& ex,
                                  http::MultipartParser& parser, Upload& u,
                                  const std::shared_ptr<ChunkPipe>& pipe,
                                  const std::shared_ptr<HostClient>& client, const std::string& id,
                                  bool path_first) {
  std::vector<char> buf(kReadBuffer);
  PartEvents h;
  for (;;) {
    auto read = ex.read_some(buf.data(), buf.size());
    std::size_t n = co_await std::move(read);
    if (n == 0) {
      parser.finish();  // invalid_argument when the closing delimiter is missing
      break;
    }
    h.events.clear();
    parser.feed(std::string_view(buf.data(), n), h);
    for (auto& ev : h.events) {
      switch (ev.kind) {
        case PartEvents::Kind::kBegin:
          if (ev.name == "path") {
            if (u.path) bad("only one path field is allowed");
            u.part = Upload::Part::kPath;
          } else if (ev.name == "file") {
            if (u.file_seen) bad("only one file part is allowed");
            u.file_seen = true;
            u.part = Upload::Part::kFile;
            if (u.path) {
              start_writer(ctx, pipe, client, id, *u.path);
              u.streaming = true;
            } else if (path_first) {
              bad("the path part must precede the file part");
            } else {
              u.buffering = true;
            }
          } else {
            u.part = Upload::Part::kOther;
          }
          break;
        case PartEvents::Kind::kData:
          if (u.part == Upload::Part::kPath) {
            u.path_field += ev.data;
            if (u.path_field.size() > kMaxPathField) bad("path must be at most 4096 bytes");
          } else if (u.part == Upload::Part::kFile && u.streaming) {
            auto push = pipe->async_push(std::move(ev.data));
            if (!(co_await std::move(push))) {
              u.worker_gone = true;  // it failed: its error is the answer
              co_return;
            }
          } else if (u.part == Upload::Part::kFile) {
            if (u.buffered.size() + ev.data.size() > kMaxBufferedUpload)
              bad("send the path field before the file part for uploads over 8 MiB");
            u.buffered += ev.data;
          }
          break;
        case PartEvents::Kind::kEnd:
          if (u.part == Upload::Part::kPath) {
            check_sandbox_path(u.path_field);
            u.path = std::move(u.path_field);
          } else if (u.part == Upload::Part::kFile) {
            u.file_done = true;
            if (u.streaming) pipe->close();
          }
          u.part = Upload::Part::kNone;
          break;
      }
    }
  }
  if (!u.path) bad("path is required");
  if (!u.file_seen) bad("file is required");
  if (u.buffering) {  // the path came after the file: send what was held
    start_writer(ctx, pipe, client, id, *u.path);
    u.streaming = true;
    auto push = pipe->async_push(std::move(u.buffered));
    if (!(co_await std::move(push))) u.worker_gone = true;
    pipe->close();
  }
}

asio::awaitable<void> upload(ServerContext& ctx, RequestContext& rc, bool path_first) {
  auto load = load_capsule(ctx, rc);
  store::Capsule c = co_await std::move(load);
  if (c.status != "running") throw_not_in_status(c, "running");
  http::Exchange& ex = rc.exchange();
  http::MultipartParser parser(boundary_of(ex));
  std::shared_ptr<HostClient> client = host_for(ctx, c);
  auto pipe = std::make_shared<ChunkPipe>(kPipeChunks);
  Upload u;

  std::exception_ptr failure;
  try {
    auto pump = pump_upload(ctx, ex, parser, u, pipe, client, c.id, path_first);
    co_await std::move(pump);
  } catch (...) {
    failure = std::current_exception();
  }
  if (!u.streaming) {
    if (failure) std::rethrow_exception(failure);
    bad("file is required");  // not reached: pump_upload starts the writer or throws
  }
  // An incomplete or invalid body must not become the file: abort before the writer
  // reads the end of the stream.
  if (failure) pipe->abort();
  auto done = pipe->wait_finished();
  std::exception_ptr worker_failure = co_await std::move(done);
  if (worker_failure && (u.worker_gone || !failure)) std::rethrow_exception(worker_failure);
  if (failure) std::rethrow_exception(failure);
  auto send = rc.send_empty();
  co_await std::move(send);
}

asio::awaitable<void> list_dir(ServerContext& ctx, RequestContext& rc) {
  auto load = load_capsule(ctx, rc);
  store::Capsule c = co_await std::move(load);
  if (c.status != "running") throw_not_in_status(c, "running");
  auto body_task = rc.json_body();
  json::object body = co_await std::move(body_task);
  const std::string path = parse_path(body);
  const std::uint32_t depth = parse_depth(body);
  auto client = host_for(ctx, c);
  auto task = run_blocking(ctx.workers, [&] {
    return agent_call([&] { return client->list_dir(c.id, path, depth, kFileOpTimeout); });
  });
  std::vector<FileEntry> entries = co_await std::move(task);
  json::array a;
  a.reserve(entries.size());
  for (const auto& e : entries) a.push_back(file_entry_json(e));
  json::object o;
  o["entries"] = std::move(a);
  auto send = rc.send_json(bhttp::status::ok, o);
  co_await std::move(send);
}

// An existing path is 409 conflict (already_exists from envd): the SDK's make_dir relies on
// it.
asio::awaitable<void> make_dir(ServerContext& ctx, RequestContext& rc) {
  auto load = load_capsule(ctx, rc);
  store::Capsule c = co_await std::move(load);
  if (c.status != "running") throw_not_in_status(c, "running");
  auto body_task = rc.json_body();
  json::object body = co_await std::move(body_task);
  const std::string path = parse_path(body);
  auto client = host_for(ctx, c);
  auto task = run_blocking(ctx.workers, [&] {
    return agent_call([&] { return client->make_dir(c.id, path, kFileOpTimeout); });
  });
  FileEntry e = co_await std::move(task);
  json::object o;
  o["entry"] = file_entry_json(e);
  auto send = rc.send_json(bhttp::status::ok, o);
  co_await std::move(send);
}

asio::awaitable<void> remove_path(ServerContext& ctx, RequestContext& rc) {
  auto load = load_capsule(ctx, rc);
  store::Capsule c = co_await std::move(load);
  if (c.status != "running") throw_not_in_status(c, "running");
  auto body_task = rc.json_body();
  json::object body = co_await std::move(body_task);
  const std::string path = parse_path(body);
  auto client = host_for(ctx, c);
  auto task = run_blocking(
      ctx.workers, [&] { agent_call([&] { client->remove(c.id, path, kFileOpTimeout); }); });
  co_await std::move(task);
  auto send = rc.send_empty();
  co_await std::move(send);
}

}  // namespace

namespace capsule_routes {

void register_file_routes(ServerContext& ctx) {
  Router& r = ctx.router;
  ServerContext* c = &ctx;
  r.add(bhttp::verb::post, "/v1/capsules/{id}/files/write", Access::kTeam,
        [c](RequestContext& rc) { return upload(*c, rc, false); });
  r.add(bhttp::verb::post, "/v1/capsules/{id}/files/stream/write", Access::kTeam,
        [c](RequestContext& rc) { return upload(*c, rc, true); });
  r.add(bhttp::verb::post, "/v1/capsules/{id}/files/read", Access::kTeam,
        [c](RequestContext& rc) { return download(*c, rc); });
  r.add(bhttp::verb::post, "/v1/capsules/{id}/files/stream/read", Access::kTeam,
        [c](RequestContext& rc) { return download(*c, rc); });
  r.add(bhttp::verb::post, "/v1/capsules/{id}/files/list", Access::kTeam,
        [c](RequestContext& rc) { return list_dir(*c, rc); });
  r.add(bhttp::verb::post, "/v1/capsules/{id}/files/mkdir", Access::kTeam,
        [c](RequestContext& rc) { return make_dir(*c, rc); });
  r.add(bhttp::verb::post, "/v1/capsules/{id}/files/remove", Access::kTeam,
        [c](RequestContext& rc) { return remove_path(*c, rc); });
}

}  // namespace capsule_routes
}  // namespace wrenn::cp
