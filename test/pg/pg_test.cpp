// src/pg against real PostgreSQL servers: one throwaway EmbeddedPostgres per test case.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <latch>
#include <set>
#include <sstream>
#include <thread>

#include "pg/connection.h"
#include "pg/embedded.h"
#include "pg/migrate.h"
#include "pg/pool.h"
#include "pg_fixture.h"

using namespace wrenn;
using wrenn::test::PgServer;

namespace {

// Runs f, which must throw pg::SqlError, and returns the error.
template <class F>
pg::SqlError sql_error_of(F&& f) {
  try {
    f();
  } catch (const pg::SqlError& e) {
    return e;
  }
  FAIL("expected a pg::SqlError");
  throw std::logic_error("unreachable");
}

// Runs f, which must throw wrenn::Error, and returns the error.
template <class F>
Error error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e;
  }
  FAIL("expected a wrenn::Error");
  throw std::logic_error("unreachable");
}

bool table_exists(pg::Connection& c, const std::string& name) {
  return c.exec("SELECT to_regclass($1) IS NOT NULL", name).as_bool(0, 0);
}

}  // namespace

TEST_CASE("pg: exec binds text parameters and NULLs, typed getters", "[pg]") {
  PgServer pg;
  pg::Connection c(pg.conninfo());

  pg::Result r =
      c.exec("SELECT $1::int8 AS a, $2::bool AS b, $3::text AS c, $4::text AS d",
             std::int64_t{-9223372036854775807LL - 1}, true, "x'; DROP TABLE y; --", std::nullopt);
  REQUIRE(r.rows() == 1);
  REQUIRE(r.columns() == 4);
  CHECK(r.as_int64(0, "a") == -9223372036854775807LL - 1);
  CHECK(r.as_bool(0, "b"));
  CHECK(r.text(0, "c") == "x'; DROP TABLE y; --");  // a parameter is data, never SQL
  CHECK(r.is_null(0, "d"));
  CHECK_FALSE(r.opt_text(0, 3).has_value());
  CHECK_FALSE(r.opt_int64(0, "d").has_value());
  CHECK(r.column_name(1) == "b");
  // NULL in a non-optional getter, unknown columns and bad indexes are programming errors.
  CHECK(test::error_code_of([&] { r.text(0, "d"); }) == Code::kInternal);
  CHECK(test::error_code_of([&] { r.column("nope"); }) == Code::kInternal);
  CHECK(test::error_code_of([&] { r.text(1, 0); }) == Code::kInternal);
  CHECK(test::error_code_of([&] { r.as_int64(0, "c"); }) == Code::kInternal);

  // The vector form, optionals and affected rows.
  c.exec_script(
      "CREATE TABLE kv (k text PRIMARY KEY, v int, flag bool);"
      "INSERT INTO kv VALUES ('a', 1, true), ('b', 2, false), ('c', NULL, NULL);");
  pg::Result upd =
      c.exec("UPDATE kv SET v = $1 WHERE k <> $2", pg::Params{std::string("7"), std::string("a")});
  CHECK(upd.affected_rows() == 2);
  CHECK(upd.command_status() == "UPDATE 2");
  std::optional<int> none;
  CHECK(c.exec("SELECT count(*) FROM kv WHERE v = $1", none).as_int64(0, 0) == 0);
  CHECK(c.exec("SELECT count(*) FROM kv WHERE v = $1", std::optional<int>(7)).as_int64(0, 0) == 2);
  pg::Result all = c.exec("SELECT k, v, flag FROM kv ORDER BY k");
  REQUIRE(all.rows() == 3);
  CHECK(all.text(0, "k") == "a");
  CHECK(all.as_int64(0, "v") == 1);
  CHECK(all.opt_bool(1, "flag") == std::optional<bool>(false));
  CHECK_FALSE(all.opt_bool(2, "flag").has_value());
  CHECK(c.exec("SELECT 1 WHERE false").empty());
  // One statement per exec(): the extended protocol refuses two.
  CHECK(test::error_code_of([&] { c.exec("SELECT 1; SELECT 2"); }) == Code::kInternal);
  CHECK_FALSE(c.broken());
}

