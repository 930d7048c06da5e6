// envd's plain HTTP endpoints: /health, /metrics, /envs, /init, /snapshot/prepare,
// access-token enforcement, CORS.
#include <sys/stat.h>

#include <boost/asio/io_context.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <catch2/catch.hpp>
#include <thread>

#include "connect/client.h"
#include "envd/process.pb.h"
#include "envd_fixture.h"
#include "error.h"

using namespace wrenn;
namespace bhttp = boost::beast::http;
namespace json = boost::json;

namespace {

test::Response init(unsigned short port, const std::string& body, const std::map<std::string, std::string>& h = {}) {
  auto headers = h;
  headers["Content-Type"] = "application/json";
  return test::http_request(port, bhttp::verb::post, "/init", body, headers);
}

std::string run(unsigned short port, const std::string& shell, const connect::Headers& h = {}) {
  connect::Client c("127.0.0.1", port, connect::Codec::kJson);
  process::StartRequest req;
  req.mutable_process()->set_cmd("/bin/sh");
  req.mutable_process()->add_args("-c");
  req.mutable_process()->add_args(shell);
  auto s = c.server_stream("/process.Process/Start", req, h);
  process::StartResponse r;
  std::string out;
  while (s->next(r))
    if (r.event().has_data()) out += r.event().data().stdout() + r.event().data().stderr();
  return out;
}

}  // namespace

TEST_CASE("/health, /metrics and /envs") {
  test::EnvdProcess envd;
  auto h = test::http_request(envd.port(), bhttp::verb::get, "/health");
  CHECK(h.result_int() == 200);
  CHECK(h[bhttp::field::cache_control] == "no-store");
  CHECK(json::parse(h.body()).at("version").is_string());

  std::this_thread::sleep_for(std::chrono::milliseconds(1100));  // one CPU sample
  auto m = test::http_request(envd.port(), bhttp::verb::get, "/metrics");
  REQUIRE(m.result_int() == 200);
  auto mo = json::parse(m.body()).as_object();
  for (auto key : {"ts", "cpu_count", "cpu_used_pct", "mem_total_mib", "mem_used_mib", "mem_total", "mem_used",
                   "disk_used", "disk_total"})
    CHECK(mo.contains(key));
  CHECK(mo.at("cpu_count").to_number<int>() >= 1);
  CHECK(mo.at("mem_total").to_number<double>() > mo.at("mem_used").to_number<double>());
  CHECK(mo.at("disk_total").to_number<double>() > 0);

  auto e = test::http_request(envd.port(), bhttp::verb::get, "/envs");
  CHECK(json::parse(e.body()).at("WRENN_SANDBOX") == "true");
  CHECK(test::http_request(envd.port(), bhttp::verb::get, "/nope").result_int() == 404);
  CHECK(test::http_request(envd.port(), bhttp::verb::delete_, "/metrics").result_int() == 405);
}

TEST_CASE("/init defaultUser and defaultWorkdir apply to later processes") {
  test::EnvdProcess envd;
  test::TempDir dir;
  ::chmod(dir.path().c_str(), 0777);
  CHECK(run(envd.port(), "id -un; pwd") == "root\n/root\n");
  auto r = init(envd.port(), R"({"defaultUser":"nobody","defaultWorkdir":")" + dir.path() +
                                 R"(","envVars":{"GREETING":"hi there"}})");
  REQUIRE(r.result_int() == 204);
  CHECK(run(envd.port(), "id -un; pwd; echo $GREETING; touch made-here; stat -c %U made-here") ==
        "nobody\n" + dir.path() + "\nhi there\nnobody\n");
  // Relative cwd resolves against the workdir; Basic auth still overrides the user.
  CHECK(run(envd.port(), "id -un", {{"Authorization", "Basic cm9vdDo="}}) == "root\n");
  auto envs = json::parse(test::http_request(envd.port(), bhttp::verb::get, "/envs").body());
  CHECK(envs.at("GREETING") == "hi there");
}

