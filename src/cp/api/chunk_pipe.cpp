#include "api/chunk_pipe.h"

#include <algorithm>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <memory>

#include "error.h"

namespace wrenn::cp {

namespace asio = boost::asio;

namespace {
[[noreturn]] void aborted() {
  throw Error(Code::kCanceled, "transfer aborted");
}
}  // namespace

std::function<void()> ChunkPipe::changed_locked() {
  ++version_;
  cv_.notify_all();
  return std::exchange(waiter_, nullptr);
}

asio::awaitable<void> ChunkPipe::wait_change(std::uint64_t seen) {
  auto init = [this, seen](auto handler) {
    using H = decltype(handler);
    auto h = std::make_shared<H>(std::move(handler));
    auto ex = asio::get_associated_executor(*h);
    // Resuming always goes through the coroutine's executor, never inline on the worker.
    std::function<void()> resume = [h, ex]() { asio::post(ex, [h]() { std::move (*h)(); }); };
    std::unique_lock lk(m_);
    if (version_ != seen) {
      lk.unlock();
      resume();
      return;
    }
    waiter_ = std::move(resume);
  };
  auto op = asio::async_initiate<const asio::use_awaitable_t<>&, void()>(init, asio::use_awaitable);
  co_await std::move(op);
}

void ChunkPipe::push(std::string chunk) {
  if (chunk.empty()) return;
  std::function<void()> wake;
  {
    std::unique_lock lk(m_);
    cv_.wait(lk, [&] { return aborted_ || q_.size() < capacity_; });
    if (aborted_) aborted();
    q_.push_back(std::move(chunk));
    high_water_ = std::max(high_water_, q_.size());
    wake = changed_locked();
  }
  if (wake) wake();
}

std::string ChunkPipe::pop() {
  std::function<void()> wake;
  std::string out;
  {
    std::unique_lock lk(m_);
    cv_.wait(lk, [&] { return aborted_ || closed_ || !q_.empty(); });
    if (aborted_) aborted();
    if (q_.empty()) return {};  // closed and drained
    out = std::move(q_.front());
    q_.pop_front();
    wake = changed_locked();
  }
  if (wake) wake();
  return out;
}

void ChunkPipe::finish(std::exception_ptr e) {
  std::function<void()> wake;
  {
    std::lock_guard lk(m_);
    finished_ = true;
    failure_ = std::move(e);
    wake = changed_locked();
  }
  if (wake) wake();
}

asio::awaitable<bool> ChunkPipe::async_push(std::string chunk) {
  if (chunk.empty()) co_return true;
  for (;;) {
    std::uint64_t seen = 0;
    int outcome = 0;  // 0: wait, 1: queued, 2: worker finished
    {
      std::lock_guard lk(m_);
      if (finished_) {
        outcome = 2;
      } else if (q_.size() < capacity_) {
        q_.push_back(std::move(chunk));
        high_water_ = std::max(high_water_, q_.size());
        changed_locked();  // wakes the worker; no waiter of ours is registered now
        outcome = 1;
      } else {
        seen = version_;
      }
    }
    if (outcome != 0) co_return outcome == 1;
    co_await wait_change(seen);
  }
}

asio::awaitable<std::optional<std::string>> ChunkPipe::async_pop() {
  for (;;) {
    std::uint64_t seen = 0;
    std::optional<std::string> out;
    bool end = false;
    {
      std::lock_guard lk(m_);
      if (!q_.empty()) {
        out = std::move(q_.front());
        q_.pop_front();
        changed_locked();
      } else if (finished_) {
        end = true;
      } else {
        seen = version_;
      }
    }
    if (out || end) co_return out;
    co_await wait_change(seen);
  }
}

void ChunkPipe::close() {
  std::lock_guard lk(m_);
  closed_ = true;
  changed_locked();
}

void ChunkPipe::abort() {
  std::lock_guard lk(m_);
  aborted_ = true;
  changed_locked();
}

asio::awaitable<std::exception_ptr> ChunkPipe::wait_finished() {
  for (;;) {
    std::uint64_t seen = 0;
    bool done = false;
    std::exception_ptr e;
    {
      std::lock_guard lk(m_);
      if (finished_) {
        done = true;
        e = failure_;
      } else {
        seen = version_;
      }
    }
    if (done) co_return e;
    co_await wait_change(seen);
  }
}

std::size_t ChunkPipe::high_water() const {
  std::lock_guard lk(m_);
  return high_water_;
}

}  // namespace wrenn::cp