TEST_CASE("pg: SQLSTATEs map to codes, unique violation is already_exists", "[pg]") {
  PgServer pg;
  pg::Connection c(pg.conninfo());
  c.exec_script(
      "CREATE TABLE parent (id int PRIMARY KEY);"
      "CREATE TABLE child (id int PRIMARY KEY, parent int REFERENCES parent (id),"
      "  n int NOT NULL DEFAULT 0 CHECK (n >= 0));"
      "INSERT INTO parent VALUES (1);");
  c.exec("INSERT INTO child (id, parent) VALUES (1, 1)");

  auto dup = sql_error_of([&] { c.exec("INSERT INTO child (id, parent) VALUES ($1, 1)", 1); });
  CHECK(dup.code() == Code::kAlreadyExists);
  CHECK(dup.sqlstate() == "23505");
  CHECK(dup.constraint() == "child_pkey");
  CHECK(std::string(dup.what()).find("child_pkey") != std::string::npos);
  CHECK(std::string(dup.what()).find("SQLSTATE 23505") != std::string::npos);

  auto fk = sql_error_of([&] { c.exec("INSERT INTO child (id, parent) VALUES (2, 99)"); });
  CHECK(fk.code() == Code::kFailedPrecondition);
  CHECK(fk.sqlstate() == "23503");
  auto check = sql_error_of([&] { c.exec("INSERT INTO child (id, n) VALUES (3, -1)"); });
  CHECK(check.code() == Code::kInvalidArgument);
  CHECK(check.sqlstate() == "23514");
  auto data = sql_error_of([&] { c.exec("SELECT $1::int", "twelve"); });
  CHECK(data.code() == Code::kInvalidArgument);
  CHECK(data.sqlstate() == "22P02");
  auto syntax = sql_error_of([&] { c.exec("SELEC 1"); });
  CHECK(syntax.code() == Code::kInternal);
  CHECK(syntax.sqlstate() == "42601");
  auto ser = sql_error_of(
      [&] { c.exec("DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '40001'; END $$"); });
  CHECK(ser.code() == Code::kAborted);
  CHECK_FALSE(c.broken());  // statement errors leave the connection usable

  CHECK(pg::classify_sqlstate("40P01") == Code::kAborted);
  CHECK(pg::classify_sqlstate("08006") == Code::kUnavailable);
  CHECK(pg::classify_sqlstate("57P01") == Code::kUnavailable);
  CHECK(pg::classify_sqlstate("23502") == Code::kInvalidArgument);
  CHECK(pg::classify_sqlstate("XX000") == Code::kInternal);
}

TEST_CASE("pg: a secret parameter never appears in an error message", "[pg]") {
  PgServer pg;
  auto pool = pg.make_pool();
  const std::string secret = "wrn_5ecret0f1a2b3c4d5e6f7a8b9c0d1e";
  pg::Connection c(pg.conninfo());
  c.exec_script(
      "CREATE TABLE keys (id int PRIMARY KEY, key_hash text UNIQUE NOT NULL"
      "  CHECK (length(key_hash) < 40), n int, at timestamptz, doc jsonb);");
  c.exec("INSERT INTO keys (id, key_hash) VALUES (1, $1)", secret);

  std::vector<pg::SqlError> errors;
  // The server's DETAIL would say "Key (key_hash)=(<secret>) already exists".
  errors.push_back(
      sql_error_of([&] { c.exec("INSERT INTO keys (id, key_hash) VALUES (2, $1)", secret); }));
  // The server's DETAIL would contain the failing row.
  errors.push_back(sql_error_of(
      [&] { c.exec("INSERT INTO keys (id, key_hash) VALUES (3, $1)", secret + secret); }));
  // Class 22: the server's primary message quotes the value.
  errors.push_back(sql_error_of([&] { c.exec("SELECT $1::int", secret); }));
  errors.push_back(sql_error_of([&] { c.exec("SELECT $1::timestamptz", secret); }));
  errors.push_back(sql_error_of([&] { c.exec("SELECT $1::jsonb", "{\"k\": " + secret + "}"); }));
  errors.push_back(sql_error_of([&] { c.exec("SELECT $1::uuid", secret); }));
  errors.push_back(sql_error_of([&] {
    pool->with_transaction([&](pg::Connection& tx) {
      tx.exec("INSERT INTO keys (id, key_hash) VALUES (4, $1)", secret);
      tx.exec("INSERT INTO keys (id, key_hash) VALUES (5, $1)", secret);
    });
  }));
  REQUIRE(errors.size() == 7);
  for (const auto& e : errors) {
    INFO(e.what());
    CHECK(std::string(e.what()).find(secret) == std::string::npos);
    CHECK(std::string(e.what()).find("5ecret") == std::string::npos);
    CHECK(std::string(e.what()).find("SQLSTATE") != std::string::npos);  // still names it
  }
  CHECK(errors[0].code() == Code::kAlreadyExists);
  CHECK(errors[1].code() == Code::kInvalidArgument);
  CHECK(errors[2].sqlstate() == "22P02");
  CHECK(errors[6].code() == Code::kAlreadyExists);
}

