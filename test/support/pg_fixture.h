// Test support: a throwaway PostgreSQL server (pg::EmbeddedPostgres) in a fresh temporary
// directory, started on construction, stopped and deleted on destruction.
//
// Fast by construction: the cluster is initdb'd with --no-sync and runs with fsync off,
// and by default it is copied from a pristine cluster (with its database) made once per
// user and PostgreSQL installation (cached under /tmp/wrenn-pg-cache-*, guarded by a file
// lock), which turns a ~2 s initdb plus CREATE DATABASE into a copy. Pass fresh_initdb = true to
// exercise initdb itself.
//
// Usage:
//   wrenn::test::PgServer pg;
//   wrenn::pg::Pool pool({.conninfo = pg.conninfo()});
//   ...
//   pg.restart();  // or pg.stop(); ...; pg.start();
#pragma once

#include <memory>
#include <string>

#include "envd_fixture.h"
#include "pg/embedded.h"
#include "pg/pool.h"

namespace wrenn::test {

class PgServer {
 public:
  explicit PgServer(bool fresh_initdb = false);
  ~PgServer();
  PgServer(const PgServer&) = delete;
  PgServer& operator=(const PgServer&) = delete;

  // libpq conninfo of the database "wrenn" (stable across restarts).
  const std::string& conninfo() const { return conninfo_; }
  // The server's directory (data/, run/, postgres.log).
  const std::string& dir() const { return dir_; }
  pg::EmbeddedPostgres& server() { return *server_; }

  void stop();
  void start();
  void restart();

  // A pool on this server with short timeouts suitable for tests.
  std::unique_ptr<pg::Pool> make_pool(std::size_t max_size = 4) const;

 private:
  TempDir tmp_;
  std::string dir_;
  std::string conninfo_;
  std::unique_ptr<pg::EmbeddedPostgres> server_;
};

// The options PgServer starts its servers with (no_sync, small shared_buffers).
pg::EmbeddedOptions test_server_options();

}  // namespace wrenn::test
