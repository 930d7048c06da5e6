// The capsule routes' pure pieces (wire shapes, request validation), the chunk pipe that
// streams file transfers, and the capsule SQL against a throwaway PostgreSQL.
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_future.hpp>
#include <catch2/catch.hpp>
#include <thread>

#include "api/api_error.h"
#include "api/capsule_json.h"
#include "api/chunk_pipe.h"
#include "api/port_proxy.h"
#include "crypto/encoding.h"
#include "crypto/ids.h"
#include "pg/migrate.h"
#include "pg_fixture.h"
#include "store/capsules.h"

using namespace wrenn;
using namespace wrenn::cp;
namespace json = boost::json;
namespace asio = boost::asio;

namespace {

// The ApiCode f() throws (fails the test when it throws none or something else).
ApiCode api_code_of(const std::function<void()>& f, std::string* message = nullptr) {
  try {
    f();
  } catch (const ApiError& e) {
    if (message) *message = e.what();
    return e.code();
  }
  FAIL("no ApiError thrown");
  return ApiCode::kInternalError;
}

json::object obj(std::string_view text) {
  return json::parse(text).as_object();
}

store::Capsule sample_capsule() {
  store::Capsule c;
  c.id = "cl-0000000000000000000000001";
  c.team_id = "team-0000000000000000000000001";
  c.template_name = "minimal";
  c.status = "running";
  c.vcpus = 2;
  c.memory_mb = 1024;
  c.timeout_sec = 300;
  c.created_at = 1777636800;  // 2026-05-01T12:00:00Z
  c.last_updated = 1777636801;
  return c;
}

}  // namespace

TEST_CASE("capsule json: RFC 3339 seconds with nullables omitted and metadata only when present") {
  CHECK(rfc3339(0) == "1970-01-01T00:00:00Z");
  CHECK(rfc3339(1777636800) == "2026-05-01T12:00:00Z");

  store::Capsule c = sample_capsule();
  json::object o = capsule_json(c);
  CHECK(o.at("id") == "cl-0000000000000000000000001");
  CHECK(o.at("status") == "running");
  CHECK(o.at("template") == "minimal");
  CHECK(o.at("vcpus").as_int64() == 2);
  CHECK(o.at("memory_mb").as_int64() == 1024);
  CHECK(o.at("timeout_sec").as_int64() == 300);
  CHECK(o.at("created_at") == "2026-05-01T12:00:00Z");
  CHECK(o.at("last_updated") == "2026-05-01T12:00:01Z");
  for (auto key : {"started_at", "last_active_at", "host_ip", "guest_ip", "metadata"})
    CHECK_FALSE(o.contains(key));

  c.started_at = 1777636802;
  c.last_active_at = 1777636803;
  c.host_ip = "10.11.0.3";
  c.metadata = R"({"runtime":"ns"})";
  o = capsule_json(c);
  CHECK(o.at("started_at") == "2026-05-01T12:00:02Z");
  CHECK(o.at("last_active_at") == "2026-05-01T12:00:03Z");
  CHECK(o.at("host_ip") == "10.11.0.3");
  CHECK(o.at("metadata").at("runtime") == "ns");

  json::array list = capsules_json({c, sample_capsule()});
  CHECK(list.size() == 2);
}

