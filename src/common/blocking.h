// run_blocking: runs blocking work (libpq, a host client call, file I/O) on a thread pool
// from a coroutine on the I/O threads, and resumes the coroutine on its own executor with
// the result or the exception.
//
// GCC 12: keep the returned awaitable in a named local before co_await-ing it
// (`auto task = run_blocking(pool, f); auto r = co_await std::move(task);`); temporaries
// inside co_await expressions are destroyed twice by that compiler.
#pragma once

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <utility>

namespace wrenn {

template <class F>
auto run_blocking(boost::asio::thread_pool& pool, F f) {
  using R = decltype(f());
  return boost::asio::co_spawn(
      pool, [f = std::move(f)]() mutable -> boost::asio::awaitable<R> { co_return f(); },
      boost::asio::use_awaitable);
}

}  // namespace wrenn
