#include "hosts/connection_pool.h"

#include <algorithm>

namespace wrenn::cp {

namespace {
constexpr std::size_t kReadBuffer = 64 * 1024;
}

ConnectionPool::ConnectionPool(HostEndpoint endpoint, std::shared_ptr<Transport> transport,
                               PoolOptions options)
    : endpoint_(std::move(endpoint)), transport_(std::move(transport)), options_(options) {}

ConnectionPool::~ConnectionPool() = default;

std::unique_ptr<PooledConnection> ConnectionPool::acquire(Deadline deadline) {
  std::vector<std::unique_ptr<PooledConnection>> dead;  // closed outside the lock
  {
    std::lock_guard lock(mu_);
    const auto now = Clock::now();
    while (!idle_.empty()) {
      auto c = std::move(idle_.back());
      idle_.pop_back();
      // Leftover bytes or a readable socket on an idle connection: the server closed it (or
      // sent something unasked); either way its next response cannot be trusted.
      if (now - c->idle_since > options_.idle_timeout || c->buffer.size() != 0 ||
          c->conn->readable_now()) {
        dead.push_back(std::move(c));
        continue;
      }
      c->reused = true;
      return c;
    }
  }
  dead.clear();
  return connect_new(deadline);
}

std::unique_ptr<PooledConnection> ConnectionPool::connect_new(Deadline deadline) {
  auto c = std::make_unique<PooledConnection>();
  c->conn =
      transport_->connect(endpoint_, std::min(deadline, Clock::now() + options_.connect_timeout));
  c->buffer.reserve(kReadBuffer);
  std::lock_guard lock(mu_);
  ++opened_;
  return c;
}

void ConnectionPool::release(std::unique_ptr<PooledConnection> c) {
  if (!c || options_.max_idle == 0) return;
  c->idle_since = Clock::now();
  std::unique_ptr<PooledConnection> evicted;
  std::lock_guard lock(mu_);
  if (idle_.size() >= options_.max_idle) {
    // Keep the most recent ones: drop the oldest idle connection.
    evicted = std::move(idle_.front());
    idle_.erase(idle_.begin());
  }
  idle_.push_back(std::move(c));
}

std::size_t ConnectionPool::idle_count() const {
  std::lock_guard lock(mu_);
  return idle_.size();
}

std::uint64_t ConnectionPool::connections_opened() const {
  std::lock_guard lock(mu_);
  return opened_;
}

}  // namespace wrenn::cp
