// ChunkPipe: a bounded queue of byte chunks between an I/O coroutine (the HTTP exchange)
// and one blocking worker thread (a HostClient read_file/write_file call), so a transfer
// of any size streams through the control plane in constant memory.
//
// Contract:
//  - At most `capacity` chunks are queued; the producing side waits while the queue is
//    full: the worker blocks (condition variable), the coroutine suspends (no thread is
//    held). With 4 chunks of at most 64 KiB, a transfer holds ~256 KiB whatever its size.
//  - One producer and one consumer: the worker on one side, the coroutine on the other.
//    Download: worker push() -> coroutine async_pop(). Upload: coroutine async_push() ->
//    worker pop(), the coroutine close()s after the last chunk.
//  - The worker reports its end with finish(exception or null). The coroutine gives up
//    with abort(): the worker's next (or current) push()/pop() throws
//    Error(kCanceled, "transfer aborted"), which ends the host call; the coroutine must then
//    still co_await wait_finished() before the worker's captures may die.
//  - Thread-safe between the two sides; the coroutine side is used by one coroutine at a
//    time, resumed on its own executor.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <optional>
#include <string>

namespace wrenn::cp {

class ChunkPipe {
 public:
  explicit ChunkPipe(std::size_t capacity = 4) : capacity_(capacity == 0 ? 1 : capacity) {}
  ChunkPipe(const ChunkPipe&) = delete;
  ChunkPipe& operator=(const ChunkPipe&) = delete;

  // ---- The worker thread (blocking) ----
  // Queues a chunk (empty chunks are dropped), waiting while the queue is full.
  void push(std::string chunk);
  // The next chunk; "" once the coroutine closed the stream and the queue is empty.
  std::string pop();
  // The worker is done (e: its failure, or null).
  void finish(std::exception_ptr e);

  // ---- The I/O coroutine ----
  // Queues a chunk, suspending while the queue is full. false (chunk dropped) once the
  // worker has finished: it will take nothing more; collect its outcome with
  // wait_finished().
  boost::asio::awaitable<bool> async_push(std::string chunk);
  // The next chunk; nullopt once the worker finished and the queue is drained.
  boost::asio::awaitable<std::optional<std::string>> async_pop();
  // No more chunks (the worker's pop() then returns "").
  void close();
  // Gives up: the worker's blocking calls throw Error(kCanceled) from now on.
  void abort();
  // Suspends until finish(); its exception (null on success).
  boost::asio::awaitable<std::exception_ptr> wait_finished();

  // Most chunks ever queued at once (tests).
  std::size_t high_water() const;

 private:
  // Suspends until the state changed after `seen` (the version read under the lock).
  boost::asio::awaitable<void> wait_change(std::uint64_t seen);
  // Under the lock: bump the version, wake the worker, and take the coroutine's waiter.
  std::function<void()> changed_locked();

  const std::size_t capacity_;
  mutable std::mutex m_;
  std::condition_variable cv_;
  std::deque<std::string> q_;
  std::size_t high_water_ = 0;
  std::uint64_t version_ = 0;
  bool closed_ = false;
  bool aborted_ = false;
  bool finished_ = false;
  std::exception_ptr failure_;
  std::function<void()> waiter_;  // resumes the suspended coroutine (posts to its executor)
  std::uint64_t waiter_seen_ = 0;
};

}  // namespace wrenn::cp
