// filesystem.Filesystem against the real envd over real sockets, both codecs.
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <functional>
#include <set>
#include <thread>

#include "connect/client.h"
#include "envd/filesystem.pb.h"
#include "envd_fixture.h"
#include "error.h"

using namespace wrenn;
using test::error_code_of;
using connect::Client;
using connect::Codec;

namespace {

constexpr const char* kNobody = "Basic bm9ib2R5Og==";  // base64("nobody:")


std::string codec_name(Codec c) {
  return c == Codec::kJson ? "json" : "proto";
}

filesystem::EntryInfo stat_rpc(Client& c, const std::string& path, const connect::Headers& h = {}) {
  filesystem::StatRequest req;
  req.set_path(path);
  filesystem::StatResponse resp;
  c.unary("/filesystem.Filesystem/Stat", req, resp, h);
  return resp.entry();
}

filesystem::EntryInfo make_dir(Client& c, const std::string& path, const connect::Headers& h = {}) {
  filesystem::MakeDirRequest req;
  req.set_path(path);
  filesystem::MakeDirResponse resp;
  c.unary("/filesystem.Filesystem/MakeDir", req, resp, h);
  return resp.entry();
}

filesystem::EntryInfo move(Client& c, const std::string& src, const std::string& dst,
                           const connect::Headers& h = {}) {
  filesystem::MoveRequest req;
  req.set_source(src);
  req.set_destination(dst);
  filesystem::MoveResponse resp;
  c.unary("/filesystem.Filesystem/Move", req, resp, h);
  return resp.entry();
}

std::vector<std::string> list_paths(Client& c, const std::string& path, unsigned depth) {
  filesystem::ListDirRequest req;
  req.set_path(path);
  req.set_depth(depth);
  filesystem::ListDirResponse resp;
  c.unary("/filesystem.Filesystem/ListDir", req, resp);
  std::vector<std::string> out;
  for (auto& e : resp.entries()) out.push_back(e.path());
  return out;
}

void remove_rpc(Client& c, const std::string& path) {
  filesystem::RemoveRequest req;
  req.set_path(path);
  filesystem::RemoveResponse resp;
  c.unary("/filesystem.Filesystem/Remove", req, resp);
}

struct stat lstat_of(const std::string& path) {
  struct stat st {};
  REQUIRE(::lstat(path.c_str(), &st) == 0);
  return st;
}

bool exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

std::string event_string(const filesystem::FilesystemEvent& e) {
  std::string type = filesystem::EventType_Name(e.type());
  return type.substr(std::string("EVENT_TYPE_").size()) + " " + e.name();
}

// Number of inotify instances envd holds open.
int inotify_fds(pid_t pid) {
  std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  DIR* d = ::opendir(dir.c_str());
  REQUIRE(d != nullptr);
  int n = 0;
  while (dirent* e = ::readdir(d)) {
    char target[256];
    ssize_t len = ::readlink((dir + "/" + e->d_name).c_str(), target, sizeof target - 1);
    if (len > 0 && std::string(target, static_cast<std::size_t>(len)) == "anon_inode:inotify") ++n;
  }
  ::closedir(d);
  return n;
}

bool eventually(const std::function<bool()>& cond) {
  for (int i = 0; i < 500; ++i) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return cond();
}

// A WatchDir stream with 1 s keepalives. Events are kept as "TYPE /path" strings with
// consecutive duplicates collapsed (several write(2)s may be one WRITE or several).
class Watch {
 public:
  Watch(Client& c, const std::string& path, bool recursive, connect::Headers h = {}) {
    filesystem::WatchDirRequest req;
    req.set_path(path);
    req.set_recursive(recursive);
    h["Keepalive-Ping-Interval"] = "1";
    stream_ = c.server_stream("/filesystem.Filesystem/WatchDir", req, h);
    filesystem::WatchDirResponse r;
    bool got = stream_->next(r);  // throws the stream's error (outside REQUIRE, to propagate)
    REQUIRE(got);
    REQUIRE(r.has_start());  // the watch is in place from here on
  }

  // Reads until an event equal to `last` arrives; fails after 5 idle keepalives.
  const std::vector<std::string>& read_until(const std::string& last) {
    int idle = 0;
    while (events_.empty() || events_.back() != last) {
      filesystem::WatchDirResponse r;
      bool got = stream_->next(r);
      REQUIRE(got);
      REQUIRE_FALSE(r.has_start());
      if (r.has_keepalive()) {
        ++keepalives_;
        INFO("events so far: " << Catch::Detail::stringify(events_));
        REQUIRE(++idle < 5);
        continue;
      }
      REQUIRE(r.has_filesystem());
      std::string ev = event_string(r.filesystem());
      if (events_.empty() || events_.back() != ev) events_.push_back(ev);
    }
    return events_;
  }

