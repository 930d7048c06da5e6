// One PostgreSQL connection (blocking libpq) and the results it returns.
//
// Contract: every failure raises pg::SqlError, a wrenn::Error carrying the SQLSTATE. The
// code is chosen from the SQLSTATE in one place (classify_sqlstate):
//   23505 unique_violation, 23P01 exclusion_violation      -> kAlreadyExists
//   23502 not_null, 23514 check, class 22 data exceptions   -> kInvalidArgument
//   23503 foreign_key_violation, other class 23             -> kFailedPrecondition
//   40001 serialization_failure, 40P01 deadlock, class 40,
//   55P03 lock_not_available                                -> kAborted
//   class 08, 57P01..57P03 (shutdown), 53300, lost conn.    -> kUnavailable
//   57014 query_canceled (statement_timeout)                -> kDeadlineExceeded
//   other class 53 (out of resources)                       -> kResourceExhausted
//   anything else (syntax errors, bugs)                     -> kInternal
// Error messages name the failure and the constraint/column, never parameter values or row
// contents: the server's DETAIL (which echoes rows) is dropped, and for class 22 (whose
// primary messages quote the offending value) only the condition name is kept. Parameters
// may therefore be secrets.
//
// Thread-safety: a Connection is used by one thread at a time; distinct Connections are
// independent. Result is immutable and safe to read from several threads.
#pragma once

#include <chrono>
#include <concepts>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "error.h"

struct pg_conn;
struct pg_result;

namespace wrenn::pg {

class SqlError : public Error {
 public:
  SqlError(Code code, std::string sqlstate, std::string message, std::string constraint = {})
      : Error(code, std::move(message)),
        sqlstate_(std::move(sqlstate)),
        constraint_(std::move(constraint)) {}
  // Five-character SQLSTATE ("23505"); "08006" for a connection lost without one from the
  // server, "08001" for a failed connect.
  const std::string& sqlstate() const { return sqlstate_; }
  // Name of the violated constraint for class 23 errors, else empty.
  const std::string& constraint() const { return constraint_; }

 private:
  std::string sqlstate_;
  std::string constraint_;
};

// The wrenn::Code for a SQLSTATE (table above).
Code classify_sqlstate(std::string_view sqlstate);

// A text-format parameter; nullopt is SQL NULL.
using Param = std::optional<std::string>;
using Params = std::vector<Param>;

// Conversions used by the variadic exec(): strings as-is, integers in decimal, bools as
// "true"/"false", nullopt and empty optionals as NULL.
inline Param to_param(std::nullopt_t) {
  return std::nullopt;
}
inline Param to_param(bool v) {
  return std::string(v ? "true" : "false");
}
inline Param to_param(std::string_view v) {
  return std::string(v);
}
inline Param to_param(const char* v) {
  return std::string(v);
}
inline Param to_param(const std::string& v) {
  return v;
}
template <std::integral T>
requires(!std::same_as<T, bool>) Param to_param(T v) {
  return std::to_string(v);
}
template <class T>
Param to_param(const std::optional<T>& v) {
  if (!v) return std::nullopt;
  return to_param(*v);
}

// Rows x columns of one statement's result, all values in text format. Accessors with a
// column name look it up case-sensitively. Out-of-range rows/columns, unknown column names,
// NULL in a non-optional getter and unparsable typed values raise Error(kInternal) (they
// are programming errors, not user errors).
class Result {
 public:
  Result() = default;
  explicit Result(pg_result* res);  // takes ownership

  int rows() const;
  int columns() const;
  bool empty() const { return rows() == 0; }
  // Rows inserted/updated/deleted by INSERT/UPDATE/DELETE/MERGE (0 for other commands).
  std::int64_t affected_rows() const;
  // The command tag ("INSERT 0 1", "COMMIT", "ROLLBACK").
  std::string_view command_status() const;

  int column(std::string_view name) const;
  std::string_view column_name(int col) const;

  bool is_null(int row, int col) const;
  bool is_null(int row, std::string_view col) const { return is_null(row, column(col)); }
  std::string_view text(int row, int col) const;
  std::string_view text(int row, std::string_view col) const { return text(row, column(col)); }
  std::optional<std::string_view> opt_text(int row, int col) const;
  std::optional<std::string_view> opt_text(int row, std::string_view col) const {
    return opt_text(row, column(col));
  }
  std::int64_t as_int64(int row, int col) const;
  std::int64_t as_int64(int row, std::string_view col) const { return as_int64(row, column(col)); }
  std::optional<std::int64_t> opt_int64(int row, int col) const;
  std::optional<std::int64_t> opt_int64(int row, std::string_view col) const {
    return opt_int64(row, column(col));
  }
  bool as_bool(int row, int col) const;
  bool as_bool(int row, std::string_view col) const { return as_bool(row, column(col)); }
  std::optional<bool> opt_bool(int row, int col) const;
  std::optional<bool> opt_bool(int row, std::string_view col) const {
    return opt_bool(row, column(col));
  }

 private:
  void check(int row, int col) const;
  std::shared_ptr<pg_result> res_;
};

class Connection {
 public:
  // Connects to conninfo (a "key=value ..." string or a postgres:// URI). connect_timeout
  // applies unless conninfo sets its own (libpq rounds it to whole seconds, minimum 2).
  // TCP keepalives are enabled so a vanished server is noticed.
  // Errors: SqlError(kUnavailable, "08001") naming the server's or libpq's reason.
  explicit Connection(const std::string& conninfo,
                      std::chrono::milliseconds connect_timeout = std::chrono::seconds(5));
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Runs one statement with text parameters $1..$n (extended protocol: a single statement,
  // no SQL injection through parameters). Errors: SqlError as described at the top.
  Result exec(std::string_view sql, const Params& params = {});
  // exec() with parameters converted by to_param: exec("... $1, $2", 42, "x").
  template <class First, class... Rest>
  requires(!std::same_as<std::remove_cvref_t<First>, Params> || sizeof...(Rest) > 0) Result
      exec(std::string_view sql, const First& first, const Rest&... rest) {
    return exec(sql, Params{to_param(first), to_param(rest)...});
  }
  // Runs a script of several statements without parameters (simple protocol), as used by
  // migrations. A failure aborts the rest of the script.
  void exec_script(std::string_view sql);

  // True once the connection is unusable (lost, or never established); a broken
  // connection never recovers — drop it.
  bool broken() const;
  // libpq's transaction status: idle, in a transaction, in a failed transaction, or
  // unknown (broken).
  enum class TxStatus { kIdle, kInTransaction, kInFailedTransaction, kActive, kUnknown };
  TxStatus tx_status() const;
  // Server process id of this session (for pg_terminate_backend in tests).
  int backend_pid() const;
  pg_conn* native() { return conn_; }

 private:
  [[noreturn]] void raise(pg_result* res);
  pg_conn* conn_ = nullptr;
};

// Quotes a value for a libpq "key=value" conninfo string.
std::string conninfo_quote(std::string_view value);

}  // namespace wrenn::pg
