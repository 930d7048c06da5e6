// Delivers recorded events to their channels, at least once.
//
// Contract:
//  - run() LISTENs on kEventsChannel and wakes at every NOTIFY, at the next due retry, and
//    at least every 5 s. Each round claims up to a batch of due pending deliveries
//    (`FOR UPDATE SKIP LOCKED`, a 60 s lease in claimed_by/claim_expires), so replicas
//    never claim the same delivery while its lease holds. A replica dying mid-delivery
//    leaves a lease that expires; another replica sends the delivery again.
//  - Each claimed delivery is sent on the delivery threads (config.delivery_threads): the
//    channel's secrets opened, the request built by providers.h (a new X-Wrenn-Delivery
//    UUID per attempt, X-Wrenn-Timestamp = now), sent by sender.h. Every attempt is a row
//    in delivery_attempts. Success: state delivered. Failure: retried after 10 s, then
//    after 30 s (config.retry_delays); after the third failure the delivery is dropped
//    and a warning names the channel, event and last error (never a secret).
//  - A channel deleted meanwhile drops its deliveries (ON DELETE CASCADE); a channel whose
//    secrets do not open drops the delivery with that error.
//  - Events older than 7 days whose deliveries are settled are deleted (with their
//    deliveries and attempts) every 10 minutes.
//  - stop is checked between rounds; deliveries in flight finish (bounded by the send
//    timeout).
#pragma once

#include <memory>
#include <stop_token>
#include <string>

#include "crypto/aead.h"
#include "server_context.h"

namespace wrenn::cp::events {

class Dispatcher {
 public:
  Dispatcher(ServerContext& ctx, const crypto::AeadKey& key);
  ~Dispatcher();
  Dispatcher(const Dispatcher&) = delete;
  Dispatcher& operator=(const Dispatcher&) = delete;
  void run(std::stop_token stop);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace wrenn::cp::events