TEST_CASE("pg: with_transaction commits, returns fn's value and rolls back on exception", "[pg]") {
  PgServer pg;
  auto pool = pg.make_pool();
  pool->acquire()->exec("CREATE TABLE t (id int PRIMARY KEY)");

  int n = pool->with_transaction([](pg::Connection& c) {
    c.exec("INSERT INTO t VALUES (1), (2)");
    return static_cast<int>(c.exec("SELECT count(*) FROM t").as_int64(0, 0));
  });
  CHECK(n == 2);

  int calls = 0;
  CHECK_THROWS_WITH(pool->with_transaction([&](pg::Connection& c) {
    ++calls;
    c.exec("INSERT INTO t VALUES (3)");
    throw std::runtime_error("application says no");
  }),
                    "application says no");
  CHECK(calls == 1);  // not a retryable failure
  // A failing statement rolls back the statements before it.
  auto e = sql_error_of([&] {
    pool->with_transaction([&](pg::Connection& c) {
      c.exec("INSERT INTO t VALUES (4)");
      c.exec("INSERT INTO t VALUES (1)");
    });
  });
  CHECK(e.code() == Code::kAlreadyExists);
  // A swallowed error must not turn into a silent rollback reported as success.
  CHECK(test::error_code_of([&] {
          pool->with_transaction([&](pg::Connection& c) {
            c.exec("INSERT INTO t VALUES (5)");
            try {
              c.exec("INSERT INTO t VALUES (1)");
            } catch (const pg::SqlError&) {
            }
          });
        }) == Code::kAborted);

  auto lease = pool->acquire();
  CHECK(lease->exec("SELECT array_agg(id ORDER BY id)::text FROM t").text(0, 0) == "{1,2}");
  CHECK(lease->tx_status() == pg::Connection::TxStatus::kIdle);
}

TEST_CASE("pg: with_transaction retries serialization failures, bounded", "[pg]") {
  PgServer pg;
  auto pool = pg.make_pool();
  pool->acquire()->exec_script(
      "CREATE TABLE counter (id int PRIMARY KEY, v int NOT NULL);"
      "INSERT INTO counter VALUES (1, 0);");
  pg::Connection other(pg.conninfo());

  // A real conflict: the first attempt reads, a concurrent transaction commits an update of
  // the same row, and the first attempt's update fails with 40001.
  int attempts = 0;
  pg::TxOptions rr;
  rr.isolation = pg::Isolation::kRepeatableRead;
  pool->with_transaction(
      [&](pg::Connection& c) {
        ++attempts;
        c.exec("SELECT v FROM counter WHERE id = 1");  // takes the snapshot
        if (attempts == 1) other.exec("UPDATE counter SET v = v + 100 WHERE id = 1");
        c.exec("UPDATE counter SET v = v + 1 WHERE id = 1");
      },
      rr);
  CHECK(attempts == 2);
  CHECK(other.exec("SELECT v FROM counter").as_int64(0, 0) == 101);

  // Retries are bounded: a transaction that always conflicts fails with kAborted.
  attempts = 0;
  pg::TxOptions three;
  three.max_attempts = 3;
  auto e = sql_error_of([&] {
    pool->with_transaction(
        [&](pg::Connection& c) {
          ++attempts;
          c.exec("DO $$ BEGIN RAISE EXCEPTION 'busy' USING ERRCODE = '40P01'; END $$");
        },
        three);
  });
  CHECK(attempts == 3);
  CHECK(e.code() == Code::kAborted);
  CHECK(e.sqlstate() == "40P01");
}