TEST_CASE("/init rejects bad input without changing anything") {
  test::EnvdProcess envd;
  CHECK(init(envd.port(), "{not json").result_int() == 400);
  CHECK(init(envd.port(), "[1]").result_int() == 400);
  auto r = init(envd.port(), R"({"defaultUser":"no-such-user","envVars":{"A":"1"}})");
  CHECK(r.result_int() == 400);
  CHECK(r.body().find("no-such-user") != std::string::npos);
  CHECK(init(envd.port(), R"({"defaultWorkdir":"relative/dir"})").result_int() == 400);
  CHECK(init(envd.port(), R"({"defaultWorkdir":"/a/../b"})").result_int() == 400);
  CHECK(init(envd.port(), R"({"envVars":{"A":1}})").result_int() == 400);
  CHECK(init(envd.port(), R"({"timestamp":"yesterday"})").result_int() == 400);
  // Nothing from the rejected calls was applied.
  auto envs = json::parse(test::http_request(envd.port(), bhttp::verb::get, "/envs").body()).as_object();
  CHECK_FALSE(envs.contains("A"));
  CHECK(run(envd.port(), "id -un") == "root\n");
  CHECK(test::http_request(envd.port(), bhttp::verb::get, "/init").result_int() == 405);
}

TEST_CASE("/init timestamps: stale calls are ignored, seconds and RFC 3339 both understood") {
  test::EnvdProcess envd;
  CHECK(init(envd.port(), R"({"timestamp":"2026-01-01T00:00:10Z","envVars":{"V":"1"}})").result_int() == 204);
  // Older (seconds form) -> ignored.
  CHECK(init(envd.port(), R"({"timestamp":1767225605,"envVars":{"V":"old"}})").result_int() == 204);
  auto envs = json::parse(test::http_request(envd.port(), bhttp::verb::get, "/envs").body());
  CHECK(envs.at("V") == "1");
  // Newer, with an offset -> applied.
  CHECK(init(envd.port(), R"({"timestamp":"2026-01-01T01:00:11+01:00","envVars":{"V":"2"}})").result_int() == 204);
  envs = json::parse(test::http_request(envd.port(), bhttp::verb::get, "/envs").body());
  CHECK(envs.at("V") == "2");
  CHECK(init(envd.port(), R"({"timestamp":"1767225612.5","envVars":{"V":"3"}})").result_int() == 204);
  envs = json::parse(test::http_request(envd.port(), bhttp::verb::get, "/envs").body());
  CHECK(envs.at("V") == "3");
}

TEST_CASE("access token: every endpoint but /health requires it once set") {
  test::EnvdProcess envd;
  REQUIRE(init(envd.port(), R"({"accessToken":"s3cret"})").result_int() == 204);
  CHECK(test::http_request(envd.port(), bhttp::verb::get, "/health").result_int() == 200);
  CHECK(test::http_request(envd.port(), bhttp::verb::get, "/metrics").result_int() == 401);
  CHECK(test::http_request(envd.port(), bhttp::verb::get, "/envs").result_int() == 401);
  CHECK(test::http_request(envd.port(), bhttp::verb::get, "/envs", "", {{"X-Access-Token", "wrong"}}).result_int() ==
        401);
  CHECK(test::http_request(envd.port(), bhttp::verb::get, "/envs", "", {{"X-Access-Token", "s3cret"}}).result_int() ==
        200);
  // RPCs too (the upstream left them open).
  connect::Client c("127.0.0.1", envd.port());
  process::ListResponse list;
  try {
    c.unary("/process.Process/List", process::ListRequest{}, list);
    FAIL("expected unauthenticated");
  } catch (const Error& e) {
    CHECK(e.code() == Code::kUnauthenticated);
  }
  c.default_headers()["X-Access-Token"] = "s3cret";
  c.unary("/process.Process/List", process::ListRequest{}, list);
  CHECK(run(envd.port(), "echo ok", {{"X-Access-Token", "s3cret"}}) == "ok\n");
  // Streams answer unauthenticated in the end-of-stream message.
  try {
    run(envd.port(), "echo no");
    FAIL("expected unauthenticated");
  } catch (const Error& e) {
    CHECK(e.code() == Code::kUnauthenticated);
  }
  // /init: a stranger cannot replace or clear the token; the holder can rotate it.
  CHECK(init(envd.port(), R"({"accessToken":"mine"})").result_int() == 401);
  CHECK(init(envd.port(), R"({"accessToken":""})").result_int() == 401);
  CHECK(init(envd.port(), R"({"defaultUser":"nobody"})").result_int() == 401);
  CHECK(init(envd.port(), R"({"accessToken":"s3cret"})").result_int() == 204);  // same token
  CHECK(init(envd.port(), R"({"accessToken":"next"})", {{"X-Access-Token", "s3cret"}}).result_int() == 204);
  CHECK(test::http_request(envd.port(), bhttp::verb::get, "/envs", "", {{"X-Access-Token", "s3cret"}}).result_int() ==
        401);
  CHECK(test::http_request(envd.port(), bhttp::verb::get, "/envs", "", {{"X-Access-Token", "next"}}).result_int() ==
        200);
}