TEST_CASE("file entry and process and exec json shapes") {
  FileEntry e;
  e.name = "a.txt";
  e.path = "/tmp/a.txt";
  e.type = FileType::kFile;
  e.size = 5;
  e.mode = 0644;
  e.permissions = "-rw-r--r--";
  e.owner = "root";
  e.group = "root";
  e.modified_at = 1777636800;
  json::object o = file_entry_json(e);
  CHECK(o.at("name") == "a.txt");
  CHECK(o.at("path") == "/tmp/a.txt");
  CHECK(o.at("type") == "file");
  CHECK(o.at("size").as_int64() == 5);
  CHECK(o.at("mode").to_number<std::int64_t>() == 0644);
  CHECK(o.at("permissions") == "-rw-r--r--");
  CHECK(o.at("owner") == "root");
  CHECK(o.at("group") == "root");
  CHECK(o.at("modified_at").as_int64() == 1777636800);
  CHECK_FALSE(o.contains("symlink_target"));
  e.type = FileType::kSymlink;
  e.symlink_target = "/etc/hosts";
  o = file_entry_json(e);
  CHECK(o.at("type") == "symlink");
  CHECK(o.at("symlink_target") == "/etc/hosts");
  e.type = FileType::kDirectory;
  CHECK(file_entry_json(e).at("type") == "directory");

  ProcessInfo p;
  p.pid = 42;
  p.cmd = "/bin/sleep";
  o = process_json(p);
  CHECK(o.at("pid").to_number<std::int64_t>() == 42);
  CHECK(o.at("cmd") == "/bin/sleep");
  CHECK_FALSE(o.contains("tag"));
  CHECK_FALSE(o.contains("args"));
  p.tag = "bg";
  p.args = {"100"};
  o = process_json(p);
  CHECK(o.at("tag") == "bg");
  CHECK(o.at("args").as_array().size() == 1);

  ExecResult r;
  r.stdout_data = "héllo\n";
  r.stderr_data = "warn\n";
  r.exit_code = 3;
  r.duration = std::chrono::milliseconds(12);
  o = exec_result_json("cl-x", "/bin/sh", r);
  CHECK(o.at("sandbox_id") == "cl-x");
  CHECK(o.at("cmd") == "/bin/sh");
  CHECK(o.at("stdout") == "héllo\n");
  CHECK(o.at("stderr") == "warn\n");
  CHECK(o.at("exit_code").as_int64() == 3);
  CHECK(o.at("duration_ms").as_int64() == 12);
  CHECK(o.at("encoding") == "utf-8");
  CHECK_FALSE(o.contains("stdout_truncated"));

  // One binary stream turns both into base64.
  r.stdout_data = std::string("\x00\xff\xfe", 3);
  r.stdout_truncated = true;
  o = exec_result_json("cl-x", "/bin/sh", r);
  CHECK(o.at("encoding") == "base64");
  CHECK(crypto::base64_decode(std::string(o.at("stdout").as_string())) == r.stdout_data);
  CHECK(crypto::base64_decode(std::string(o.at("stderr").as_string())) == "warn\n");
  CHECK(o.at("stdout_truncated") == true);
}

TEST_CASE("valid_utf8 is strict") {
  CHECK(valid_utf8(""));
  CHECK(valid_utf8("plain ascii"));
  CHECK(valid_utf8("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"));  // é € 😀
  CHECK_FALSE(valid_utf8("\xff"));
  CHECK_FALSE(valid_utf8("\xc0\xaf"));          // overlong '/'
  CHECK_FALSE(valid_utf8("\xe0\x80\xaf"));      // overlong
  CHECK_FALSE(valid_utf8("\xed\xa0\x80"));      // surrogate U+D800
  CHECK_FALSE(valid_utf8("\xf4\x90\x80\x80"));  // above U+10FFFF
  CHECK_FALSE(valid_utf8("\xc3"));              // truncated
  CHECK_FALSE(valid_utf8("\xe2\x82"));          // truncated
}