TEST_CASE("pg: with_transaction retries a connection lost before COMMIT", "[pg]") {
  PgServer pg;
  auto pool = pg.make_pool();
  pool->acquire()->exec("CREATE TABLE t (id int PRIMARY KEY)");
  pg::Connection admin(pg.conninfo());

  int attempts = 0;
  pool->with_transaction([&](pg::Connection& c) {
    ++attempts;
    c.exec("INSERT INTO t VALUES (1)");
    if (attempts == 1) {
      // Kill this session (waiting until it is gone), as a server failover would.
      CHECK(admin.exec("SELECT pg_terminate_backend($1, 5000)", c.backend_pid()).as_bool(0, 0));
      c.exec("INSERT INTO t VALUES (2)");  // fails: connection lost
    }
  });
  CHECK(attempts == 2);
  CHECK(admin.exec("SELECT array_agg(id)::text FROM t").text(0, 0) == "{1}");
  CHECK(pool->stats().open == 1);  // the dead connection was dropped, not reused
}

TEST_CASE("pg: a connection lost during COMMIT reports an unknown outcome, no retry", "[pg]") {
  PgServer pg;
  auto pool = pg.make_pool();
  // A deferred constraint trigger runs inside COMMIT; this one kills its own session.
  pool->acquire()->exec_script(R"sql(
    CREATE TABLE t (id int PRIMARY KEY);
    CREATE FUNCTION die() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      PERFORM pg_terminate_backend(pg_backend_pid());
      PERFORM pg_sleep(5);
      RETURN NULL;
    END $$;
    CREATE CONSTRAINT TRIGGER die_at_commit AFTER INSERT ON t
      DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION die();
  )sql");

  int attempts = 0;
  auto e = sql_error_of([&] {
    pool->with_transaction([&](pg::Connection& c) {
      ++attempts;
      c.exec("INSERT INTO t VALUES (1)");
    });
  });
  CHECK(attempts == 1);
  CHECK(e.code() == Code::kUnavailable);
  CHECK(std::string(e.what()).find("outcome is unknown") != std::string::npos);
  CHECK(pool->stats().open == 0);
}

TEST_CASE("pg: pool is bounded, reuses connections and drops broken ones", "[pg]") {
  PgServer pg;
  auto pool = pg.make_pool(2);
  CHECK(pool->stats().open == 0);  // lazy
  int pid1 = 0;
  {
    auto a = pool->acquire();
    auto b = pool->acquire();
    pid1 = a->backend_pid();
    CHECK(pool->stats().leased == 2);
    auto t0 = std::chrono::steady_clock::now();
    auto e = error_of([&] { pool->acquire(std::chrono::milliseconds(200)); });
    CHECK(e.code() == Code::kUnavailable);
    CHECK(std::chrono::steady_clock::now() - t0 >= std::chrono::milliseconds(190));
    // A waiter gets the connection as soon as it is returned.
    std::thread giver([lease = std::move(b)]() mutable {
      pg::Pool::Lease mine = std::move(lease);
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    });
    auto c = pool->acquire(std::chrono::seconds(5));
    giver.join();
    CHECK(c->exec("SELECT 1").as_int64(0, 0) == 1);
  }
  CHECK(pool->stats().open == 2);
  CHECK(pool->stats().idle == 2);

  // A lease left inside a transaction is rolled back on return.
  {
    auto l = pool->acquire();
    l->exec("BEGIN");
    l->exec("CREATE TABLE never (x int)");
  }
  CHECK_FALSE(table_exists(*pool->acquire(), "never"));

  // A connection the server killed is dropped instead of handed out.
  pg::Connection admin(pg.conninfo());
  admin.exec("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE pid = $1", pid1);
  for (int i = 0; i < 3; ++i) {
    auto l = pool->acquire();
    CHECK(l->backend_pid() != pid1);
    CHECK(l->exec("SELECT 1").as_int64(0, 0) == 1);
  }
  CHECK(pool->stats().open <= 2);
}