  // Reads to the end of the stream (errors are thrown); returns the events seen meanwhile.
  const std::vector<std::string>& read_to_end() {
    filesystem::WatchDirResponse r;
    while (stream_->next(r))
      if (r.has_filesystem()) events_.push_back(event_string(r.filesystem()));
    return events_;
  }

  void clear() { events_.clear(); }
  int keepalives() const { return keepalives_; }

 private:
  std::unique_ptr<Client::Stream> stream_;
  std::vector<std::string> events_;
  int keepalives_ = 0;
};

}  // namespace

TEST_CASE("Stat reports files, directories, symlinks and other types from lstat") {
  test::EnvdProcess envd;
  test::TempDir t;
  const std::string f = t.path() + "/file.txt";
  test::write_file(f, "hello");
  REQUIRE(::chmod(f.c_str(), 0640) == 0);
  const std::string d = t.path() + "/dir";
  REQUIRE(::mkdir(d.c_str(), 0751) == 0);
  REQUIRE(::symlink("file.txt", (t.path() + "/link").c_str()) == 0);
  REQUIRE(::symlink("/nowhere/at/all", (t.path() + "/dangling").c_str()) == 0);
  REQUIRE(::mkfifo((t.path() + "/fifo").c_str(), 0600) == 0);
  const std::string suid = t.path() + "/suid";
  test::write_file(suid, "");
  REQUIRE(::chmod(suid.c_str(), 04755) == 0);
  const std::string sticky = t.path() + "/sticky";
  REQUIRE(::mkdir(sticky.c_str(), 0700) == 0);
  REQUIRE(::chmod(sticky.c_str(), 01700) == 0);

  for (Codec codec : {Codec::kJson, Codec::kProto}) {
    SECTION("codec " + codec_name(codec)) {
      Client c("127.0.0.1", envd.port(), codec);

      auto e = stat_rpc(c, f);
      struct stat st = lstat_of(f);
      CHECK(e.name() == "file.txt");
      CHECK(e.type() == filesystem::FILE_TYPE_FILE);
      CHECK(e.path() == f);
      CHECK(e.size() == 5);
      CHECK(e.mode() == 0640);
      CHECK(e.permissions() == "-rw-r-----");
      CHECK(e.owner() == "root");
      CHECK(e.group() == "root");
      CHECK(e.has_modified_time());
      CHECK(e.modified_time().seconds() == st.st_mtim.tv_sec);
      CHECK(e.modified_time().nanos() == st.st_mtim.tv_nsec);
      CHECK_FALSE(e.has_symlink_target());

      e = stat_rpc(c, d);
      CHECK(e.name() == "dir");
      CHECK(e.type() == filesystem::FILE_TYPE_DIRECTORY);
      CHECK(e.mode() == 0751);
      CHECK(e.permissions() == "drwxr-x--x");
      CHECK_FALSE(e.has_symlink_target());

      e = stat_rpc(c, t.path() + "/link");
      CHECK(e.name() == "link");
      CHECK(e.type() == filesystem::FILE_TYPE_SYMLINK);
      CHECK(e.path() == t.path() + "/link");
      CHECK(e.size() == 8);  // the link itself: strlen("file.txt")
      CHECK(e.permissions() == "Lrwxrwxrwx");
      REQUIRE(e.has_symlink_target());
      CHECK(e.symlink_target() == "file.txt");

      e = stat_rpc(c, t.path() + "/dangling");
      CHECK(e.type() == filesystem::FILE_TYPE_SYMLINK);
      CHECK(e.symlink_target() == "/nowhere/at/all");

      e = stat_rpc(c, t.path() + "/fifo");
      CHECK(e.type() == filesystem::FILE_TYPE_UNSPECIFIED);
      CHECK(e.permissions() == "prw-------");

      e = stat_rpc(c, suid);
      CHECK(e.mode() == 04755);
      CHECK(e.permissions() == "-rwsr-xr-x");
      e = stat_rpc(c, sticky);
      CHECK(e.mode() == 01700);
      CHECK(e.permissions() == "drwx-----T");

      // Relative paths and "" resolve against the caller's home (root: /root).
      e = stat_rpc(c, "");
      CHECK(e.path() == "/root");
      CHECK(e.type() == filesystem::FILE_TYPE_DIRECTORY);
      CHECK(stat_rpc(c, "~").path() == "/root");
      // Paths are normalised.
      CHECK(stat_rpc(c, t.path() + "//dir/./").path() == d);

      CHECK(error_code_of([&] { stat_rpc(c, t.path() + "/missing"); }) == Code::kNotFound);
      CHECK(error_code_of([&] { stat_rpc(c, t.path() + "/dir/../file.txt"); }) ==
            Code::kInvalidArgument);
      CHECK(error_code_of([&] { stat_rpc(c, t.path() + "/file.txt/x"); }) ==
            Code::kInvalidArgument);
    }
  }
}

