#include "events/dispatcher.h"

#include <libpq-fe.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/json.hpp>
#include <chrono>
#include <deque>
#include <mutex>

#include "crypto/ids.h"
#include "crypto/random.h"
#include "events/channel_store.h"
#include "events/event.h"
#include "events/providers.h"
#include "events/sender.h"
#include "log.h"
#include "store/sql.h"

namespace wrenn::cp::events {

namespace json = boost::json;
using namespace std::chrono_literals;
using Clock = std::chrono::system_clock;

namespace {

constexpr int kLeaseSeconds = 60;
constexpr std::size_t kClaimBatch = 64;
constexpr auto kIdleWake = 5s;
// Events (with their deliveries and attempts) are kept this long, for the delivery log and
// for live streams catching up; pruned by whichever replica gets there first.
constexpr int kRetentionDays = 7;
constexpr auto kPruneEvery = std::chrono::minutes(10);

// One claimed delivery and, once sent, its attempt.
struct Job {
  std::string delivery_id;
  int attempt = 0;  // this attempt's number (1-based)
  std::string event_id;
  std::string event_type;
  std::string payload;  // the event's JSON, sent byte for byte
  ChannelRow channel;

  std::string request_id;  // X-Wrenn-Delivery
  std::int64_t started_ms = 0;
  SendResult result;
  std::string outcome;  // delivered | retry | dropped
  std::int64_t retry_after_ms = 0;
};

std::string join_ints(const std::vector<std::int64_t>& v) {
  std::string s = "{";
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s + "}";
}

std::map<std::string, std::string> string_map(std::string_view text) {
  std::map<std::string, std::string> out;
  boost::system::error_code ec;
  auto v = json::parse(text, ec);
  if (ec || !v.is_object()) return out;
  for (const auto& kv : v.get_object())
    if (kv.value().is_string()) out[std::string(kv.key())] = std::string(kv.value().get_string());
  return out;
}

}  // namespace

struct Dispatcher::Impl {
  ServerContext& ctx;
  crypto::AeadKey key;
  std::string replica = "cp-" + crypto::random_hex(8);
  ProviderSettings settings;
  SendOptions send_options;
  std::size_t capacity;
  asio::thread_pool senders;
  int wake_fd = -1;  // eventfd: a send finished

  std::mutex mu;
  std::vector<Job> done;  // sent, not yet recorded
  std::size_t in_flight = 0;

  Impl(ServerContext& c, const crypto::AeadKey& k)
      : ctx(c),
        key(k),
        capacity(std::max(1u, c.config.delivery_threads)),
        senders(std::max(1u, c.config.delivery_threads)) {
    settings.telegram_api_url = c.config.telegram_api_url;
    settings.allow_private = c.config.allow_private_targets;
    send_options.policy.allow_private = c.config.allow_private_targets;
    send_options.ca_file = c.config.channel_ca_file;
    wake_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  }
  ~Impl() {
    senders.join();
    if (wake_fd >= 0) ::close(wake_fd);
  }