TEST_CASE("pg: the pool recovers by itself after the server restarts", "[pg]") {
  PgServer pg;
  auto pool = pg.make_pool(2);
  {
    auto a = pool->acquire();
    auto b = pool->acquire();
    a->exec("CREATE TABLE t (id int)");
  }
  std::optional<pg::Pool::Lease> held = pool->acquire();  // lives across the outage
  CHECK(pool->stats().open == 2);
  CHECK(pool->stats().idle == 1);

  pg.stop();
  for (int i = 0; i < 3; ++i) {  // keeps failing while down, and quickly
    auto t0 = std::chrono::steady_clock::now();
    auto e = sql_error_of([&] { pool->acquire()->exec("SELECT 1"); });
    CHECK(e.code() == Code::kUnavailable);
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(3));
  }
  CHECK(test::error_code_of([&] {
          pool->with_transaction([](pg::Connection& c) { c.exec("INSERT INTO t VALUES (1)"); });
        }) == Code::kUnavailable);
  auto lost = sql_error_of([&] { (*held)->exec("SELECT 1"); });
  CHECK(lost.code() == Code::kUnavailable);
  CHECK((*held)->broken());
  held.reset();  // dropped, not returned
  CHECK(pool->stats().open == 0);

  pg.start();  // same pool object, no reconfiguration
  CHECK(pool->acquire()->exec("SELECT 1").as_int64(0, 0) == 1);
  pool->with_transaction([](pg::Connection& c) { c.exec("INSERT INTO t VALUES (2)"); });
  CHECK(pool->acquire()->exec("SELECT count(*) FROM t").as_int64(0, 0) == 1);

  // A restart while connections sit idle in the pool: they are noticed and replaced.
  CHECK(pool->stats().idle >= 1);
  pg.restart();
  CHECK(pool->acquire()->exec("SELECT count(*) FROM t").as_int64(0, 0) == 1);
  pool->with_transaction([](pg::Connection& c) { c.exec("INSERT INTO t VALUES (3)"); });
}

TEST_CASE("pg: migrate applies the embedded schema once, twice is a no-op", "[pg]") {
  auto list = pg::embedded_migrations();
  REQUIRE(!list.empty());
  CHECK(list.front().version == 1);
  CHECK(list.front().name == "init");
  CHECK(list.front().sql.find("CREATE TABLE teams") != std::string_view::npos);
  for (std::size_t i = 1; i < list.size(); ++i) CHECK(list[i - 1].version < list[i].version);

  PgServer pg;
  auto pool = pg.make_pool();
  CHECK(pg::schema_version(*pool) == 0);
  CHECK(pg::migrate(*pool) == static_cast<int>(list.size()));
  CHECK(pg::schema_version(*pool) == pg::latest_embedded_version());
  CHECK(pg::migrate(*pool) == 0);
  CHECK_NOTHROW(pg::check_schema(*pool));

  auto c = pool->acquire();
  CHECK(c->exec("SELECT count(*) FROM schema_migrations").as_int64(0, 0) ==
        static_cast<std::int64_t>(list.size()));
  for (const char* t :
       {"teams", "users", "users_teams", "team_api_keys", "hosts", "host_tokens",
        "host_refresh_tokens", "templates", "sandboxes", "audit_logs", "cp_secrets"})
    CHECK(table_exists(*c, t));
  auto team =
      c->exec("SELECT name, slug FROM teams WHERE id = $1", "team-0000000000000000000000000");
  REQUIRE(team.rows() == 1);
  CHECK(team.text(0, "name") == "Platform");
  CHECK(team.text(0, "slug") == "platform");
  auto tmpl = c->exec(
      "SELECT type, vcpus, memory_mb FROM templates WHERE team_id = $1 AND name = 'minimal'",
      "team-0000000000000000000000000");
  REQUIRE(tmpl.rows() == 1);
  CHECK(tmpl.text(0, "type") == "base");
  CHECK(tmpl.as_int64(0, "vcpus") == 1);
  CHECK(tmpl.as_int64(0, "memory_mb") == 512);
}