TEST_CASE("Stat error messages name the path") {
  test::EnvdProcess envd;
  Client c("127.0.0.1", envd.port());
  try {
    stat_rpc(c, "/tmp/wrenn-definitely-missing");
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.code() == Code::kNotFound);
    CHECK(std::string(e.what()).find("/tmp/wrenn-definitely-missing") != std::string::npos);
  }
}

TEST_CASE("MakeDir creates missing components and rejects existing paths") {
  test::EnvdProcess envd;
  test::TempDir t;
  test::write_file(t.path() + "/file", "x");
  for (Codec codec : {Codec::kJson, Codec::kProto}) {
    SECTION("codec " + codec_name(codec)) {
      Client c("127.0.0.1", envd.port(), codec);
      const std::string p = t.path() + "/" + codec_name(codec) + "/a/b";
      auto e = make_dir(c, p);
      CHECK(e.name() == "b");
      CHECK(e.path() == p);
      CHECK(e.type() == filesystem::FILE_TYPE_DIRECTORY);
      CHECK(e.owner() == "root");
      CHECK(S_ISDIR(lstat_of(t.path() + "/" + codec_name(codec) + "/a").st_mode));
      CHECK(S_ISDIR(lstat_of(p).st_mode));
      CHECK((lstat_of(p).st_mode & 07777) == 0755);

      CHECK(error_code_of([&] { make_dir(c, p); }) == Code::kAlreadyExists);
      try {
        make_dir(c, t.path() + "/file");
        FAIL("no error");
      } catch (const Error& err) {
        CHECK(err.code() == Code::kInvalidArgument);
        CHECK(std::string(err.what()) == t.path() + "/file already exists and is not a directory");
      }
      CHECK(error_code_of([&] { make_dir(c, t.path() + "/file/sub"); }) == Code::kInvalidArgument);
      CHECK_FALSE(exists(t.path() + "/file/sub"));
      CHECK(error_code_of([&] { make_dir(c, t.path() + "/x/../y"); }) == Code::kInvalidArgument);
      CHECK_FALSE(exists(t.path() + "/x"));
    }
  }
}

TEST_CASE("MakeDir and Move create what the Basic-auth user owns") {
  test::EnvdProcess envd;
  test::TempDir t;
  REQUIRE(::chmod(t.path().c_str(), 0777) == 0);
  for (Codec codec : {Codec::kJson, Codec::kProto}) {
    SECTION("codec " + codec_name(codec)) {
      Client c("127.0.0.1", envd.port(), codec);
      const connect::Headers nobody{{"Authorization", kNobody}};
      const std::string base = t.path() + "/" + codec_name(codec);

      auto e = make_dir(c, base + "/n1/n2", nobody);
      CHECK(e.owner() == "nobody");
      CHECK(e.group() == "nogroup");
      for (auto p : {base, base + "/n1", base + "/n1/n2"}) {
        INFO(p);
        CHECK(lstat_of(p).st_uid == 65534);
        CHECK(lstat_of(p).st_gid == 65534);
      }

      // Without Basic auth the default user (root) owns new directories.
      make_dir(c, base + "/r1/r2");
      CHECK(lstat_of(base + "/r1").st_uid == 0);
      CHECK(lstat_of(base + "/r1/r2").st_uid == 0);

      // Move creates the destination's parents for the caller; the moved file keeps its owner.
      test::write_file(base + "/src", "data");
      e = move(c, base + "/src", base + "/m1/m2/dst", nobody);
      CHECK(e.path() == base + "/m1/m2/dst");
      CHECK(lstat_of(base + "/m1").st_uid == 65534);
      CHECK(lstat_of(base + "/m1/m2").st_uid == 65534);
      CHECK(lstat_of(base + "/m1/m2/dst").st_uid == 0);
    }
  }
}