TEST_CASE("CORS preflight") {
  test::EnvdProcess envd;
  auto r = test::http_request(envd.port(), bhttp::verb::options, "/process.Process/Start", "",
                              {{"Origin", "https://example.com"}, {"Access-Control-Request-Method", "POST"}});
  CHECK(r.result_int() == 204);
  CHECK(r[bhttp::field::access_control_allow_origin] == "*");
}

TEST_CASE("/snapshot/prepare closes idle connections and stale ones after restore") {
  test::EnvdProcess envd;
  boost::asio::io_context io;
  auto connect = [&] {
    boost::beast::tcp_stream s(io);
    s.connect(boost::asio::ip::tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), envd.port()));
    return s;
  };
  auto get = [&](boost::beast::tcp_stream& s, const std::string& target, boost::system::error_code& ec) {
    bhttp::request<bhttp::empty_body> req{bhttp::verb::get, target, 11};
    req.set(bhttp::field::host, "x");
    bhttp::write(s, req, ec);
    bhttp::response<bhttp::string_body> res;
    boost::beast::flat_buffer buf;
    if (!ec) bhttp::read(s, buf, res, ec);
    return res;
  };
  boost::system::error_code ec;
  auto idle = connect();
  get(idle, "/health", ec);
  REQUIRE_FALSE(ec);  // idle keep-alive connection

  auto r = test::http_request(envd.port(), bhttp::verb::post, "/snapshot/prepare");
  CHECK(r.result_int() == 204);
  CHECK_FALSE(r.keep_alive());
  // The idle connection was closed by envd.
  get(idle, "/health", ec);
  CHECK(ec);
  // While prepared, responses do not keep connections alive.
  auto during = connect();
  auto res = get(during, "/health", ec);  // /health after prepare = restore
  REQUIRE_FALSE(ec);
  // After the restore, keep-alive works again.
  auto after = connect();
  res = get(after, "/envs", ec);
  REQUIRE_FALSE(ec);
  CHECK(res.keep_alive());
  get(after, "/envs", ec);
  CHECK_FALSE(ec);
}

TEST_CASE("/init defaultUser and defaultWorkdir apply to /files and to file ownership") {
  test::EnvdProcess envd;
  test::TempDir dir;
  ::chmod(dir.path().c_str(), 0777);
  REQUIRE(init(envd.port(), R"({"defaultUser":"nobody","defaultWorkdir":")" + dir.path() + R"("})").result_int() ==
          204);
  std::string body =
      "--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"ignored\"\r\n\r\nhello\r\n--XyZ--\r\n";
  // A relative path lands in the default workdir, owned by the default user.
  auto r = test::http_request(envd.port(), bhttp::verb::post, "/files?path=sub/note.txt", body,
                              {{"Content-Type", "multipart/form-data; boundary=XyZ"}});
  REQUIRE(r.result_int() == 200);
  struct stat st {};
  REQUIRE(::stat((dir.path() + "/sub/note.txt").c_str(), &st) == 0);
  CHECK(st.st_uid == 65534);
  REQUIRE(::stat((dir.path() + "/sub").c_str(), &st) == 0);
  CHECK(st.st_uid == 65534);
  auto g = test::http_request(envd.port(), bhttp::verb::get, "/files?path=sub/note.txt");
  CHECK(g.result_int() == 200);
  CHECK(g.body() == "hello");
  // "~" is the default user's home, not root's.
  auto home = test::http_request(envd.port(), bhttp::verb::get, "/files?path=~/x");
  CHECK(home.result_int() == 404);
  CHECK(home.body().find("/nonexistent/x") != std::string::npos);
}