  std::vector<Job> claim(pg::Connection& c, std::size_t n);
  void send(Job& job);
  void finish(Job job);
  void record(pg::Connection& c, std::vector<Job>& jobs);
  std::chrono::milliseconds next_due(pg::Connection& c);
  void wait(pg::Connection& c, std::chrono::milliseconds d, const std::stop_token& stop);
};

Dispatcher::Dispatcher(ServerContext& ctx, const crypto::AeadKey& key)
    : impl_(std::make_unique<Impl>(ctx, key)) {}
Dispatcher::~Dispatcher() = default;

// Claims due deliveries under a lease: SKIP LOCKED keeps concurrent claimers (other
// replicas) off the same rows, and the lease keeps them off until it expires.
std::vector<Job> Dispatcher::Impl::claim(pg::Connection& c, std::size_t n) {
  static const std::string kSql =
      "WITH due AS ("
      "  SELECT id FROM deliveries "
      "  WHERE state = 'pending' AND next_attempt_at <= now() "
      "    AND (claim_expires IS NULL OR claim_expires < now()) "
      "  ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED), "
      "claimed AS ("
      "  UPDATE deliveries d SET claimed_by = $1, "
      "         claim_expires = now() + $3 * interval '1 second' "
      "  FROM due WHERE d.id = due.id "
      "  RETURNING d.id, d.attempts, d.event_id, d.channel_id) "
      "SELECT cl.id, cl.attempts, e.id, e.type, e.payload::text, c.id, c.team_id, c.name, "
      "       c.provider, c.target, c.options::text, c.secrets_sealed "
      "FROM claimed cl JOIN events e ON e.id = cl.event_id "
      "JOIN channels c ON c.id = cl.channel_id";
  auto r =
      c.exec(kSql, replica, static_cast<std::int64_t>(n), static_cast<std::int64_t>(kLeaseSeconds));
  std::vector<Job> jobs;
  jobs.reserve(static_cast<std::size_t>(r.rows()));
  for (int i = 0; i < r.rows(); ++i) {
    Job j;
    j.delivery_id = r.text(i, 0);
    j.attempt = static_cast<int>(r.as_int64(i, 1)) + 1;
    j.event_id = r.text(i, 2);
    j.event_type = r.text(i, 3);
    j.payload = r.text(i, 4);
    j.channel.id = r.text(i, 5);
    j.channel.team_id = r.text(i, 6);
    j.channel.name = r.text(i, 7);
    j.channel.provider = r.text(i, 8);
    j.channel.target = r.text(i, 9);
    j.channel.options = string_map(r.text(i, 10));
    j.channel.secrets_sealed = r.text(i, 11);
    jobs.push_back(std::move(j));
  }
  return jobs;
}

// On a sender thread: one attempt, never throwing.
void Dispatcher::Impl::send(Job& job) {
  job.request_id = ids::uuid_string(ids::new_uuid());
  job.started_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch())
          .count();
  try {
    const ChannelConfig cfg = open_config(job.channel, key);
    boost::system::error_code ec;
    json::value v = json::parse(job.payload, ec);
    if (ec || !v.is_object()) throw Error(Code::kDataLoss, "the event's payload is not an object");
    const OutboundRequest req =
        request(cfg, v.get_object(), job.payload, job.request_id, now_rfc3339(), settings);
    job.result = events::send(req, send_options);
  } catch (const std::exception& e) {
    // The channel cannot be delivered to at all (secrets do not open, bad row): retrying
    // will not help.
    job.result = SendResult{};
    job.result.error = e.what();
    job.outcome = "dropped";
    return;
  }
  if (job.result.ok) {
    job.outcome = "delivered";
    return;
  }
  const auto& delays = ctx.config.retry_delays;
  if (static_cast<std::size_t>(job.attempt) <= delays.size()) {
    job.outcome = "retry";
    job.retry_after_ms = delays[static_cast<std::size_t>(job.attempt) - 1].count();
  } else {
    job.outcome = "dropped";
  }
}

void Dispatcher::Impl::finish(Job job) {
  {
    std::lock_guard lk(mu);
    done.push_back(std::move(job));
  }
  const std::uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(wake_fd, &one, sizeof one);
}

// Every attempt and the deliveries' new states, in one statement. Only rows this replica
// still holds are changed (a lease that expired meanwhile belongs to someone else now).
void Dispatcher::Impl::record(pg::Connection& c, std::vector<Job>& jobs) {
  std::vector<std::string> ids, request_ids, errors, outcomes;
  std::vector<std::int64_t> attempts, started, durations, statuses, retry;
  for (const auto& j : jobs) {
    ids.push_back(j.delivery_id);
    request_ids.push_back(j.request_id);
    errors.push_back(j.result.error.substr(0, 1000));
    outcomes.push_back(j.outcome);
    attempts.push_back(j.attempt);
    started.push_back(j.started_ms);
    durations.push_back(j.result.duration.count());
    statuses.push_back(j.result.status);
    retry.push_back(j.retry_after_ms);
  }
  static const std::string kSql =
      "WITH r AS ("
      "  SELECT * FROM unnest($2::text[], $3::int[], $4::text[], $5::bigint[], $6::int[], "
      "                       $7::int[], $8::text[], $9::text[], $10::bigint[]) "
      "    AS r(id, attempt, request_id, started_ms, duration_ms, status, error, outcome, "
      "         retry_ms)), "
      "upd AS ("
      "  UPDATE deliveries d SET attempts = r.attempt, "
      "         state = CASE r.outcome WHEN 'retry' THEN 'pending' ELSE r.outcome END, "
      "         next_attempt_at = CASE WHEN r.outcome = 'retry' "
      "                                THEN now() + r.retry_ms * interval '1 millisecond' "
      "                                ELSE d.next_attempt_at END, "
      "         claimed_by = NULL, claim_expires = NULL, last_error = r.error "
      "  FROM r WHERE d.id = r.id AND d.claimed_by = $1 RETURNING d.id) "
      "INSERT INTO delivery_attempts (delivery_id, attempt, request_id, started_at, "
      "                               duration_ms, status_code, error, outcome) "
      "SELECT r.id, r.attempt, r.request_id, to_timestamp(r.started_ms / 1000.0), "
      "       r.duration_ms, nullif(r.status, 0), r.error, r.outcome "
      "FROM r JOIN upd ON upd.id = r.id";
  c.exec(kSql, replica, store::text_array(ids), join_ints(attempts), store::text_array(request_ids),
         join_ints(started), join_ints(durations), join_ints(statuses), store::text_array(errors),
         store::text_array(outcomes), join_ints(retry));
  for (const auto& j : jobs) {
    if (j.outcome != "dropped") continue;
    log::warn("event delivery dropped", {{"channel", j.channel.id},
                                         {"channel_name", j.channel.name},
                                         {"event", j.event_id},
                                         {"type", j.event_type},
                                         {"attempts", std::to_string(j.attempt)},
                                         {"error", j.result.error}});
  }
}