TEST_CASE("Move renames files and directories, creating the destination's parents") {
  test::EnvdProcess envd;
  test::TempDir t;
  for (Codec codec : {Codec::kJson, Codec::kProto}) {
    SECTION("codec " + codec_name(codec)) {
      Client c("127.0.0.1", envd.port(), codec);
      const std::string base = t.path() + "/" + codec_name(codec);
      REQUIRE(::mkdir(base.c_str(), 0755) == 0);
      test::write_file(base + "/a.txt", "alpha");
      REQUIRE(::chmod((base + "/a.txt").c_str(), 0604) == 0);

      auto e = move(c, base + "/a.txt", base + "/new/parent/b.txt");
      CHECK(e.name() == "b.txt");
      CHECK(e.path() == base + "/new/parent/b.txt");
      CHECK(e.type() == filesystem::FILE_TYPE_FILE);
      CHECK(e.size() == 5);
      CHECK(e.mode() == 0604);
      CHECK_FALSE(exists(base + "/a.txt"));
      CHECK(test::read_file(base + "/new/parent/b.txt") == "alpha");

      REQUIRE(::mkdir((base + "/tree").c_str(), 0755) == 0);
      test::write_file(base + "/tree/inner", "in");
      e = move(c, base + "/tree", base + "/tree2");
      CHECK(e.type() == filesystem::FILE_TYPE_DIRECTORY);
      CHECK_FALSE(exists(base + "/tree"));
      CHECK(test::read_file(base + "/tree2/inner") == "in");

      // An existing file is replaced, as rename(2) does.
      test::write_file(base + "/old", "old");
      test::write_file(base + "/newer", "newer");
      move(c, base + "/newer", base + "/old");
      CHECK(test::read_file(base + "/old") == "newer");

      // A non-empty directory is not replaced.
      REQUIRE(::mkdir((base + "/d1").c_str(), 0755) == 0);
      CHECK(error_code_of([&] { move(c, base + "/d1", base + "/tree2"); }) == Code::kAlreadyExists);
      CHECK(exists(base + "/d1"));

      CHECK(error_code_of([&] { move(c, base + "/missing", base + "/x"); }) == Code::kNotFound);
      CHECK_FALSE(exists(base + "/x"));
      CHECK(error_code_of([&] { move(c, base + "/../x", base + "/y"); }) == Code::kInvalidArgument);
      CHECK(error_code_of([&] { move(c, base + "/old", base + "/../y"); }) ==
            Code::kInvalidArgument);
      CHECK(exists(base + "/old"));
    }
  }
}

TEST_CASE("Move across filesystems copies the tree and removes the source") {
  test::TempDir t;
  struct stat tmp_st {
  }, shm_st{};
  if (::stat("/dev/shm", &shm_st) != 0 || ::stat(t.path().c_str(), &tmp_st) != 0 ||
      tmp_st.st_dev == shm_st.st_dev) {
    WARN("/dev/shm is missing or on the same filesystem as /tmp; skipping");
    return;
  }
  test::EnvdProcess envd;
  char tmpl[] = "/dev/shm/wrenn-fs-test-XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  const std::string src = tmpl;
  struct Cleanup {
    std::string p;
    ~Cleanup() { std::system(("rm -rf '" + p + "'").c_str()); }
  } cleanup{src};

  REQUIRE(::mkdir((src + "/tree").c_str(), 0750) == 0);
  REQUIRE(::mkdir((src + "/tree/sub").c_str(), 0700) == 0);
  test::write_file(src + "/tree/sub/data", "payload");
  REQUIRE(::chmod((src + "/tree/sub/data").c_str(), 0641) == 0);
  REQUIRE(::chown((src + "/tree/sub/data").c_str(), 65534, 65534) == 0);
  REQUIRE(::symlink("sub/data", (src + "/tree/link").c_str()) == 0);
  test::write_file(src + "/single", "one");

  for (Codec codec : {Codec::kJson, Codec::kProto}) {
    SECTION("codec " + codec_name(codec)) {
      Client c("127.0.0.1", envd.port(), codec);
      const std::string dst = t.path() + "/" + codec_name(codec);
      // Each section gets the source tree afresh (Catch re-runs the setup above).
      auto e = move(c, src + "/tree", dst + "/moved");
      CHECK(e.type() == filesystem::FILE_TYPE_DIRECTORY);
      CHECK(e.path() == dst + "/moved");
      CHECK(e.mode() == 0750);
      CHECK_FALSE(exists(src + "/tree"));
      CHECK((lstat_of(dst + "/moved/sub").st_mode & 07777) == 0700);
      CHECK(test::read_file(dst + "/moved/sub/data") == "payload");
      auto data = lstat_of(dst + "/moved/sub/data");
      CHECK((data.st_mode & 07777) == 0641);
      CHECK(data.st_uid == 65534);
      REQUIRE(S_ISLNK(lstat_of(dst + "/moved/link").st_mode));
      CHECK(stat_rpc(c, dst + "/moved/link").symlink_target() == "sub/data");

      e = move(c, src + "/single", dst + "/single");
      CHECK(e.type() == filesystem::FILE_TYPE_FILE);
      CHECK(test::read_file(dst + "/single") == "one");
      CHECK_FALSE(exists(src + "/single"));
      // No temporary copies are left behind.
      CHECK(list_paths(c, dst, 1) == std::vector<std::string>{dst + "/moved", dst + "/single"});
    }
  }
}

