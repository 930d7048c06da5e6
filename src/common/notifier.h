// Coroutine wake-ups on a single-threaded io_context, built on a steady_timer whose
// cancellation is the wake-up. Waiters must re-check their condition after every wake:
// a notify() with nobody waiting is not remembered.
#pragma once

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>

namespace wrenn {

class Notifier {
 public:
  explicit Notifier(const boost::asio::any_io_executor& ex) : timer_(ex) {}
  // Wakes every current waiter.
  void notify() { timer_.cancel(); }
  // Waits for notify(). Any number of coroutines may wait at once.
  boost::asio::awaitable<void> wait() {
    if (waiters_++ == 0) timer_.expires_at(boost::asio::steady_timer::time_point::max());
    co_await timer_.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
    --waiters_;
  }
  // Waits for notify() or the timeout; true when notified. Single waiter only: a timed
  // wait resets the timer and would wake (spuriously) any other waiter.
  boost::asio::awaitable<bool> wait_for(std::chrono::steady_clock::duration timeout) {
    timer_.expires_after(timeout);
    auto [ec] = co_await timer_.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
    co_return ec == boost::asio::error::operation_aborted;
  }

 private:
  boost::asio::steady_timer timer_;
  int waiters_ = 0;
};

}  // namespace wrenn
