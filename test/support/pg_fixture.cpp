#include "pg_fixture.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <stdexcept>
#include <vector>

namespace wrenn::test {

namespace fs = std::filesystem;

pg::EmbeddedOptions test_server_options() {
  pg::EmbeddedOptions o;
  o.no_sync = true;
  o.settings = {{"shared_buffers", "16MB"}, {"max_connections", "40"}};
  o.start_timeout = std::chrono::seconds(30);
  o.stop_timeout = std::chrono::seconds(10);
  return o;
}

namespace {

// A pristine cluster with the database, made once per user and set of installed PostgreSQL
// versions.
std::string cached_cluster() {
  std::vector<std::string> versions;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/usr/lib/postgresql", ec))
    versions.push_back(e.path().filename().string());
  std::sort(versions.begin(), versions.end());
  std::string key;
  for (const auto& v : versions) key += v + ",";
  const std::string cache = "/tmp/wrenn-pg-cache-v1-" + std::to_string(::geteuid()) + "-" +
                            std::to_string(std::hash<std::string>{}(key) % 100000);
  if (::mkdir(cache.c_str(), 0755) != 0 && errno != EEXIST)
    throw std::runtime_error("mkdir " + cache + " failed");
  struct stat st {};
  if (::lstat(cache.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != ::geteuid())
    throw std::runtime_error(cache + " is not a directory owned by this user");
  const std::string lock_path = cache + "/lock";
  int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) throw std::runtime_error("open " + lock_path + " failed");
  ::flock(fd, LOCK_EX);
  try {
    // Started once so that the copies already hold the database (CREATE DATABASE costs
    // more than the copy).
    if (!fs::exists(cache + "/ready")) {
      pg::EmbeddedPostgres init(test_server_options());
      init.start(cache + "/pg");
      init.stop();
      std::ofstream(cache + "/ready") << "ok\n";
    }
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
  return cache + "/pg/data";
}

}  // namespace

PgServer::PgServer(bool fresh_initdb) : dir_(tmp_.path() + "/pg") {
  if (!fresh_initdb) {
    fs::create_directories(dir_);
    fs::copy(cached_cluster(), dir_ + "/data",
             fs::copy_options::recursive | fs::copy_options::copy_symlinks);
  }
  server_ = std::make_unique<pg::EmbeddedPostgres>(test_server_options());
  conninfo_ = server_->start(dir_);
}

PgServer::~PgServer() {
  server_.reset();
}  // stops before tmp_ removes the directory

void PgServer::stop() {
  server_->stop();
}

void PgServer::start() {
  conninfo_ = server_->start(dir_);
}

void PgServer::restart() {
  conninfo_ = server_->restart();
}

std::unique_ptr<pg::Pool> PgServer::make_pool(std::size_t max_size) const {
  pg::PoolOptions o;
  o.conninfo = conninfo_;
  o.max_size = max_size;
  o.connect_timeout = std::chrono::seconds(2);
  o.acquire_timeout = std::chrono::seconds(5);
  o.backoff_initial = std::chrono::milliseconds(5);
  o.backoff_max = std::chrono::milliseconds(50);
  return std::make_unique<pg::Pool>(o);
}

}  // namespace wrenn::test