TEST_CASE("pg: the initial schema's constraints hold", "[pg]") {
  PgServer pg;
  auto pool = pg.make_pool();
  pg::migrate(*pool);
  auto c = pool->acquire();
  const std::string team = "team-000000000000000000000000a";
  c->exec("INSERT INTO teams (id, name, slug) VALUES ($1, 'A', 'a-team')", team);
  // Malformed wire IDs and unknown states are rejected.
  CHECK(sql_error_of([&] {
          c->exec("INSERT INTO teams (id, name, slug) VALUES ('team-1', 'B', 'b')");
        }).code() == Code::kInvalidArgument);
  CHECK(sql_error_of([&] {
          c->exec(
              "INSERT INTO sandboxes (id, team_id, status) "
              "VALUES ('cl-0000000000000000000000001', $1, 'exploded')",
              team);
        }).sqlstate() == "23514");
  // Idempotency keys are unique per team, NULLs are not.
  const char* ins = "INSERT INTO sandboxes (id, team_id, idempotency_key) VALUES ($1, $2, $3)";
  c->exec(ins, "cl-0000000000000000000000001", team, "req-1");
  c->exec(ins, "cl-0000000000000000000000002", team, std::nullopt);
  c->exec(ins, "cl-0000000000000000000000003", team, std::nullopt);
  c->exec(ins, "cl-0000000000000000000000004", "team-0000000000000000000000000", "req-1");
  auto dup = sql_error_of([&] { c->exec(ins, "cl-0000000000000000000000005", team, "req-1"); });
  CHECK(dup.code() == Code::kAlreadyExists);
  CHECK(dup.constraint() == "sandboxes_idempotency_key");
  // last_updated moves on update.
  c->exec("UPDATE sandboxes SET last_updated = '2000-01-01' WHERE id = $1",
          "cl-0000000000000000000000001");
  CHECK(c->exec("SELECT last_updated > now() - interval '1 minute' FROM sandboxes WHERE id = $1",
                "cl-0000000000000000000000001")
            .as_bool(0, 0));
  // Platform template names are global.
  auto taken = sql_error_of([&] {
    c->exec(
        "INSERT INTO templates (id, team_id, name) "
        "VALUES ('tmpl-000000000000000000000000a', $1, 'minimal')",
        team);
  });
  CHECK(taken.code() == Code::kAlreadyExists);
  CHECK(taken.constraint() == "templates_platform_name");
  c->exec(
      "INSERT INTO templates (id, team_id, name) VALUES ('tmpl-000000000000000000000000a', $1, "
      "'mine')",
      team);
  // API keys are stored as sha256 hex, unique.
  CHECK(sql_error_of([&] {
          c->exec(
              "INSERT INTO team_api_keys (id, team_id, key_hash, key_prefix) "
              "VALUES ('key-0000000000000000000000001', $1, 'wrn_plaintext', 'wrn_pl')",
              team);
        }).code() == Code::kInvalidArgument);
}

TEST_CASE("pg: concurrent migrate calls are serialised by the advisory lock", "[pg]") {
  PgServer pg;
  // The first migration is slow so that the two runs overlap.
  const pg::Migration list[] = {
      {1, "slow", "CREATE TABLE a (x int); SELECT pg_sleep(0.3);"},
      {2, "second", "CREATE TABLE b (x int); INSERT INTO a VALUES (1);"},
  };
  auto pool1 = pg.make_pool(1);
  auto pool2 = pg.make_pool(1);
  std::latch go(2);
  int applied[2] = {-1, -1};
  std::string errors[2];
  auto run = [&](int i, pg::Pool& pool) {
    go.arrive_and_wait();
    try {
      applied[i] = pg::migrate(pool, list);
    } catch (const std::exception& e) {
      errors[i] = e.what();
    }
  };
  std::thread t1(run, 0, std::ref(*pool1));
  std::thread t2(run, 1, std::ref(*pool2));
  t1.join();
  t2.join();
  CHECK(errors[0] == "");
  CHECK(errors[1] == "");
  CHECK(applied[0] + applied[1] == 2);
  CHECK(std::min(applied[0], applied[1]) == 0);
  auto c = pool1->acquire();
  CHECK(c->exec("SELECT count(*) FROM a").as_int64(0, 0) == 1);
  CHECK(c->exec("SELECT array_agg(version ORDER BY version)::text FROM schema_migrations")
            .text(0, 0) == "{1,2}");
  // The lock was released.
  CHECK(c->exec("SELECT pg_try_advisory_lock($1)", pg::kMigrationLockKey).as_bool(0, 0));
}