TEST_CASE("create request: defaults and bounds and template names") {
  CreateCapsuleRequest r = parse_create_request(obj("{}"));
  CHECK(r.template_name == "minimal");
  CHECK(r.vcpus == 1);
  CHECK(r.memory_mb == 512);
  CHECK(r.timeout_sec == 0);

  r = parse_create_request(
      obj(R"({"template":"py-3.12_x","vcpus":2,"memory_mb":1024,"timeout_sec":60,"extra":1})"));
  CHECK(r.template_name == "py-3.12_x");
  CHECK(r.vcpus == 2);
  CHECK(r.memory_mb == 1024);
  CHECK(r.timeout_sec == 60);
  // 0 and null mean the default, as upstream; 2.0 is an integer.
  r = parse_create_request(obj(R"({"vcpus":0,"memory_mb":null,"template":"","timeout_sec":2.0})"));
  CHECK(r.vcpus == 1);
  CHECK(r.memory_mb == 512);
  CHECK(r.template_name == "minimal");
  CHECK(r.timeout_sec == 2);

  std::string msg;
  CHECK(api_code_of([] { parse_create_request(obj(R"({"vcpus":-1})")); }, &msg) ==
        ApiCode::kInvalidRequest);
  CHECK(msg == "vcpus must be between 0 and 64");
  CHECK(api_code_of([] { parse_create_request(obj(R"({"vcpus":65})")); }) ==
        ApiCode::kInvalidRequest);
  CHECK(api_code_of([] { parse_create_request(obj(R"({"vcpus":"2"})")); }, &msg) ==
        ApiCode::kInvalidRequest);
  CHECK(msg == "vcpus must be an integer");
  CHECK(api_code_of([] { parse_create_request(obj(R"({"vcpus":1.5})")); }) ==
        ApiCode::kInvalidRequest);
  CHECK(api_code_of([] { parse_create_request(obj(R"({"memory_mb":64})")); }, &msg) ==
        ApiCode::kInvalidRequest);
  CHECK(msg == "memory_mb must be between 128 and 262144");
  CHECK(api_code_of([] { parse_create_request(obj(R"({"memory_mb":18446744073709551615})")); }) ==
        ApiCode::kInvalidRequest);
  CHECK(api_code_of([] { parse_create_request(obj(R"({"timeout_sec":-5})")); }) ==
        ApiCode::kInvalidRequest);
  CHECK(api_code_of([] { parse_create_request(obj(R"({"template":"../etc"})")); }) ==
        ApiCode::kInvalidRequest);
  CHECK(api_code_of([] { parse_create_request(obj(R"({"template":7})")); }) ==
        ApiCode::kInvalidRequest);

  CHECK(valid_template_name("minimal"));
  CHECK(valid_template_name("A"));
  CHECK(valid_template_name(std::string(64, 'a')));
  CHECK_FALSE(valid_template_name(std::string(65, 'a')));
  CHECK_FALSE(valid_template_name("-x"));
  CHECK_FALSE(valid_template_name(".x"));
  CHECK_FALSE(valid_template_name("a/b"));
  CHECK_FALSE(valid_template_name("a b"));

  // Bodies that create the same capsule hash alike; others do not.
  CHECK(create_request_hash(parse_create_request(obj("{}"))) ==
        create_request_hash(parse_create_request(obj(R"({"template":"minimal","vcpus":1})"))));
  CHECK(create_request_hash(parse_create_request(obj("{}"))) !=
        create_request_hash(parse_create_request(obj(R"({"vcpus":2})"))));
}

TEST_CASE("exec request validation") {
  ExecParams p = parse_exec_request(obj(R"({"cmd":"/bin/sh","args":["-c","echo hi"]})"));
  CHECK(p.cmd == "/bin/sh");
  CHECK(p.args == std::vector<std::string>{"-c", "echo hi"});
  CHECK(p.timeout_sec == 30);
  CHECK_FALSE(p.background);
  CHECK(p.tag.empty());

  p = parse_exec_request(obj(
      R"({"cmd":"env","envs":{"A":"1","B":""},"cwd":"/tmp","timeout_sec":600,"background":true,"tag":"bg-test"})"));
  CHECK(p.envs.at("A") == "1");
  CHECK(p.envs.at("B").empty());
  CHECK(p.cwd == "/tmp");
  CHECK(p.timeout_sec == 600);  // no cap beyond the caller's
  CHECK(p.background);
  CHECK(p.tag == "bg-test");
  CHECK(parse_exec_request(obj(R"({"cmd":"x","timeout_sec":0})")).timeout_sec == 30);

  for (auto bad : {R"({})", R"({"cmd":""})", R"({"cmd":5})", R"({"cmd":"x","args":"-c"})",
                   R"({"cmd":"x","args":[1]})", R"({"cmd":"x","envs":[]})",
                   R"({"cmd":"x","envs":{"A":1}})", R"({"cmd":"x","envs":{"A=B":"1"}})",
                   R"({"cmd":"x","timeout_sec":-1})", R"({"cmd":"x","background":"yes"})",
                   R"({"cmd":"x","tag":"123"})", R"({"cmd":"x","cwd":3})"}) {
    INFO(bad);
    CHECK(api_code_of([&] { parse_exec_request(obj(bad)); }) == ApiCode::kInvalidRequest);
  }
}

