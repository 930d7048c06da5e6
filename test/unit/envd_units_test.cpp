// envd pieces without a running server: users, paths, Basic auth, environment order.
#include <catch2/catch.hpp>

#include "error.h"
#include "paths.h"
#include "process_service.h"
#include "state.h"
#include "envd_fixture.h"
#include "users.h"

using namespace wrenn;
using namespace wrenn::envd;

TEST_CASE("UserDb reads passwd and group files, groups included") {
  test::TempDir dir;
  test::write_file(dir.path() + "/passwd",
                   "root:x:0:0:root:/root:/bin/sh\n# comment\nalice:x:1000:1000::/home/alice:/bin/bash\nbroken\n");
  test::write_file(dir.path() + "/group", "root:x:0:\nalice:x:1000:\ndocker:x:999:alice,bob\nwheel:x:10:alice\n");
  UserDb db(dir.path());
  auto alice = db.require("alice");
  CHECK(alice.uid == 1000);
  CHECK(alice.home == "/home/alice");
  CHECK(alice.groups == std::vector<gid_t>{1000, 999, 10});
  CHECK(db.user_name(1000) == "alice");
  CHECK(db.user_name(4242) == "4242");
  CHECK(db.group_name(999) == "docker");
  try {
    db.require("mallory");
    FAIL("expected unauthenticated");
  } catch (const Error& e) {
    CHECK(e.code() == Code::kUnauthenticated);
    CHECK(std::string(e.what()).find("mallory") != std::string::npos);
  }
}

TEST_CASE("resolve_path: home, ~, workdir, normalisation and rejection") {
  User u;
  u.name = "alice";
  u.home = "/home/alice";
  CHECK(resolve_path("", u, std::nullopt) == "/home/alice");
  CHECK(resolve_path("", u, std::string("/work")) == "/work");
  CHECK(resolve_path("~", u, std::string("/work")) == "/home/alice");
  CHECK(resolve_path("~/a//b/./c", u, std::nullopt) == "/home/alice/a/b/c");
  CHECK(resolve_path("rel/x", u, std::nullopt) == "/home/alice/rel/x");
  CHECK(resolve_path("rel/x", u, std::string("/work")) == "/work/rel/x");
  CHECK(resolve_path("/abs/", u, std::nullopt) == "/abs");
  CHECK(resolve_path("/", u, std::nullopt) == "/");
  CHECK_THROWS_AS(resolve_path("/a/../etc", u, std::nullopt), Error);
  CHECK_THROWS_AS(resolve_path(std::string("/a\0b", 4), u, std::nullopt), Error);
  CHECK_THROWS_AS(resolve_path("~bob/x", u, std::nullopt), Error);
  CHECK(base_name("/a/b.txt") == "b.txt");
  CHECK(parent_dir("/a/b.txt") == "/a");
  CHECK(parent_dir("/a") == "/");
}

TEST_CASE("Basic auth names the user") {
  CHECK_FALSE(State::basic_auth_user("").has_value());
  CHECK(State::basic_auth_user("Basic dXNlcjo=") == "user");      // "user:"
  CHECK(State::basic_auth_user("basic cm9vdDo=") == "root");      // "root:"
  CHECK(State::basic_auth_user("Basic YWxpY2U6cHc=") == "alice");  // "alice:pw"
  CHECK_THROWS_AS(State::basic_auth_user("Bearer abc"), Error);
  CHECK_THROWS_AS(State::basic_auth_user("Basic !!!"), Error);
  CHECK_THROWS_AS(State::basic_auth_user("Basic Og=="), Error);  // ":" names nobody
}

TEST_CASE("access token comparison") {
  State s;
  CHECK_FALSE(s.token_set());
  CHECK_FALSE(s.token_matches(""));
  s.set_token("secret");
  CHECK(s.token_matches("secret"));
  CHECK_FALSE(s.token_matches("secreT"));
  CHECK_FALSE(s.token_matches("secret2"));
}

TEST_CASE("process environment order: later entries win") {
  User u;
  u.name = "alice";
  u.home = "/home/alice";
  std::map<std::string, std::string> defaults{{"WRENN_SANDBOX", "true"}, {"HOME", "/override"}};
  google::protobuf::Map<std::string, std::string> req;
  req["PATH"] = "/custom";
  req["Z"] = "1";
  auto env = process_environment(u, defaults, req, false);
  REQUIRE(env.size() >= 6);
  CHECK(env[0] == std::pair<std::string, std::string>{"PATH", "/custom"});
  CHECK(env[1] == std::pair<std::string, std::string>{"HOME", "/override"});
  CHECK(env[2].first == "USER");
  CHECK(env[3].first == "LOGNAME");
  CHECK(env.back() == std::pair<std::string, std::string>{"Z", "1"});
}