TEST_CASE("pg: a failing migration leaves no trace and releases the lock", "[pg]") {
  PgServer pg;
  auto pool = pg.make_pool(1);
  const pg::Migration broken[] = {
      {1, "first", "CREATE TABLE a (x int);"},
      {2, "broken", "CREATE TABLE b (x int); SELECT 1 / 0;"},
  };
  auto e = sql_error_of([&] { pg::migrate(*pool, broken); });
  CHECK(e.code() == Code::kInvalidArgument);
  CHECK(std::string(e.what()).find("migration 2_broken failed") != std::string::npos);
  {
    auto c = pool->acquire();
    CHECK(pg::schema_version(*c) == 1);
    CHECK(table_exists(*c, "a"));
    CHECK_FALSE(table_exists(*c, "b"));
  }
  const pg::Migration fixed[] = {
      {1, "first", "CREATE TABLE a (x int);"},
      {2, "fixed", "CREATE TABLE b (x int);"},
  };
  pg::Pool other({.conninfo = pg.conninfo()});
  CHECK(pg::migrate(other, fixed) == 1);  // a second session gets the lock
  CHECK(pg::schema_version(other) == 2);
}

TEST_CASE("pg: check_schema names both versions when the database is behind or ahead", "[pg]") {
  PgServer pg;
  auto pool = pg.make_pool();
  const int known = pg::latest_embedded_version();
  auto behind = error_of([&] { pg::check_schema(*pool); });
  CHECK(behind.code() == Code::kFailedPrecondition);
  CHECK(std::string(behind.what()) ==
        "database schema version 0 is older than this wrenn-cp "
        "(needs " +
            std::to_string(known) + "); run `wrenn-cp migrate`");

  pg::migrate(*pool);
  CHECK_NOTHROW(pg::check_schema(*pool));
  pool->acquire()->exec("INSERT INTO schema_migrations (version, name) VALUES (9999, 'future')");
  const std::string ahead_msg =
      "database schema version 9999 is newer than this wrenn-cp "
      "(knows up to " +
      std::to_string(known) + ")";
  auto ahead = error_of([&] { pg::check_schema(*pool); });
  CHECK(ahead.code() == Code::kFailedPrecondition);
  CHECK(std::string(ahead.what()) == ahead_msg);
  // migrate refuses to touch a newer database.
  auto refused = error_of([&] { pg::migrate(*pool); });
  CHECK(refused.code() == Code::kFailedPrecondition);
  CHECK(std::string(refused.what()) == ahead_msg);
}

namespace {

// Socket inodes of a process.
std::set<std::string> socket_inodes(pid_t pid) {
  std::set<std::string> out;
  for (const auto& e :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd")) {
    std::error_code ec;
    std::string target = std::filesystem::read_symlink(e.path(), ec).string();
    if (!ec && target.rfind("socket:[", 0) == 0) out.insert(target.substr(8, target.size() - 9));
  }
  return out;
}

// Inodes of listening TCP sockets (IPv4 and IPv6) in this network namespace.
std::set<std::string> tcp_listen_inodes() {
  std::set<std::string> out;
  for (const char* file : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream f(file);
    std::string line;
    std::getline(f, line);  // header
    while (std::getline(f, line)) {
      std::istringstream ss(line);
      std::string sl, local, remote, st, queues, tr, retr, uid, timeout, inode;
      ss >> sl >> local >> remote >> st >> queues >> tr >> retr >> uid >> timeout >> inode;
      if (st == "0A") out.insert(inode);
    }
  }
  return out;
}

}  // namespace