TEST_CASE("paths and depth and process selectors") {
  CHECK(parse_path(obj(R"({"path":"/tmp/a b/c"})")) == "/tmp/a b/c");
  CHECK(parse_path(obj(R"({"path":"/tmp/../etc/hosts"})")) == "/tmp/../etc/hosts");
  std::string msg;
  CHECK(api_code_of([] { parse_path(obj("{}")); }, &msg) == ApiCode::kInvalidRequest);
  CHECK(msg == "path is required");
  CHECK(api_code_of([] { parse_path(obj(R"({"path":""})")); }) == ApiCode::kInvalidRequest);
  CHECK(api_code_of([] { parse_path(obj(R"({"path":"tmp/a"})")); }, &msg) ==
        ApiCode::kInvalidRequest);
  CHECK(msg == "path must be absolute (start with '/')");
  CHECK(api_code_of([] { parse_path(obj(R"({"path":"/a\u0000b"})")); }, &msg) ==
        ApiCode::kInvalidRequest);
  CHECK(msg == "path must not contain NUL bytes");
  CHECK(api_code_of([] { parse_path(obj(R"({"path":7})")); }) == ApiCode::kInvalidRequest);

  CHECK(parse_depth(obj("{}")) == 0);
  CHECK(parse_depth(obj(R"({"depth":2})")) == 2);
  CHECK(api_code_of([] { parse_depth(obj(R"({"depth":-1})")); }) == ApiCode::kInvalidRequest);

  CHECK(std::get<std::uint32_t>(parse_process_selector("1234")) == 1234);
  CHECK(std::get<std::string>(parse_process_selector("bg-test")) == "bg-test");
  CHECK(std::get<std::string>(parse_process_selector("99999999999")) == "99999999999");
  CHECK(std::get<std::string>(parse_process_selector("12a")) == "12a");
}

namespace {

// Runs coroutine f on a one-thread io_context and returns when it is done.
template <class F>
void run_io(F f) {
  asio::io_context io;
  auto fut = asio::co_spawn(io, std::move(f), asio::use_future);
  io.run();
  fut.get();
}

}  // namespace

TEST_CASE("chunk pipe: download direction is bounded and ordered and errors reach the reader") {
  asio::thread_pool worker(1);
  constexpr std::size_t kChunks = 4096;  // 256 MiB of 64 KiB chunks, never held at once
  const std::string chunk(64 * 1024, 'x');
  auto pipe = std::make_shared<ChunkPipe>(4);
  asio::post(worker, [pipe, &chunk] {
    for (std::size_t i = 0; i < kChunks; ++i) {
      std::string c = chunk;
      c[0] = static_cast<char>('a' + i % 26);
      pipe->push(std::move(c));
    }
    pipe->finish(nullptr);
  });
  std::size_t got = 0;
  bool ordered = true;
  run_io([&]() -> asio::awaitable<void> {
    for (;;) {
      auto pop = pipe->async_pop();
      auto c = co_await std::move(pop);
      if (!c) break;
      if ((*c)[0] != static_cast<char>('a' + got % 26) || c->size() != chunk.size())
        ordered = false;
      ++got;
    }
    auto done = pipe->wait_finished();
    auto e = co_await std::move(done);
    CHECK_FALSE(e);
  });
  CHECK(got == kChunks);
  CHECK(ordered);
  CHECK(pipe->high_water() <= 4);

  // A failure after some chunks: the reader gets the chunks, then the error.
  auto failing = std::make_shared<ChunkPipe>(2);
  asio::post(worker, [failing] {
    failing->push("one");
    failing->finish(std::make_exception_ptr(Error(Code::kNotFound, "no such file")));
  });
  std::vector<std::string> seen;
  std::exception_ptr err;
  run_io([&]() -> asio::awaitable<void> {
    for (;;) {
      auto pop = failing->async_pop();
      auto c = co_await std::move(pop);
      if (!c) break;
      seen.push_back(*c);
    }
    auto done = failing->wait_finished();
    err = co_await std::move(done);
  });
  CHECK(seen == std::vector<std::string>{"one"});
  REQUIRE(err);
  CHECK(test::error_code_of([&] { std::rethrow_exception(err); }) == Code::kNotFound);
  worker.join();
}

