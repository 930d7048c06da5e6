#include "pool.h"

#include <libpq-fe.h>
#include <poll.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <random>
#include <thread>

#include "log.h"

namespace wrenn::pg {

struct Pool::State {
  explicit State(PoolOptions o) : options(std::move(o)) {}

  const PoolOptions options;
  mutable std::mutex mu;
  std::condition_variable cv;
  std::deque<std::unique_ptr<Connection>> idle;  // most recently returned at the back
  std::size_t open = 0;                          // idle + leased + being connected

  // Takes back a connection; drops it unless it is healthy and idle.
  void give_back(std::unique_ptr<Connection> conn) noexcept {
    try {
      using S = Connection::TxStatus;
      S st = conn->broken() ? S::kUnknown : conn->tx_status();
      if (st == S::kInTransaction || st == S::kInFailedTransaction) {
        // Someone left a transaction open (an exception between BEGIN and COMMIT).
        conn->exec("ROLLBACK");
        st = conn->tx_status();
      }
      if (st != S::kIdle) conn.reset();
    } catch (...) {
      conn.reset();
    }
    {
      std::lock_guard lock(mu);
      if (conn)
        idle.push_back(std::move(conn));
      else
        --open;
    }
    cv.notify_one();
  }
};

namespace {

// An idle connection expects no input: anything readable is a FATAL from a shutting-down
// server, EOF, or an unsolicited message. Such connections are not worth handing out.
bool looks_alive(Connection& c) {
  if (c.broken()) return false;
  pollfd p{};
  p.fd = PQsocket(c.native());
  if (p.fd < 0) return false;
  p.events = POLLIN;
  int n = ::poll(&p, 1, 0);
  return n == 0;
}

}  // namespace

Pool::Lease& Pool::Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    release();
    state_ = std::move(other.state_);
    conn_ = std::move(other.conn_);
  }
  return *this;
}

Pool::Lease::~Lease() {
  release();
}

void Pool::Lease::release() noexcept {
  if (conn_ && state_) state_->give_back(std::move(conn_));
  conn_.reset();
}

Pool::Pool(PoolOptions options) {
  if (options.max_size == 0) throw Error(Code::kInvalidArgument, "pg pool: max_size must be > 0");
  if (options.max_attempts < 1) options.max_attempts = 1;
  state_ = std::make_shared<State>(std::move(options));
}

Pool::~Pool() = default;

const PoolOptions& Pool::options() const {
  return state_->options;
}

Pool::Stats Pool::stats() const {
  std::lock_guard lock(state_->mu);
  Stats s;
  s.open = state_->open;
  s.idle = state_->idle.size();
  s.leased = s.open - s.idle;
  return s;
}

Pool::Lease Pool::acquire() {
  return acquire(state_->options.acquire_timeout);
}

Pool::Lease Pool::acquire(std::chrono::milliseconds timeout) {
  State& st = *state_;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::unique_lock lock(st.mu);
  for (;;) {
    while (!st.idle.empty()) {
      std::unique_ptr<Connection> c = std::move(st.idle.back());
      st.idle.pop_back();
      if (looks_alive(*c)) return Lease(state_, std::move(c));
      --st.open;  // stale: drop it (PQfinish outside the lock is not worth the bother)
    }
    if (st.open < st.options.max_size) break;
    if (st.cv.wait_until(lock, deadline) == std::cv_status::timeout && st.idle.empty() &&
        st.open >= st.options.max_size)
      throw Error(Code::kUnavailable, "pg pool: no connection free within " +
                                          std::to_string(timeout.count()) + " ms (" +
                                          std::to_string(st.open) + " in use)");
  }
  ++st.open;  // reserve the slot, connect without holding the lock
  lock.unlock();
  try {
    auto c = std::make_unique<Connection>(st.options.conninfo, st.options.connect_timeout);
    return Lease(state_, std::move(c));
  } catch (...) {
    lock.lock();
    --st.open;
    lock.unlock();
    st.cv.notify_one();
    throw;
  }
}

namespace {

const char* begin_statement(const TxOptions& tx) {
  switch (tx.isolation) {
    case Isolation::kSerializable:
      return tx.read_only ? "BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY"
                          : "BEGIN ISOLATION LEVEL SERIALIZABLE";
    case Isolation::kRepeatableRead:
      return tx.read_only ? "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
                          : "BEGIN ISOLATION LEVEL REPEATABLE READ";
    case Isolation::kReadCommitted:
      break;
  }
  return tx.read_only ? "BEGIN READ ONLY" : "BEGIN";
}

bool is_conflict(const SqlError& e) {
  return e.sqlstate() == "40001" || e.sqlstate() == "40P01";
}

}  // namespace

void Pool::run_transaction(const TxOptions& tx, const std::function<void(Connection&)>& body) {
  const PoolOptions& opt = state_->options;
  const int attempts = tx.max_attempts > 0 ? tx.max_attempts : opt.max_attempts;
  auto backoff = opt.backoff_initial;
  thread_local std::minstd_rand rng(std::random_device{}());

  for (int attempt = 1;; ++attempt) {
    // Why this attempt failed in a retryable way; empty if it did not.
    std::string retry_state;
    std::exception_ptr failure;
    {
      std::optional<Lease> lease;
      bool committing = false;
      try {
        lease.emplace(acquire());
        Connection& c = **lease;
        c.exec(begin_statement(tx));
        body(c);
        if (c.tx_status() == Connection::TxStatus::kInFailedTransaction)
          throw Error(Code::kAborted,
                      "pg: a statement in the transaction failed and the error was swallowed; "
                      "rolled back");
        committing = true;
        Result r = c.exec("COMMIT");
        if (r.command_status() == "ROLLBACK")
          throw Error(Code::kAborted, "pg: transaction was rolled back at COMMIT");
        return;
      } catch (const SqlError& e) {
        const bool lost = !lease || (*lease)->broken();
        if (committing && lost) {
          throw SqlError(Code::kUnavailable, e.sqlstate(),
                         "pg: connection lost during COMMIT; the transaction's outcome is "
                         "unknown (" +
                             std::string(e.what()) + ")");
        }
        if (is_conflict(e) || (lost && e.code() == Code::kUnavailable)) {
          retry_state = e.sqlstate();
        }
        failure = std::current_exception();
      } catch (...) {
        failure = std::current_exception();
      }
      // The lease's destructor rolls back whatever is still open (or drops the connection).
    }
    if (retry_state.empty() || attempt >= attempts) std::rethrow_exception(failure);
    auto jitter = std::chrono::milliseconds(
        std::uniform_int_distribution<long>(0, std::max<long>(1, backoff.count() / 2))(rng));
    log::debug("pg: retrying transaction",
               {{"attempt", std::to_string(attempt)}, {"sqlstate", retry_state}});
    std::this_thread::sleep_for(backoff + jitter);
    backoff = std::min(backoff * 2, opt.backoff_max);
  }
}

}  // namespace wrenn::pg
