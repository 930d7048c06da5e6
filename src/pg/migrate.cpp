#include "migrate.h"

#include <algorithm>
#include <set>

#include "log.h"

namespace wrenn::pg {

namespace {

constexpr std::string_view kCreateTable =
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version integer PRIMARY KEY,"
    " name text NOT NULL,"
    " applied_at timestamptz NOT NULL DEFAULT now())";

int latest(std::span<const Migration> migrations) {
  return migrations.empty() ? 0 : migrations.back().version;
}

// Recorded versions; empty when schema_migrations does not exist yet.
std::set<int> applied_versions(Connection& c) {
  Result exists = c.exec("SELECT to_regclass('schema_migrations') IS NOT NULL");
  std::set<int> out;
  if (!exists.as_bool(0, 0)) return out;
  Result r = c.exec("SELECT version FROM schema_migrations");
  for (int i = 0; i < r.rows(); ++i) out.insert(static_cast<int>(r.as_int64(i, 0)));
  return out;
}

Error ahead_error(int db, int known) {
  return Error(Code::kFailedPrecondition, "database schema version " + std::to_string(db) +
                                              " is newer than this wrenn-cp (knows up to " +
                                              std::to_string(known) + ")");
}

// Releases the advisory lock (and any open transaction) when migrate() leaves.
class LockGuard {
 public:
  explicit LockGuard(Connection& c) : c_(c) {
    c_.exec("SELECT pg_advisory_lock($1)", kMigrationLockKey);
  }
  ~LockGuard() {
    if (c_.broken()) return;  // the lock died with the session
    try {
      if (c_.tx_status() != Connection::TxStatus::kIdle) c_.exec("ROLLBACK");
      c_.exec("SELECT pg_advisory_unlock($1)", kMigrationLockKey);
    } catch (const std::exception& e) {
      log::warn("pg: releasing the migration lock failed", {{"error", e.what()}});
    }
  }
  LockGuard(const LockGuard&) = delete;
  LockGuard& operator=(const LockGuard&) = delete;

 private:
  Connection& c_;
};

}  // namespace

int latest_embedded_version() {
  return latest(embedded_migrations());
}

int migrate(Pool& pool) {
  return migrate(pool, embedded_migrations());
}

int migrate(Pool& pool, std::span<const Migration> migrations) {
  Pool::Lease lease = pool.acquire();
  Connection& c = *lease;
  LockGuard lock(c);
  c.exec(kCreateTable);
  const std::set<int> applied = applied_versions(c);
  const int known = latest(migrations);
  if (!applied.empty() && *applied.rbegin() > known) throw ahead_error(*applied.rbegin(), known);
  int count = 0;
  for (const Migration& m : migrations) {
    if (applied.count(m.version)) continue;
    log::info("pg: applying migration",
              {{"version", std::to_string(m.version)}, {"name", std::string(m.name)}});
    c.exec("BEGIN");
    try {
      c.exec_script(m.sql);
    } catch (const SqlError& e) {
      // Name the migration; the guard rolls back.
      throw SqlError(e.code(), e.sqlstate(),
                     "migration " + std::to_string(m.version) + "_" + std::string(m.name) +
                         " failed: " + e.what(),
                     e.constraint());
    }
    c.exec("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", m.version, m.name);
    c.exec("COMMIT");
    ++count;
  }
  return count;
}

int schema_version(Connection& conn) {
  const std::set<int> applied = applied_versions(conn);
  return applied.empty() ? 0 : *applied.rbegin();
}

int schema_version(Pool& pool) {
  Pool::Lease lease = pool.acquire();
  return schema_version(*lease);
}

void check_schema(Pool& pool) {
  check_schema(pool, embedded_migrations());
}

void check_schema(Pool& pool, std::span<const Migration> migrations) {
  std::set<int> applied;
  {
    Pool::Lease lease = pool.acquire();
    applied = applied_versions(*lease);
  }
  const int db = applied.empty() ? 0 : *applied.rbegin();
  const int known = latest(migrations);
  if (db > known) throw ahead_error(db, known);
  const bool missing = std::any_of(migrations.begin(), migrations.end(),
                                   [&](const Migration& m) { return !applied.count(m.version); });
  if (missing)
    throw Error(Code::kFailedPrecondition, "database schema version " + std::to_string(db) +
                                               " is older than this wrenn-cp (needs " +
                                               std::to_string(known) + "); run `wrenn-cp migrate`");
}

}  // namespace wrenn::pg