TEST_CASE("ListDir walks to the requested depth without following symlinks") {
  test::EnvdProcess envd;
  test::TempDir t;
  const std::string r = t.path();
  REQUIRE(::mkdir((r + "/a").c_str(), 0755) == 0);
  REQUIRE(::mkdir((r + "/a/sub").c_str(), 0755) == 0);
  test::write_file(r + "/a/x", "x");
  test::write_file(r + "/a/sub/deep", "deep");
  test::write_file(r + "/b", "b");
  REQUIRE(::symlink("a", (r + "/link").c_str()) == 0);

  for (Codec codec : {Codec::kJson, Codec::kProto}) {
    SECTION("codec " + codec_name(codec)) {
      Client c("127.0.0.1", envd.port(), codec);
      const std::vector<std::string> depth1{r + "/a", r + "/b", r + "/link"};
      CHECK(list_paths(c, r, 0) == depth1);
      CHECK(list_paths(c, r, 1) == depth1);
      CHECK(list_paths(c, r, 2) ==
            std::vector<std::string>{r + "/a", r + "/a/sub", r + "/a/x", r + "/b", r + "/link"});
      CHECK(list_paths(c, r, 3) == std::vector<std::string>{r + "/a", r + "/a/sub",
                                                            r + "/a/sub/deep", r + "/a/x", r + "/b",
                                                            r + "/link"});
      CHECK(list_paths(c, r, 100) == list_paths(c, r, 3));
      // A symlinked directory can be listed; paths stay under the requested path.
      CHECK(list_paths(c, r + "/link", 1) ==
            std::vector<std::string>{r + "/link/sub", r + "/link/x"});

      filesystem::ListDirRequest req;
      req.set_path(r);
      req.set_depth(1);
      filesystem::ListDirResponse resp;
      c.unary("/filesystem.Filesystem/ListDir", req, resp);
      REQUIRE(resp.entries_size() == 3);
      CHECK(resp.entries(0).name() == "a");
      CHECK(resp.entries(0).type() == filesystem::FILE_TYPE_DIRECTORY);
      CHECK(resp.entries(1).name() == "b");
      CHECK(resp.entries(1).type() == filesystem::FILE_TYPE_FILE);
      CHECK(resp.entries(1).size() == 1);
      CHECK(resp.entries(2).type() == filesystem::FILE_TYPE_SYMLINK);
      CHECK(resp.entries(2).symlink_target() == "a");
    }
  }
}

TEST_CASE("ListDir rejects missing paths and non-directories") {
  test::EnvdProcess envd;
  test::TempDir t;
  test::write_file(t.path() + "/f", "");
  REQUIRE(::mkdir((t.path() + "/empty").c_str(), 0755) == 0);
  Client c("127.0.0.1", envd.port());
  CHECK(error_code_of([&] { list_paths(c, t.path() + "/missing", 1); }) == Code::kNotFound);
  CHECK(error_code_of([&] { list_paths(c, t.path() + "/f", 1); }) == Code::kInvalidArgument);
  CHECK(error_code_of([&] { list_paths(c, t.path() + "/../etc", 1); }) == Code::kInvalidArgument);
  CHECK(list_paths(c, t.path() + "/empty", 2).empty());
}

TEST_CASE("Remove deletes files, symlinks and whole trees") {
  test::EnvdProcess envd;
  test::TempDir t;
  for (Codec codec : {Codec::kJson, Codec::kProto}) {
    SECTION("codec " + codec_name(codec)) {
      Client c("127.0.0.1", envd.port(), codec);
      const std::string base = t.path() + "/" + codec_name(codec);
      REQUIRE(::mkdir(base.c_str(), 0755) == 0);
      test::write_file(base + "/f", "x");
      REQUIRE(::mkdir((base + "/tree").c_str(), 0755) == 0);
      REQUIRE(::mkdir((base + "/tree/a").c_str(), 0755) == 0);
      REQUIRE(::mkdir((base + "/tree/a/b").c_str(), 0000) == 0);
      test::write_file(base + "/tree/a/file", "y");
      REQUIRE(::mkdir((base + "/keep").c_str(), 0755) == 0);
      test::write_file(base + "/keep/precious", "z");
      REQUIRE(::symlink((base + "/keep").c_str(), (base + "/tree/a/link").c_str()) == 0);
      REQUIRE(::symlink((base + "/keep").c_str(), (base + "/link").c_str()) == 0);

      remove_rpc(c, base + "/f");
      CHECK_FALSE(exists(base + "/f"));
      remove_rpc(c, base + "/tree");
      CHECK_FALSE(exists(base + "/tree"));
      remove_rpc(c, base + "/link");
      CHECK_FALSE(exists(base + "/link"));
      // Symlinks are removed, never followed.
      CHECK(test::read_file(base + "/keep/precious") == "z");

      CHECK(error_code_of([&] { remove_rpc(c, base + "/f"); }) == Code::kNotFound);
      CHECK(error_code_of([&] { remove_rpc(c, base + "/keep/../keep"); }) ==
            Code::kInvalidArgument);
      CHECK(exists(base + "/keep"));
    }
  }
}