TEST_CASE("chunk pipe: upload direction ends on close and abort unblocks the worker") {
  asio::thread_pool worker(1);
  auto pipe = std::make_shared<ChunkPipe>(4);
  std::size_t total = 0;
  asio::post(worker, [pipe, &total] {
    for (;;) {
      std::string c = pipe->pop();
      if (c.empty()) break;
      total += c.size();
      std::this_thread::sleep_for(std::chrono::microseconds(50));  // a slow host
    }
    pipe->finish(nullptr);
  });
  run_io([&]() -> asio::awaitable<void> {
    for (int i = 0; i < 2000; ++i) {
      auto push = pipe->async_push(std::string(1000, 'y'));
      bool ok = co_await std::move(push);
      CHECK(ok);
    }
    pipe->close();
    auto done = pipe->wait_finished();
    auto e = co_await std::move(done);
    CHECK_FALSE(e);
  });
  CHECK(total == 2000 * 1000);
  CHECK(pipe->high_water() <= 4);

  // The I/O side gives up: the worker blocked in pop() gets kCanceled.
  auto aborted = std::make_shared<ChunkPipe>(4);
  asio::post(worker, [aborted] {
    try {
      for (;;)
        if (aborted->pop().empty()) break;
      aborted->finish(nullptr);
    } catch (...) {
      aborted->finish(std::current_exception());
    }
  });
  std::exception_ptr err;
  run_io([&]() -> asio::awaitable<void> {
    auto push = aborted->async_push("partial");
    co_await std::move(push);
    aborted->abort();
    auto done = aborted->wait_finished();
    err = co_await std::move(done);
  });
  REQUIRE(err);
  CHECK(test::error_code_of([&] { std::rethrow_exception(err); }) == Code::kCanceled);

  // The worker fails while the I/O side pushes: async_push says stop.
  auto failing = std::make_shared<ChunkPipe>(1);
  asio::post(worker, [failing] {
    failing->finish(std::make_exception_ptr(Error(Code::kResourceExhausted, "disk full")));
  });
  run_io([&]() -> asio::awaitable<void> {
    bool ok = true;
    for (int i = 0; i < 100 && ok; ++i) {
      auto push = failing->async_push("data");
      ok = co_await std::move(push);
    }
    CHECK_FALSE(ok);
    auto done = failing->wait_finished();
    auto e = co_await std::move(done);
    CHECK(e);
  });

  // A download reader that gives up unblocks a worker waiting for room.
  auto stuck = std::make_shared<ChunkPipe>(1);
  asio::post(worker, [stuck] {
    try {
      for (;;) stuck->push("chunk");
    } catch (...) {
      stuck->finish(std::current_exception());
    }
  });
  run_io([&]() -> asio::awaitable<void> {
    auto pop = stuck->async_pop();
    auto c = co_await std::move(pop);
    CHECK(c);
    stuck->abort();
    auto done = stuck->wait_finished();
    auto e = co_await std::move(done);
    CHECK(e);
  });
  worker.join();
}

