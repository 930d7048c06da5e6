// A fixed-size pool of blocking PostgreSQL connections, shared by a thread pool.
//
// Contract:
// - Connections are made lazily, at most max_size at a time. acquire() hands out an idle
//   connection or makes a new one; a lease returns it on destruction. Broken connections
//   (and ones left in an unknown state) are dropped, never returned, so the pool heals by
//   itself: while the server is down acquire() fails with kUnavailable, and once it is back
//   acquire() connects again — no restart of the process or the Pool is needed.
// - An idle connection that received unsolicited input from the server (the server shut
//   down, or terminated the session) is dropped at acquire() instead of being handed out.
// - with_transaction(fn) runs fn(Connection&) between BEGIN and COMMIT and returns what fn
//   returns. An exception from fn rolls back and propagates. The whole attempt (BEGIN, fn,
//   COMMIT) is retried, up to max_attempts with exponential backoff, when it failed with a
//   serialization failure (40001) or deadlock (40P01) — including one reported by COMMIT —
//   or because the connection was lost (or could not be made) before COMMIT was sent.
//   fn may therefore run more than once and must have no effects outside the transaction.
// - If the connection is lost while COMMIT is in flight, nobody knows whether the
//   transaction committed: with_transaction raises SqlError(kUnavailable) whose message
//   says "outcome is unknown", and does not retry. Callers that must know re-read the
//   state (or make the transaction idempotent, e.g. with an idempotency key).
// - If fn swallowed an SQL error, the transaction is in the failed state and COMMIT would
//   silently roll back; with_transaction rolls back and raises Error(kAborted) instead.
//
// Errors: acquire() raises SqlError(kUnavailable, "08001") when it cannot connect and
// Error(kUnavailable) when all max_size connections stay busy for the whole timeout.
//
// Thread-safety: all Pool methods may be called concurrently. A Lease (and its
// Connection) belongs to one thread at a time. Leases may outlive the Pool object (they
// keep its shared state alive).
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>

#include "connection.h"

namespace wrenn::pg {

struct PoolOptions {
  std::string conninfo;
  std::size_t max_size = 8;
  std::chrono::milliseconds connect_timeout = std::chrono::seconds(5);
  // Default wait for a free connection in acquire() and with_transaction().
  std::chrono::milliseconds acquire_timeout = std::chrono::seconds(5);
  // with_transaction: total attempts and the first retry delay (doubling, with jitter,
  // capped at backoff_max).
  int max_attempts = 5;
  std::chrono::milliseconds backoff_initial = std::chrono::milliseconds(10);
  std::chrono::milliseconds backoff_max = std::chrono::milliseconds(500);
};

enum class Isolation { kReadCommitted, kRepeatableRead, kSerializable };

struct TxOptions {
  Isolation isolation = Isolation::kReadCommitted;
  bool read_only = false;
  int max_attempts = 0;  // 0: the pool's max_attempts
};

class Pool {
 public:
  struct State;

  // Owns one connection until destroyed, then gives it back to the pool (or drops it if it
  // is broken or cannot be returned to an idle state).
  class Lease {
   public:
    Lease(Lease&&) noexcept = default;
    Lease& operator=(Lease&&) noexcept;
    ~Lease();
    Connection& operator*() const { return *conn_; }
    Connection* operator->() const { return conn_.get(); }
    Connection& conn() const { return *conn_; }

   private:
    friend class Pool;
    Lease(std::shared_ptr<State> state, std::unique_ptr<Connection> conn)
        : state_(std::move(state)), conn_(std::move(conn)) {}
    void release() noexcept;
    std::shared_ptr<State> state_;
    std::unique_ptr<Connection> conn_;
  };

  struct Stats {
    std::size_t open = 0;    // connections made and not dropped (idle + leased)
    std::size_t idle = 0;    // waiting in the pool
    std::size_t leased = 0;  // handed out
  };

  // Does not connect. Errors: Error(kInvalidArgument) if max_size is 0.
  explicit Pool(PoolOptions options);
  ~Pool();
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  Lease acquire();
  Lease acquire(std::chrono::milliseconds timeout);

  template <class F>
  std::invoke_result_t<F&, Connection&> with_transaction(F&& fn, const TxOptions& tx = {}) {
    using R = std::invoke_result_t<F&, Connection&>;
    static_assert(!std::is_reference_v<R>, "with_transaction cannot return a reference");
    if constexpr (std::is_void_v<R>) {
      run_transaction(tx, [&](Connection& c) { fn(c); });
    } else {
      std::optional<R> out;
      run_transaction(tx, [&](Connection& c) { out.emplace(fn(c)); });
      return std::move(*out);
    }
  }

  Stats stats() const;
  const PoolOptions& options() const;

 private:
  void run_transaction(const TxOptions& tx, const std::function<void(Connection&)>& body);
  std::shared_ptr<State> state_;
};

}  // namespace wrenn::pg