TEST_CASE("WatchDir streams create, write, chmod, rename and remove events") {
  test::EnvdProcess envd;
  for (Codec codec : {Codec::kJson, Codec::kProto}) {
    SECTION("non-recursive, codec " + codec_name(codec)) {
      test::TempDir t;
      const std::string r = t.path();
      Client c("127.0.0.1", envd.port(), codec);
      Watch w(c, r, false);
      test::write_file(r + "/f", "hello");
      REQUIRE(::mkdir((r + "/sub").c_str(), 0755) == 0);
      test::write_file(r + "/sub/inner", "not reported: not recursive");
      REQUIRE(::chmod((r + "/f").c_str(), 0600) == 0);
      REQUIRE(::rename((r + "/f").c_str(), (r + "/g").c_str()) == 0);
      REQUIRE(::unlink((r + "/g").c_str()) == 0);
      test::write_file(r + "/end", "");
      // A file opened for writing reports WRITE when closed, even with nothing written.
      CHECK(w.read_until("WRITE " + r + "/end") ==
            std::vector<std::string>{
                "CREATE " + r + "/f", "WRITE " + r + "/f", "CREATE " + r + "/sub",
                "CHMOD " + r + "/f", "RENAME " + r + "/f", "CREATE " + r + "/g",
                "REMOVE " + r + "/g", "CREATE " + r + "/end", "WRITE " + r + "/end"});
    }
    SECTION("recursive, codec " + codec_name(codec)) {
      test::TempDir t;
      const std::string r = t.path();
      REQUIRE(::mkdir((r + "/pre").c_str(), 0755) == 0);
      REQUIRE(::mkdir((r + "/pre/deep").c_str(), 0755) == 0);
      Client c("127.0.0.1", envd.port(), codec);
      Watch w(c, r, true);

      // Directories that existed when the watch started.
      test::write_file(r + "/pre/deep/f", "x");
      CHECK(w.read_until("WRITE " + r + "/pre/deep/f") ==
            std::vector<std::string>{"CREATE " + r + "/pre/deep/f", "WRITE " + r + "/pre/deep/f"});
      w.clear();

      // A directory created later is watched once its CREATE is out.
      REQUIRE(::mkdir((r + "/sub").c_str(), 0755) == 0);
      w.read_until("CREATE " + r + "/sub");
      test::write_file(r + "/sub/inner", "y");
      CHECK(w.read_until("WRITE " + r + "/sub/inner") ==
            std::vector<std::string>{"CREATE " + r + "/sub", "CREATE " + r + "/sub/inner",
                                     "WRITE " + r + "/sub/inner"});
      w.clear();

      // A whole new tree at once: every level is reported and watched.
      REQUIRE(std::system(("mkdir -p " + r + "/n/a/b").c_str()) == 0);
      std::set<std::string> seen;
      for (auto& ev : w.read_until("CREATE " + r + "/n/a/b")) seen.insert(ev);
      CHECK(seen.count("CREATE " + r + "/n"));
      CHECK(seen.count("CREATE " + r + "/n/a"));
      w.clear();
      test::write_file(r + "/n/a/b/leaf", "z");
      w.read_until("WRITE " + r + "/n/a/b/leaf");
      w.clear();

      // A renamed directory is reported under its new name afterwards.
      REQUIRE(::rename((r + "/sub").c_str(), (r + "/sub2").c_str()) == 0);
      w.read_until("CREATE " + r + "/sub2");
      w.clear();
      test::write_file(r + "/sub2/later", "");
      auto evs = w.read_until("WRITE " + r + "/sub2/later");
      for (auto& ev : evs) CHECK(ev.find(r + "/sub/") == std::string::npos);
      CHECK(std::count(evs.begin(), evs.end(), "CREATE " + r + "/sub2/later") == 1);
      w.clear();

      // Removing a tree reports every entry once.
      REQUIRE(std::system(("rm -rf " + r + "/sub2").c_str()) == 0);
      evs = w.read_until("REMOVE " + r + "/sub2");
      std::multiset<std::string> removed(evs.begin(), evs.end());
      CHECK(removed == std::multiset<std::string>{"REMOVE " + r + "/sub2/inner",
                                                  "REMOVE " + r + "/sub2/later",
                                                  "REMOVE " + r + "/sub2"});
    }
  }
}