namespace {

struct Db {
  test::PgServer server;
  std::unique_ptr<pg::Pool> pool = server.make_pool();
  Db() {
    pg::migrate(*pool);
    auto c = pool->acquire();
    c->exec("INSERT INTO teams (id, name, slug) VALUES ($1, 'A', 'team-a'), ($2, 'B', 'team-b')",
            kTeamA, kTeamB);
    c->exec(
        "INSERT INTO templates (id, team_id, name, type, vcpus, memory_mb, default_user, "
        "default_env) VALUES ($1, $2, 'mine', 'snapshot', 4, 2048, 'user', '{\"K\":\"V\"}')",
        "tmpl-000000000000000000000000a", kTeamA);
    c->exec("INSERT INTO hosts (id, address, status) VALUES ($1, '127.0.0.1:1', 'online')", kHost);
  }
  static constexpr const char* kTeamA = "team-000000000000000000000000a";
  static constexpr const char* kTeamB = "team-000000000000000000000000b";
  static constexpr const char* kHost = "host-0000000000000000000000001";
};

store::Capsule new_row(const char* team, std::optional<std::string> key = std::nullopt) {
  store::Capsule c;
  c.id = ids::new_id(ids::Kind::kCapsule);
  c.team_id = team;
  c.host_id = Db::kHost;
  c.template_name = "minimal";
  c.template_id = "tmpl-0000000000000000000000000";
  c.status = "pending";
  c.vcpus = 2;
  c.memory_mb = 1024;
  c.timeout_sec = 30;
  if (key) {
    c.idempotency_key = key;
    c.request_hash = "h1";
  }
  return c;
}

}  // namespace

TEST_CASE("capsule store: team scoping and status compare-and-set and list and idempotency") {
  Db db;
  auto lease = db.pool->acquire();
  pg::Connection& c = *lease;

  store::Capsule a = store::insert_capsule(c, new_row(Db::kTeamA));
  CHECK(a.status == "pending");
  CHECK(a.vcpus == 2);
  CHECK(a.memory_mb == 1024);
  CHECK(a.disk_size_mb == 5120);
  CHECK(a.timeout_sec == 30);
  CHECK(a.host_id == std::optional<std::string>(Db::kHost));
  CHECK(a.created_at > 1700000000);
  CHECK_FALSE(a.started_at);
  CHECK_FALSE(a.last_active_at);
  CHECK(a.metadata == "{}");

  // Another team sees nothing, whatever it tries.
  CHECK(store::get_capsule(c, Db::kTeamA, a.id));
  CHECK_FALSE(store::get_capsule(c, Db::kTeamB, a.id));
  CHECK_FALSE(store::set_status(c, Db::kTeamB, a.id, {"pending"}, "stopped"));
  CHECK_FALSE(store::mark_running(c, Db::kTeamB, a.id, "pending", "", "{}"));
  CHECK(store::list_capsules(c, Db::kTeamB).empty());

  // pending -> running carries the agent's view.
  CHECK_FALSE(store::touch_running(c, Db::kTeamA, a.id));
  auto r = store::mark_running(c, Db::kTeamA, a.id, "pending", "10.11.0.3", R"({"runtime":"ns"})");
  REQUIRE(r);
  CHECK(r->status == "running");
  CHECK(r->host_ip == "10.11.0.3");
  CHECK(r->started_at);
  CHECK(r->last_active_at);
  CHECK(json::parse(r->metadata).at("runtime") == "ns");
  CHECK_FALSE(store::mark_running(c, Db::kTeamA, a.id, "pending", "", "{}"));  // not pending now
  CHECK(store::touch_running(c, Db::kTeamA, a.id));

  // Compare-and-set: only from the named statuses.
  CHECK_FALSE(store::set_status(c, Db::kTeamA, a.id, {"paused"}, "running"));
  auto p = store::set_status(c, Db::kTeamA, a.id, {"running", "pending"}, "paused");
  REQUIRE(p);
  CHECK(p->status == "paused");
  CHECK_FALSE(store::touch_running(c, Db::kTeamA, a.id));

  // The list hides stopped and error capsules and puts the newest first.
  store::Capsule b = store::insert_capsule(c, new_row(Db::kTeamA));
  store::Capsule gone = store::insert_capsule(c, new_row(Db::kTeamA));
  store::Capsule failed = store::insert_capsule(c, new_row(Db::kTeamA));
  c.exec("UPDATE sandboxes SET created_at = now() + interval '1 second' WHERE id = $1", b.id);
  store::set_status(c, Db::kTeamA, gone.id, {"pending"}, "stopped");
  store::set_status(c, Db::kTeamA, failed.id, {"pending"}, "error");
  auto list = store::list_capsules(c, Db::kTeamA);
  REQUIRE(list.size() == 2);
  CHECK(list[0].id == b.id);
  CHECK(list[1].id == a.id);
  CHECK(store::get_capsule(c, Db::kTeamA, gone.id)->status == "stopped");  // still readable

  // Idempotency keys are per team; a duplicate is already_exists on the named index.
  store::Capsule k = store::insert_capsule(c, new_row(Db::kTeamA, "key-1"));
  CHECK(store::find_by_idempotency_key(c, Db::kTeamA, "key-1")->id == k.id);
  CHECK(store::find_by_idempotency_key(c, Db::kTeamA, "key-1")->request_hash ==
        std::optional<std::string>("h1"));
  CHECK_FALSE(store::find_by_idempotency_key(c, Db::kTeamB, "key-1"));
  store::insert_capsule(c, new_row(Db::kTeamB, "key-1"));
  try {
    store::insert_capsule(c, new_row(Db::kTeamA, "key-1"));
    FAIL("duplicate idempotency key accepted");
  } catch (const pg::SqlError& e) {
    CHECK(e.code() == Code::kAlreadyExists);
    CHECK(e.constraint() == "sandboxes_idempotency_key");
  }
}