TEST_CASE("pg: embedded server: the server listens on its unix socket only, never on TCP", "[pg]") {
  PgServer pg;
  pg::Connection c(pg.conninfo());
  CHECK(c.exec("SHOW listen_addresses").text(0, 0) == "");
  CHECK(c.exec("SELECT inet_server_addr() IS NULL").as_bool(0, 0));  // we came over the socket
  // Even ALTER SYSTEM cannot open a TCP listener: the command line pins it.
  c.exec("ALTER SYSTEM SET listen_addresses = '*'");
  pg.restart();
  pg::Connection c2(pg.conninfo());
  CHECK(c2.exec("SHOW listen_addresses").text(0, 0) == "");

  const std::set<std::string> mine = socket_inodes(pg.server().pid());
  REQUIRE(!mine.empty());
  for (const auto& inode : tcp_listen_inodes()) CHECK(mine.count(inode) == 0);
  // Positively: it does listen on the unix socket in dir/run, which only its owner reaches.
  std::ifstream unix_sockets("/proc/net/unix");
  std::stringstream all;
  all << unix_sockets.rdbuf();
  CHECK(all.str().find(pg.dir() + "/run/.s.PGSQL.5432") != std::string::npos);
  struct stat st {};
  REQUIRE(::stat((pg.dir() + "/run").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0700);
  CHECK(pg.conninfo().find("host='" + pg.dir() + "/run'") != std::string::npos);
}

TEST_CASE(
    "pg: embedded server: initdb, restart keeps data, a killed server's leftovers do not block",
    "[pg]") {
  PgServer pg(/*fresh_initdb=*/true);
  auto& server = pg.server();
  {
    pg::Connection c(pg.conninfo());
    c.exec("CREATE TABLE keep (x int)");
    c.exec("INSERT INTO keep VALUES (42)");
    CHECK(c.exec("SELECT current_user, current_database()").text(0, 0) == "wrenn");
    CHECK(c.exec("SHOW server_encoding").text(0, 0) == "UTF8");
  }
  CHECK(std::filesystem::exists(pg.dir() + "/data/PG_VERSION"));
  CHECK_FALSE(std::filesystem::exists(pg.dir() + "/data.initdb"));
  if (::geteuid() == 0) {
    // Runs as the postgres user, not root.
    std::ifstream status("/proc/" + std::to_string(server.pid()) + "/status");
    std::string line;
    while (std::getline(status, line))
      if (line.rfind("Uid:", 0) == 0) CHECK(line.find("\t0\t") == std::string::npos);
  }

  // A second instance on the same directory refuses while the first runs.
  {
    pg::EmbeddedPostgres twin(test::test_server_options());
    auto e = error_of([&] { twin.start(pg.dir()); });
    CHECK(e.code() == Code::kFailedPrecondition);
    CHECK(std::string(e.what()).find("already running") != std::string::npos);
  }

  pg.restart();
  CHECK(pg::Connection(pg.conninfo()).exec("SELECT x FROM keep").as_int64(0, 0) == 42);

  // SIGKILL leaves postmaster.pid behind; make it name a live process (PID reuse), too.
  const pid_t old = server.pid();
  REQUIRE(::kill(old, SIGKILL) == 0);
  server.stop();  // reaps
  const std::string pid_file = pg.dir() + "/data/postmaster.pid";
  REQUIRE(std::filesystem::exists(pid_file));
  std::string contents = test::read_file(pid_file);
  contents = std::to_string(::getpid()) + contents.substr(contents.find('\n'));
  test::write_file(pid_file, contents);
  pg.start();
  CHECK(server.pid() != old);
  CHECK(pg::Connection(pg.conninfo()).exec("SELECT x FROM keep").as_int64(0, 0) == 42);

  server.stop();
  CHECK_FALSE(server.running());
  CHECK(sql_error_of([&] { pg::Connection c(pg.conninfo(), std::chrono::seconds(1)); }).code() ==
        Code::kUnavailable);
}

TEST_CASE("pg: embedded server: a startup failure reports the server log", "[pg]") {
  PgServer pg;
  pg.stop();
  pg::EmbeddedOptions o = test::test_server_options();
  o.settings = {{"shared_buffers", "'not a size'"}};
  pg::EmbeddedPostgres server(o);
  auto e = error_of([&] { server.start(pg.dir()); });
  CHECK(e.code() == Code::kInternal);
  CHECK(std::string(e.what()).find("shared_buffers") != std::string::npos);
  CHECK(std::string(e.what()).find("postgres.log") != std::string::npos);
  CHECK_FALSE(server.running());
}
