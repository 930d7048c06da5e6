// Keep-alive connections to one host agent, shared by the threads that call it.
//
// Contract:
//  - Thread-safe. acquire() hands out an idle connection (most recently used first) or
//    opens a new one; there is no cap on connections in use (the caller's worker pool
//    bounds concurrency), only on idle ones kept (max_idle).
//  - An idle connection is not handed out when it has been idle longer than idle_timeout
//    or when the server has closed it meanwhile (readable_now()); it is closed instead.
//  - Connecting is bounded by min(call deadline, now + connect_timeout).
#pragma once

#include <boost/beast/core/flat_buffer.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "hosts/transport.h"

namespace wrenn::cp {

struct PoolOptions {
  std::size_t max_idle = 16;
  std::chrono::milliseconds idle_timeout{std::chrono::seconds(60)};
  std::chrono::milliseconds connect_timeout{std::chrono::seconds(10)};
};

// A connection with the bytes read ahead on it (the next response may start there).
struct PooledConnection {
  std::unique_ptr<Connection> conn;
  boost::beast::flat_buffer buffer;
  Clock::time_point idle_since{};
  bool reused = false;  // it carried an earlier request
};

class ConnectionPool {
 public:
  ConnectionPool(HostEndpoint endpoint, std::shared_ptr<Transport> transport, PoolOptions options);
  ~ConnectionPool();
  ConnectionPool(const ConnectionPool&) = delete;
  ConnectionPool& operator=(const ConnectionPool&) = delete;

  const HostEndpoint& endpoint() const { return endpoint_; }

  // An idle live connection (reused = true) or a new one. Throws Error(kUnavailable).
  std::unique_ptr<PooledConnection> acquire(Deadline deadline);
  // Always a new connection (the retry after a stale one failed).
  std::unique_ptr<PooledConnection> connect_new(Deadline deadline);
  // Takes back a connection whose last response was read completely and that the server
  // keeps open; closes it when the pool already holds max_idle.
  void release(std::unique_ptr<PooledConnection> c);

  std::size_t idle_count() const;
  // Connections opened since construction.
  std::uint64_t connections_opened() const;

 private:
  HostEndpoint endpoint_;
  std::shared_ptr<Transport> transport_;
  PoolOptions options_;
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<PooledConnection>> idle_;  // most recently released last
  std::uint64_t opened_ = 0;
};

}  // namespace wrenn::cp