// How long until the earliest pending delivery (or lease) is due; kIdleWake at most.
std::chrono::milliseconds Dispatcher::Impl::next_due(pg::Connection& c) {
  auto r = c.exec(
      "SELECT ceil(extract(epoch FROM min(greatest(next_attempt_at, "
      "                       coalesce(claim_expires, next_attempt_at))) - now()) * 1000)::bigint "
      "FROM deliveries WHERE state = 'pending'");
  if (r.rows() == 0 || !r.opt_text(0, 0)) return kIdleWake;
  const std::int64_t ms = r.as_int64(0, 0);
  return std::clamp(std::chrono::milliseconds(ms), std::chrono::milliseconds(0),
                    std::chrono::milliseconds(kIdleWake));
}

// Until a NOTIFY, a finished send, the stop request or d.
void Dispatcher::Impl::wait(pg::Connection& c, std::chrono::milliseconds d,
                            const std::stop_token& stop) {
  const auto deadline = std::chrono::steady_clock::now() + d;
  while (!stop.stop_requested()) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left <= 0ms) return;
    pollfd fds[2] = {{PQsocket(c.native()), POLLIN, 0}, {wake_fd, POLLIN, 0}};
    ::poll(fds, 2, static_cast<int>(std::min<std::int64_t>(left.count(), 200)));
    bool woke = false;
    if (fds[1].revents & POLLIN) {
      std::uint64_t n;
      [[maybe_unused]] auto r = ::read(wake_fd, &n, sizeof n);
      woke = true;
    }
    if (PQconsumeInput(c.native()) == 0) throw Error(Code::kUnavailable, "connection lost");
    while (PGnotify* n = PQnotifies(c.native())) {
      PQfreemem(n);
      woke = true;
    }
    if (woke) return;
  }
}

void Dispatcher::run(std::stop_token stop) {
  Impl& m = *impl_;
  const std::string conninfo = m.ctx.db.options().conninfo;
  std::unique_ptr<pg::Connection> conn;
  auto next_prune = std::chrono::steady_clock::now();
  log::info("event dispatcher started",
            {{"replica", m.replica}, {"threads", std::to_string(m.capacity)}});
  while (!stop.stop_requested()) {
    try {
      if (!conn || conn->broken()) {
        conn = std::make_unique<pg::Connection>(conninfo);
        conn->exec(std::string("LISTEN ") + kEventsChannel);
      }
      if (std::chrono::steady_clock::now() >= next_prune) {
        next_prune = std::chrono::steady_clock::now() + kPruneEvery;
        conn->exec(
            "DELETE FROM events WHERE created_at < now() - $1 * interval '1 day' "
            "AND NOT EXISTS (SELECT 1 FROM deliveries d "
            "                WHERE d.event_id = events.id AND d.state = 'pending')",
            static_cast<std::int64_t>(kRetentionDays));
      }
      std::vector<Job> finished;
      std::size_t free = 0;
      {
        std::lock_guard lk(m.mu);
        finished.swap(m.done);
        m.in_flight -= finished.size();
        free = m.capacity - m.in_flight;
      }
      if (!finished.empty()) m.record(*conn, finished);
      std::size_t claimed = 0;
      if (free > 0) {
        auto jobs = m.claim(*conn, std::min(free, kClaimBatch));
        claimed = jobs.size();
        {
          std::lock_guard lk(m.mu);
          m.in_flight += claimed;
        }
        for (auto& j : jobs)
          asio::post(m.senders, [&m, job = std::move(j)]() mutable {
            m.send(job);
            m.finish(std::move(job));
          });
      }
      // More may be due right away when the batch was full; otherwise sleep until woken.
      if (claimed == std::min(free, kClaimBatch) && claimed > 0) continue;
      const auto d = free == 0 ? std::chrono::milliseconds(kIdleWake) : m.next_due(*conn);
      m.wait(*conn, d, stop);
    } catch (const std::exception& e) {
      log::warn("event dispatcher: database error; retrying", {{"error", e.what()}});
      conn.reset();
      for (int i = 0; i < 10 && !stop.stop_requested(); ++i) std::this_thread::sleep_for(100ms);
    }
  }
  // Sends in flight finish (bounded by the send timeout) and are recorded.
  m.senders.join();
  std::vector<Job> finished;
  {
    std::lock_guard lk(m.mu);
    finished.swap(m.done);
  }
  if (!finished.empty()) {
    try {
      if (!conn || conn->broken()) conn = std::make_unique<pg::Connection>(conninfo);
      m.record(*conn, finished);
    } catch (const std::exception& e) {
      log::warn("event dispatcher: last attempts not recorded; they will be sent again",
                {{"error", e.what()}});
    }
  }
  log::info("event dispatcher stopped", {{"replica", m.replica}});
}

}  // namespace wrenn::cp::events