TEST_CASE("capsule store: templates resolve in the team and then the platform") {
  Db db;
  auto lease = db.pool->acquire();
  auto minimal = store::find_template(*lease, Db::kTeamA, "minimal");
  REQUIRE(minimal);
  CHECK(minimal->platform());
  CHECK(minimal->type == "base");
  auto mine = store::find_template(*lease, Db::kTeamA, "mine");
  REQUIRE(mine);
  CHECK_FALSE(mine->platform());
  CHECK(mine->type == "snapshot");
  CHECK(mine->vcpus == 4);
  CHECK(mine->memory_mb == 2048);
  CHECK(mine->default_user == "user");
  CHECK(json::parse(mine->default_env).at("K") == "V");
  CHECK_FALSE(store::find_template(*lease, Db::kTeamB, "mine"));  // another team's
  CHECK_FALSE(store::find_template(*lease, Db::kTeamA, "nope"));
}

TEST_CASE("port proxy host names: port and capsule id parsed and the domain checked") {
  const std::string id = "cl-0123456789abcdefghijklmno";
  auto t = wrenn::cp::match_port_proxy_host("8080-" + id + ".wrenn.test:8000", "wrenn.test");
  REQUIRE(t);
  CHECK(t->port == 8080);
  CHECK(t->capsule_id == id);
  // Case-insensitive, with or without a port.
  t = wrenn::cp::match_port_proxy_host("3000-CL-0123456789ABCDEFGHIJKLMNO.Wrenn.Test",
                                       "wrenn.test");
  REQUIRE(t);
  CHECK(t->capsule_id == id);
  // Any domain when none is configured.
  CHECK(wrenn::cp::match_port_proxy_host("80-" + id + ".example.org", ""));
  // Out-of-range ports still match (the proxy answers 400 for them).
  t = wrenn::cp::match_port_proxy_host("70000-" + id + ".wrenn.test", "wrenn.test");
  REQUIRE(t);
  CHECK(t->port == 70000);
  // Not the proxy: the API's own host, another domain, malformed ids and ports.
  for (const std::string& host : std::vector<std::string>{
           std::string("127.0.0.1:8000"), std::string("wrenn.test"), "8080-" + id + ".other.test",
           "8080-" + id + ".wrenn.test.evil", "8080-cl-short.wrenn.test",
           "x80-" + id + ".wrenn.test", "8080-" + id, "-" + id + ".wrenn.test",
           "1234567-" + id + ".wrenn.test", "8080-usr-0123456789abcdefghijklmno.wrenn.test"})
    CHECK_FALSE(wrenn::cp::match_port_proxy_host(host, "wrenn.test"));
}