TEST_CASE("WatchDir sends keepalives, ends when the directory goes, and honours deadlines") {
  test::EnvdProcess envd;
  test::TempDir t;
  Client c("127.0.0.1", envd.port());
  const std::string dir = t.path() + "/watched";
  REQUIRE(::mkdir(dir.c_str(), 0755) == 0);
  {
    Watch w(c, dir, false);
    std::this_thread::sleep_for(std::chrono::milliseconds(2200));
    test::write_file(dir + "/f", "");
    w.read_until("WRITE " + dir + "/f");
    CHECK(w.keepalives() >= 2);
    REQUIRE(::unlink((dir + "/f").c_str()) == 0);
    REQUIRE(::rmdir(dir.c_str()) == 0);
    auto evs = w.read_to_end();
    REQUIRE(evs.size() >= 2);
    CHECK(evs[evs.size() - 2] == "REMOVE " + dir + "/f");
    CHECK(evs.back() == "REMOVE " + dir);
  }
  {
    auto start = std::chrono::steady_clock::now();
    CHECK(error_code_of([&] {
            Watch w(c, t.path(), false, {{"Connect-Timeout-Ms", "1500"}});
            w.read_to_end();
          }) == Code::kDeadlineExceeded);
    auto took = std::chrono::steady_clock::now() - start;
    CHECK(took >= std::chrono::milliseconds(1400));
    CHECK(took < std::chrono::seconds(4));
  }
}

TEST_CASE("WatchDir rejects bad paths and releases inotify when the client leaves") {
  test::EnvdProcess envd;
  test::TempDir t;
  test::write_file(t.path() + "/f", "");
  for (Codec codec : {Codec::kJson, Codec::kProto}) {
    SECTION("codec " + codec_name(codec)) {
      Client c("127.0.0.1", envd.port(), codec);
      const int fds_before = inotify_fds(envd.pid());
      CHECK(error_code_of([&] { Watch w(c, t.path() + "/missing", false); }) == Code::kNotFound);
      CHECK(error_code_of([&] { Watch w(c, t.path() + "/f", true); }) == Code::kInvalidArgument);
      CHECK(error_code_of([&] { Watch w(c, t.path() + "/../tmp", true); }) ==
            Code::kInvalidArgument);
      CHECK(inotify_fds(envd.pid()) == fds_before);  // failed watches leave nothing open

      {
        Watch w(c, t.path(), true);
        CHECK(inotify_fds(envd.pid()) == fds_before + 1);
      }  // the client disconnects; envd notices at its next keepalive at the latest
      CHECK(eventually([&] { return inotify_fds(envd.pid()) == fds_before; }));
    }
  }
}

TEST_CASE("CreateWatcher buffers events until GetWatcherEvents drains them") {
  test::EnvdProcess envd;
  for (Codec codec : {Codec::kJson, Codec::kProto}) {
    SECTION("codec " + codec_name(codec)) {
      test::TempDir t;
      const std::string r = t.path();
      REQUIRE(::mkdir((r + "/sub").c_str(), 0755) == 0);
      Client c("127.0.0.1", envd.port(), codec);
      auto create = [&](const std::string& path, bool recursive) {
        filesystem::CreateWatcherRequest req;
        req.set_path(path);
        req.set_recursive(recursive);
        filesystem::CreateWatcherResponse resp;
        c.unary("/filesystem.Filesystem/CreateWatcher", req, resp);
        return resp.watcher_id();
      };
      auto fetch = [&](const std::string& id) {
        filesystem::GetWatcherEventsRequest req;
        req.set_watcher_id(id);
        filesystem::GetWatcherEventsResponse resp;
        c.unary("/filesystem.Filesystem/GetWatcherEvents", req, resp);
        std::vector<std::string> out;
        for (auto& e : resp.events()) out.push_back(event_string(e));
        return out;
      };
      auto remove_watcher = [&](const std::string& id) {
        filesystem::RemoveWatcherRequest req;
        req.set_watcher_id(id);
        filesystem::RemoveWatcherResponse resp;
        c.unary("/filesystem.Filesystem/RemoveWatcher", req, resp);
      };

      const int fds_before = inotify_fds(envd.pid());
      std::string flat = create(r, false);
      std::string deep = create(r, true);
      CHECK(flat.rfind("w-", 0) == 0);
      CHECK(flat.size() > 2);
      CHECK(flat.find_first_not_of("0123456789abcdef", 2) == std::string::npos);
      CHECK(flat != deep);
      CHECK(inotify_fds(envd.pid()) == fds_before + 2);

      test::write_file(r + "/top", "1");
      test::write_file(r + "/sub/nested", "2");
      REQUIRE(::unlink((r + "/top").c_str()) == 0);
      test::write_file(r + "/sub/marker", "");

      // Events are buffered whether or not anyone asks; poll until the last one is there.
      std::vector<std::string> deep_events;
      REQUIRE(eventually([&] {
        for (auto& e : fetch(deep))
          if (deep_events.empty() || deep_events.back() != e) deep_events.push_back(e);
        return !deep_events.empty() && deep_events.back() == "WRITE " + r + "/sub/marker";
      }));
      CHECK(deep_events ==
            std::vector<std::string>{"CREATE " + r + "/top", "WRITE " + r + "/top",
                                     "CREATE " + r + "/sub/nested", "WRITE " + r + "/sub/nested",
                                     "REMOVE " + r + "/top", "CREATE " + r + "/sub/marker",
                                     "WRITE " + r + "/sub/marker"});
      std::vector<std::string> flat_events;
      REQUIRE(eventually([&] {
        for (auto& e : fetch(flat))
          if (flat_events.empty() || flat_events.back() != e) flat_events.push_back(e);
        return !flat_events.empty() && flat_events.back() == "REMOVE " + r + "/top";
      }));
      // Not recursive: nothing from sub/.
      CHECK(flat_events == std::vector<std::string>{"CREATE " + r + "/top", "WRITE " + r + "/top",
                                                    "REMOVE " + r + "/top"});
      // Drained on read.
      CHECK(fetch(flat).empty());
      CHECK(fetch(deep).empty());

      remove_watcher(flat);
      remove_watcher(flat);  // idempotent
      CHECK(error_code_of([&] { fetch(flat); }) == Code::kNotFound);
      CHECK(fetch(deep).empty());
      remove_watcher(deep);
      CHECK(inotify_fds(envd.pid()) == fds_before);

      CHECK(error_code_of([&] { fetch("w-0"); }) == Code::kNotFound);
      CHECK(error_code_of([&] { fetch(""); }) == Code::kNotFound);
      CHECK(error_code_of([&] { create(r + "/missing", false); }) == Code::kNotFound);
      test::write_file(r + "/file", "");
      CHECK(error_code_of([&] { create(r + "/file", false); }) == Code::kInvalidArgument);
      CHECK(error_code_of([&] { create(r + "/../etc", false); }) == Code::kInvalidArgument);
      CHECK(inotify_fds(envd.pid()) == fds_before);
    }
  }
}

