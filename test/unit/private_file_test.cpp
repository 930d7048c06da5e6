// private_file.h: 0600 whatever the umask, atomic replacement, create-once semantics, and
// nothing left behind on failure.
#include "private_file.h"

#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "envd_fixture.h"
#include "error.h"

namespace fs = std::filesystem;

namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

unsigned mode_of(const std::string& path) {
  struct stat st {};
  REQUIRE(::lstat(path.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

std::size_t entries(const std::string& dir) {
  return static_cast<std::size_t>(
      std::distance(fs::directory_iterator(dir), fs::directory_iterator()));
}

}  // namespace

TEST_CASE("private files are 0600 and replaced atomically whatever the umask") {
  wrenn::test::TempDir tmp;
  const std::string path = tmp.path() + "/secret";
  mode_t old = ::umask(0);
  wrenn::write_private_file(path, "one\n");
  ::umask(old);
  CHECK(slurp(path) == "one\n");
  CHECK(mode_of(path) == 0600);

  // Replacing a group-readable file leaves a 0600 one; no temporary remains.
  ::chmod(path.c_str(), 0644);
  wrenn::write_private_file(path, "two\n", {.fsync = true, .owner = {}});
  CHECK(slurp(path) == "two\n");
  CHECK(mode_of(path) == 0600);
  CHECK(entries(tmp.path()) == 1);

  // A symlink at the path is replaced, never written through.
  const std::string target = tmp.path() + "/elsewhere";
  { std::ofstream(target) << "untouched"; }
  const std::string link = tmp.path() + "/link";
  fs::create_symlink(target, link);
  wrenn::write_private_file(link, "three\n");
  CHECK(slurp(target) == "untouched");
  CHECK_FALSE(fs::is_symlink(link));
  CHECK(slurp(link) == "three\n");

  // A directory that does not exist: an error naming the path, nothing created.
  try {
    wrenn::write_private_file(tmp.path() + "/missing/dir/file", "x");
    FAIL("no error");
  } catch (const wrenn::Error& e) {
    CHECK(std::string(e.what()).find("/missing/dir/file") != std::string::npos);
  }
}

TEST_CASE("create-once private files keep the first writer's content") {
  wrenn::test::TempDir tmp;
  const std::string path = tmp.path() + "/token";
  CHECK(wrenn::create_private_file(path, "first\n"));
  CHECK_FALSE(wrenn::create_private_file(path, "second\n"));
  CHECK(slurp(path) == "first\n");
  CHECK(mode_of(path) == 0600);
  CHECK(entries(tmp.path()) == 1);  // the loser's temporary is gone too
}
