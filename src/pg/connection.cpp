#include "connection.h"

#include <libpq-fe.h>

#include <charconv>
#include <cstring>

#include "log.h"

namespace wrenn::pg {

namespace {

// First line of a libpq/server message, without trailing whitespace.
std::string first_line(const char* msg) {
  if (!msg) return {};
  std::string s(msg);
  if (auto nl = s.find('\n'); nl != std::string::npos) s.resize(nl);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\r' || s.back() == '\t')) s.pop_back();
  return s;
}

// Descriptions of class-22 conditions. The server's own messages for these quote the
// offending value (which may be a secret parameter), so they are never passed on.
std::string_view data_exception_name(std::string_view state) {
  struct Entry {
    std::string_view state, name;
  };
  static constexpr Entry kNames[] = {
      {"22001", "value too long for its column type"},
      {"22003", "numeric value out of range"},
      {"22007", "invalid datetime format"},
      {"22008", "datetime field out of range"},
      {"22012", "division by zero"},
      {"22021", "invalid byte sequence for the encoding"},
      {"22023", "invalid parameter value"},
      {"22P02", "invalid input syntax for the column type"},
      {"22P05", "untranslatable character"},
      {"2200N", "invalid XML content"},
      {"22030", "duplicate JSON object key"},
      {"22032", "invalid JSON text"},
  };
  for (const auto& e : kNames)
    if (e.state == state) return e.name;
  return "invalid data";
}

std::string describe(std::string_view state, const pg_result* res) {
  auto field = [&](int code) -> std::string {
    const char* v = res ? PQresultErrorField(res, code) : nullptr;
    return v ? v : "";
  };
  std::string msg = "postgres: ";
  if (state.substr(0, 2) == "22") {
    msg += data_exception_name(state);
    std::string column = field(PG_DIAG_COLUMN_NAME);
    std::string type = field(PG_DIAG_DATATYPE_NAME);
    if (!column.empty()) msg += " (column " + column + ")";
    if (!type.empty()) msg += " (type " + type + ")";
  } else {
    msg += first_line(PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
  }
  msg += " (SQLSTATE ";
  msg += state;
  msg += ")";
  return msg;
}

// Server notices ("relation already exists, skipping", RAISE NOTICE) go to the debug log
// instead of libpq's default, a raw line on stderr.
void on_notice(void*, const PGresult* res) {
  const char* msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
  const char* state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
  log::debug("postgres notice", {{"message", msg ? msg : ""}, {"sqlstate", state ? state : ""}});
}

}  // namespace

Code classify_sqlstate(std::string_view s) {
  if (s.size() != 5) return Code::kInternal;
  const std::string_view cls = s.substr(0, 2);
  if (s == "23505" || s == "23P01") return Code::kAlreadyExists;
  if (s == "23502" || s == "23514" || cls == "22") return Code::kInvalidArgument;
  if (cls == "23") return Code::kFailedPrecondition;
  if (cls == "40" || s == "55P03") return Code::kAborted;
  if (cls == "08" || s == "57P01" || s == "57P02" || s == "57P03" || s == "53300")
    return Code::kUnavailable;
  if (s == "57014") return Code::kDeadlineExceeded;
  if (cls == "53") return Code::kResourceExhausted;
  return Code::kInternal;
}

std::string conninfo_quote(std::string_view value) {
  std::string out = "'";
  for (char c : value) {
    if (c == '\'' || c == '\\') out += '\\';
    out += c;
  }
  out += '\'';
  return out;
}

// --- Result -------------------------------------------------------------------------------

Result::Result(pg_result* res) : res_(res, PQclear) {}

int Result::rows() const {
  return res_ ? PQntuples(res_.get()) : 0;
}
int Result::columns() const {
  return res_ ? PQnfields(res_.get()) : 0;
}

std::int64_t Result::affected_rows() const {
  if (!res_) return 0;
  const char* n = PQcmdTuples(res_.get());
  std::int64_t v = 0;
  if (n && *n) std::from_chars(n, n + std::strlen(n), v);
  return v;
}

std::string_view Result::command_status() const {
  return res_ ? std::string_view(PQcmdStatus(res_.get())) : std::string_view();
}

int Result::column(std::string_view name) const {
  for (int c = 0; c < columns(); ++c)
    if (name == PQfname(res_.get(), c)) return c;
  throw Error(Code::kInternal, "postgres: result has no column " + std::string(name));
}

std::string_view Result::column_name(int col) const {
  check(-1, col);
  return PQfname(res_.get(), col);
}

void Result::check(int row, int col) const {
  // row == -1 skips the row check.
  if (row != -1 && (row < 0 || row >= rows()))
    throw Error(Code::kInternal, "postgres: row " + std::to_string(row) + " out of range (" +
                                     std::to_string(rows()) + " rows)");
  if (col < 0 || col >= columns())
    throw Error(Code::kInternal, "postgres: column " + std::to_string(col) + " out of range (" +
                                     std::to_string(columns()) + " columns)");
}

bool Result::is_null(int row, int col) const {
  check(row, col);
  return PQgetisnull(res_.get(), row, col) != 0;
}

std::optional<std::string_view> Result::opt_text(int row, int col) const {
  if (is_null(row, col)) return std::nullopt;
  return std::string_view(PQgetvalue(res_.get(), row, col), PQgetlength(res_.get(), row, col));
}

std::string_view Result::text(int row, int col) const {
  auto v = opt_text(row, col);
  if (!v)
    throw Error(Code::kInternal,
                "postgres: column " + std::string(PQfname(res_.get(), col)) + " is NULL");
  return *v;
}

std::optional<std::int64_t> Result::opt_int64(int row, int col) const {
  auto v = opt_text(row, col);
  if (!v) return std::nullopt;
  std::int64_t out = 0;
  auto [p, ec] = std::from_chars(v->data(), v->data() + v->size(), out);
  if (ec != std::errc() || p != v->data() + v->size())
    throw Error(Code::kInternal,
                "postgres: column " + std::string(PQfname(res_.get(), col)) + " is not an integer");
  return out;
}

std::int64_t Result::as_int64(int row, int col) const {
  auto v = opt_int64(row, col);
  if (!v)
    throw Error(Code::kInternal,
                "postgres: column " + std::string(PQfname(res_.get(), col)) + " is NULL");
  return *v;
}

std::optional<bool> Result::opt_bool(int row, int col) const {
  auto v = opt_text(row, col);
  if (!v) return std::nullopt;
  if (*v == "t" || *v == "true") return true;
  if (*v == "f" || *v == "false") return false;
  throw Error(Code::kInternal,
              "postgres: column " + std::string(PQfname(res_.get(), col)) + " is not a boolean");
}

bool Result::as_bool(int row, int col) const {
  auto v = opt_bool(row, col);
  if (!v)
    throw Error(Code::kInternal,
                "postgres: column " + std::string(PQfname(res_.get(), col)) + " is NULL");
  return *v;
}

// --- Connection ---------------------------------------------------------------------------

Connection::Connection(const std::string& conninfo, std::chrono::milliseconds connect_timeout) {
  long secs = std::max<long>(1, static_cast<long>((connect_timeout.count() + 999) / 1000));
  const std::string timeout = std::to_string(secs);
  // Keywords before "dbname" are defaults that conninfo (expanded from dbname) overrides.
  const char* keys[] = {
      "connect_timeout",  "keepalives",       "keepalives_idle", "keepalives_interval",
      "keepalives_count", "application_name", "dbname",          nullptr};
  const char* values[] = {timeout.c_str(),  "1",    "30", "10", "3", "wrenn",
                          conninfo.c_str(), nullptr};
  conn_ = PQconnectdbParams(keys, values, /*expand_dbname=*/1);
  if (!conn_) throw SqlError(Code::kUnavailable, "08001", "postgres: out of memory connecting");
  if (PQstatus(conn_) != CONNECTION_OK) {
    // libpq's message names the server and the reason; it never contains the password.
    std::string why = first_line(PQerrorMessage(conn_));
    PQfinish(conn_);
    conn_ = nullptr;
    throw SqlError(Code::kUnavailable, "08001", "postgres: cannot connect: " + why);
  }
  PQsetNoticeReceiver(conn_, on_notice, nullptr);
}

Connection::~Connection() {
  if (conn_) PQfinish(conn_);
}

bool Connection::broken() const {
  return !conn_ || PQstatus(conn_) != CONNECTION_OK;
}

Connection::TxStatus Connection::tx_status() const {
  if (!conn_) return TxStatus::kUnknown;
  switch (PQtransactionStatus(conn_)) {
    case PQTRANS_IDLE:
      return TxStatus::kIdle;
    case PQTRANS_INTRANS:
      return TxStatus::kInTransaction;
    case PQTRANS_INERROR:
      return TxStatus::kInFailedTransaction;
    case PQTRANS_ACTIVE:
      return TxStatus::kActive;
    default:
      return TxStatus::kUnknown;
  }
}

int Connection::backend_pid() const {
  return conn_ ? PQbackendPID(conn_) : 0;
}

void Connection::raise(pg_result* raw) {
  Result owner(raw);  // frees raw on the way out
  if (broken()) {
    // The connection died: the server may have said why (57P01 admin_shutdown) or not.
    const char* st = raw ? PQresultErrorField(raw, PG_DIAG_SQLSTATE) : nullptr;
    const char* primary = raw ? PQresultErrorField(raw, PG_DIAG_MESSAGE_PRIMARY) : nullptr;
    std::string state = st ? st : "08006";
    std::string why = first_line(primary ? primary : PQerrorMessage(conn_));
    for (std::string_view severity : {"FATAL:  ", "PANIC:  ", "ERROR:  "})
      if (why.rfind(severity, 0) == 0) why.erase(0, severity.size());
    throw SqlError(Code::kUnavailable, state,
                   "postgres: connection lost: " + why + " (SQLSTATE " + state + ")");
  }
  if (!raw)
    throw SqlError(Code::kInternal, "XX000", "postgres: " + first_line(PQerrorMessage(conn_)));
  const char* st = PQresultErrorField(raw, PG_DIAG_SQLSTATE);
  if (!st) {
    // A client-side failure (libpq found a protocol problem); nothing from the server.
    throw SqlError(Code::kInternal, "XX000", "postgres: " + first_line(PQresultErrorMessage(raw)));
  }
  const char* constraint = PQresultErrorField(raw, PG_DIAG_CONSTRAINT_NAME);
  throw SqlError(classify_sqlstate(st), st, describe(st, raw), constraint ? constraint : "");
}

Result Connection::exec(std::string_view sql, const Params& params) {
  if (!conn_) throw SqlError(Code::kUnavailable, "08003", "postgres: connection is closed");
  std::vector<const char*> values;
  values.reserve(params.size());
  for (const auto& p : params) values.push_back(p ? p->c_str() : nullptr);
  const std::string query(sql);
  pg_result* res = PQexecParams(conn_, query.c_str(), static_cast<int>(values.size()), nullptr,
                                values.data(), nullptr, nullptr, /*resultFormat=*/0);
  if (!res) raise(nullptr);
  switch (PQresultStatus(res)) {
    case PGRES_COMMAND_OK:
    case PGRES_TUPLES_OK:
    case PGRES_EMPTY_QUERY:
      return Result(res);
    default:
      raise(res);
  }
}

void Connection::exec_script(std::string_view sql) {
  if (!conn_) throw SqlError(Code::kUnavailable, "08003", "postgres: connection is closed");
  const std::string script(sql);
  if (!PQsendQuery(conn_, script.c_str())) raise(nullptr);
  // Drain every result; remember the first failure (the server stops at it).
  pg_result* failure = nullptr;
  while (pg_result* res = PQgetResult(conn_)) {
    ExecStatusType st = PQresultStatus(res);
    if (!failure && st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_EMPTY_QUERY)
      failure = res;
    else
      PQclear(res);
  }
  if (failure) raise(failure);
  if (broken()) raise(nullptr);
}

}  // namespace wrenn::pg