TEST_CASE("GetWatcherEvents reports lost events once, then carries on") {
  test::EnvdProcess envd;
  test::TempDir t;
  const std::string a = t.path() + "/a", b = t.path() + "/b", z = t.path() + "/z";
  test::write_file(a, "");
  test::write_file(b, "");
  test::write_file(z, "");
  Client c("127.0.0.1", envd.port());
  filesystem::CreateWatcherRequest create;
  create.set_path(t.path());
  filesystem::CreateWatcherResponse created;
  c.unary("/filesystem.Filesystem/CreateWatcher", create, created);
  filesystem::GetWatcherEventsRequest get;
  get.set_watcher_id(created.watcher_id());

  // Alternating files, so neither the kernel nor envd merges consecutive events: more than
  // envd's bound (100000) and the kernel's queue (16384) together, so events are lost
  // whichever of them overflows.
  int failed = 0;
  for (int i = 0; i < 150000; ++i) failed += ::chmod((i % 2 ? a : b).c_str(), 0644) != 0;
  REQUIRE(failed == 0);

  // Each loss is reported by one call (the next after it happened); envd may still be
  // catching up while we fetch, so a later overflow can be reported by a later call.
  std::vector<std::string> losses;
  std::size_t delivered = 0;
  bool saw_marker = false;
  REQUIRE(eventually([&] {
    // A marker after the flood; repeated, since a full kernel queue drops the newest events.
    REQUIRE(::chmod(z.c_str(), 0600) == 0);
    filesystem::GetWatcherEventsResponse resp;
    try {
      c.unary("/filesystem.Filesystem/GetWatcherEvents", get, resp);
    } catch (const Error& e) {
      CHECK(e.code() == Code::kResourceExhausted);
      losses.push_back(e.what());
      return false;
    }
    CHECK(resp.events_size() <= 100000);
    delivered += static_cast<std::size_t>(resp.events_size());
    for (auto& e : resp.events())
      if (event_string(e) == "CHMOD " + z) saw_marker = true;
    return saw_marker;
  }));
  REQUIRE_FALSE(losses.empty());
  for (auto& loss : losses) {
    INFO(loss);
    CHECK((loss.find("events were dropped") != std::string::npos ||
           loss.find("inotify queue overflowed") != std::string::npos));
  }
  CHECK(delivered < 150001);
  // The watcher keeps working afterwards, and every loss was reported before the marker
  // came out, so these calls succeed.
  test::write_file(t.path() + "/after", "");
  std::vector<std::string> rest;
  REQUIRE(eventually([&] {
    filesystem::GetWatcherEventsResponse resp;
    c.unary("/filesystem.Filesystem/GetWatcherEvents", get, resp);
    for (auto& e : resp.events()) rest.push_back(event_string(e));
    return !rest.empty() && rest.back() == "WRITE " + t.path() + "/after";
  }));
  rest.erase(std::remove(rest.begin(), rest.end(), "CHMOD " + z), rest.end());
  CHECK(rest ==
        std::vector<std::string>{"CREATE " + t.path() + "/after", "WRITE " + t.path() + "/after"});
}
