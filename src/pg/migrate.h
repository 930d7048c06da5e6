// Schema migrations: the numbered sql/NNNN_name.sql files, embedded into the binary at
// build time, applied in order and recorded in schema_migrations.
//
// Contract:
// - embedded_migrations() is the build's list, sorted by version, versions unique and > 0
//   (the build fails otherwise). A migration file is one script of SQL statements without
//   transaction control (BEGIN/COMMIT); it runs inside a transaction of its own.
// - migrate() holds the session advisory lock kMigrationLockKey for its whole run, creates
//   schema_migrations(version int primary key, name text, applied_at timestamptz) if
//   missing, and applies every migration whose version is not recorded, each in its own
//   transaction together with its schema_migrations row: a failing migration leaves no
//   trace and stops the run (earlier ones stay applied). Concurrent migrate() calls, from
//   any number of processes, are safe: the second waits for the first and then finds
//   nothing to do. Returns the number of migrations applied (0 when up to date).
// - The database is "ahead" when it records a version newer than the newest known one;
//   migrate() then refuses to touch it and check_schema() fails:
//     Error(kFailedPrecondition, "database schema version N is newer than this wrenn-cp
//     (knows up to M)").
//   It is "behind" when a known version is not recorded; check_schema() fails with
//     Error(kFailedPrecondition, "database schema version N is older than this wrenn-cp
//     (needs M); run `wrenn-cp migrate`").
// - schema_version() is the highest recorded version, 0 for a database never migrated.
// Other errors: SqlError from the connection (kUnavailable when the server is down).
//
// Thread-safety: all functions may be called concurrently (the pool is thread-safe).
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "pool.h"

namespace wrenn::pg {

struct Migration {
  int version;
  std::string_view name;  // "init" for 0001_init.sql
  std::string_view sql;
};

// pg_advisory_lock key held while migrating ('wrnnmigr' as a big-endian int64).
inline constexpr std::int64_t kMigrationLockKey = 0x77726e6e6d696772;

// The migrations compiled into this binary (generated from sql/ at build time).
std::span<const Migration> embedded_migrations();
// The highest embedded version.
int latest_embedded_version();

int migrate(Pool& pool);
// migrate() with an explicit list (sorted by version); for tests and tools.
int migrate(Pool& pool, std::span<const Migration> migrations);

int schema_version(Connection& conn);
int schema_version(Pool& pool);

void check_schema(Pool& pool);
void check_schema(Pool& pool, std::span<const Migration> migrations);

}  // namespace wrenn::pg
