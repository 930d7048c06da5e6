#include "events/live_stream.h"

#include <libpq-fe.h>
#include <poll.h>

#include <atomic>
#include <boost/asio/post.hpp>
#include <boost/asio/socket_base.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/json.hpp>
#include <chrono>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_set>
#include <vector>

#include "api/api_error.h"
#include "blocking.h"
#include "events/event.h"
#include "log.h"
#include "notifier.h"
#include "pg/connection.h"
#include "store/sql.h"

namespace wrenn::cp::events {

namespace json = boost::json;
using namespace std::chrono_literals;

namespace {

constexpr std::size_t kMaxBehind = 1024;
constexpr std::size_t kMaxReplay = 1000;
constexpr auto kPingInterval = 15s;
constexpr auto kPollSlice = 200ms;
constexpr auto kReconnectDelay = 1s;
// A write that makes no progress for this long means a client that stopped reading.
constexpr auto kWriteTimeout = 30s;
// Recovery after a lost connection re-reads events created since the last good poll minus
// this slack (created_at is the transaction's start, which precedes its commit); already
// delivered ones are skipped by id.
constexpr int kRecoverySlackSeconds = 30;
constexpr auto kSeenWindow = 10min;
constexpr int kMaxRecovered = 10000;

struct Item {
  std::string id;  // empty for transient events
  std::string type;
  std::string data;  // JSON text
};

// What the hub and a stream's coroutine share; everything but the immutable fields is
// under mu. The hub never touches the coroutine's objects: it wakes it by posting to its
// executor a lambda holding only a weak_ptr to the coroutine's Notifier.
struct Subscriber {
  std::string team_id;
  std::set<std::string> types;  // empty: all
  asio::any_io_executor executor;
  std::weak_ptr<Notifier> wake;

  std::mutex mu;
  std::deque<Item> queue;
  bool overflowed = false;
  bool closed = false;  // the hub stopped
  bool wake_posted = false;

  // Called by the hub thread.
  void push(const Item& item) {
    if (!types.empty() && !types.count(item.type)) return;
    {
      std::lock_guard lock(mu);
      if (overflowed || closed) return;
      if (queue.size() >= kMaxBehind) {
        overflowed = true;
        queue.clear();
      } else {
        queue.push_back(item);
      }
      if (wake_posted) return;
      wake_posted = true;
    }
    post_wake();
  }
  void close() {
    {
      std::lock_guard lock(mu);
      closed = true;
      wake_posted = true;
    }
    post_wake();
  }
  void post_wake() {
    asio::post(executor, [w = wake] {
      if (auto n = w.lock()) n->notify();
    });
  }
};

// The "id/event/data" frame of one event; a payload with line breaks becomes several
// data lines, as SSE requires.
std::string frame(const Item& item) {
  std::string out;
  if (!item.id.empty()) out += "id: " + item.id + "\n";
  out += "event: " + item.type + "\n";
  std::size_t i = 0;
  for (;;) {
    std::size_t j = item.data.find('\n', i);
    out += "data: ";
    out.append(item.data, i, j == std::string::npos ? std::string::npos : j - i);
    out += "\n";
    if (j == std::string::npos) break;
    i = j + 1;
  }
  out += "\n";
  return out;
}

}  // namespace

struct LiveHub::Impl {
  explicit Impl(std::string ci) : conninfo(std::move(ci)) {}

  const std::string conninfo;
  std::mutex mu;  // subscribers, stopped
  std::map<std::string, std::vector<std::weak_ptr<Subscriber>>> subscribers;  // by team
  bool stopped = false;
  std::jthread thread;

  // Hub-thread state.
  std::unique_ptr<pg::Connection> conn;
  bool had_connection = false;
  std::chrono::steady_clock::time_point last_good;
  std::deque<std::pair<std::chrono::steady_clock::time_point, std::string>> seen_order;
  std::unordered_set<std::string> seen;

  void subscribe(const std::shared_ptr<Subscriber>& s) {
    std::lock_guard lock(mu);
    if (stopped) {
      std::lock_guard sl(s->mu);
      s->closed = true;
      return;
    }
    subscribers[s->team_id].push_back(s);
  }
  void unsubscribe(const Subscriber* s) {
    std::lock_guard lock(mu);
    auto it = subscribers.find(s->team_id);
    if (it == subscribers.end()) return;
    auto& v = it->second;
    std::erase_if(v, [s](const std::weak_ptr<Subscriber>& w) {
      auto p = w.lock();
      return !p || p.get() == s;
    });
    if (v.empty()) subscribers.erase(it);
  }
  std::vector<std::string> teams() {
    std::lock_guard lock(mu);
    std::vector<std::string> out;
    for (const auto& [team, _] : subscribers) out.push_back(team);
    return out;
  }
  void deliver(const std::string& team, const Item& item) {
    std::vector<std::shared_ptr<Subscriber>> targets;
    {
      std::lock_guard lock(mu);
      auto it = subscribers.find(team);
      if (it == subscribers.end()) return;
      for (const auto& w : it->second)
        if (auto p = w.lock()) targets.push_back(std::move(p));
    }
    for (const auto& s : targets) s->push(item);
  }

  void mark_seen(const std::string& id) {
    const auto now = std::chrono::steady_clock::now();
    if (seen.insert(id).second) seen_order.emplace_back(now, id);
    while (!seen_order.empty() && now - seen_order.front().first > kSeenWindow) {
      seen.erase(seen_order.front().second);
      seen_order.pop_front();
    }
  }

  // Reads the durable events `ids` (for the teams that have subscribers) and delivers them
  // in commit-time order.
  void deliver_events(std::vector<std::string>& ids) {
    if (ids.empty()) return;
    auto t = teams();
    if (!t.empty()) {
      auto r = conn->exec(
          "SELECT id, team_id, type, payload::text FROM events "
          "WHERE id = ANY ($1::text[]) AND team_id = ANY ($2::text[]) ORDER BY created_at, id",
          store::text_array(ids), store::text_array(t));
      for (int i = 0; i < r.rows(); ++i)
        deliver(
            std::string(r.text(i, 1)),
            Item{std::string(r.text(i, 0)), std::string(r.text(i, 2)), std::string(r.text(i, 3))});
    }
    for (const auto& id : ids) mark_seen(id);  // only now: a failed read is recovered
    ids.clear();
  }

  void deliver_transient(const char* payload) {
    boost::system::error_code ec;
    json::value v = json::parse(payload, ec);
    if (ec || !v.is_object()) {
      log::warn("live events: ignoring a malformed transient event");
      return;
    }
    const auto& o = v.as_object();
    const auto* team = o.if_contains("team_id");
    const auto* type = o.if_contains("event");
    if (!team || !team->is_string() || !type || !type->is_string()) {
      log::warn("live events: ignoring a transient event without team_id or event");
      return;
    }
    deliver(std::string(team->as_string()), Item{{}, std::string(type->as_string()), payload});
  }

  // Events committed while the connection was down.
  void recover(std::chrono::seconds down) {
    auto t = teams();
    if (t.empty()) return;
    const auto secs = down.count() + kRecoverySlackSeconds;
    auto r = conn->exec(
        "SELECT id, team_id, type, payload::text FROM events "
        "WHERE created_at > now() - make_interval(secs => $1) AND team_id = ANY ($2::text[]) "
        "ORDER BY created_at, id LIMIT $3",
        static_cast<std::int64_t>(secs), store::text_array(t), kMaxRecovered);
    int n = 0;
    for (int i = 0; i < r.rows(); ++i) {
      std::string id(r.text(i, 0));
      if (seen.count(id)) continue;
      mark_seen(id);
      deliver(std::string(r.text(i, 1)),
              Item{id, std::string(r.text(i, 2)), std::string(r.text(i, 3))});
      ++n;
    }
    if (n > 0) log::info("live events: recovered events", {{"count", std::to_string(n)}});
  }

  bool connect() {
    try {
      conn = std::make_unique<pg::Connection>(conninfo);
      conn->exec(std::string("LISTEN ") + kEventsChannel);
      conn->exec(std::string("LISTEN ") + kLiveChannel);
      const auto now = std::chrono::steady_clock::now();
      if (had_connection) {
        recover(std::chrono::duration_cast<std::chrono::seconds>(now - last_good));
        log::info("live events: reconnected to the database");
      }
      had_connection = true;
      last_good = now;
      return true;
    } catch (const std::exception& e) {
      log::warn("live events: cannot listen on the database", {{"error", e.what()}});
      conn.reset();
      return false;
    }
  }

  void run(const std::stop_token& stop) {
    while (!stop.stop_requested()) {
      if (!conn && !connect()) {
        for (auto d = 0ms; d < kReconnectDelay && !stop.stop_requested(); d += kPollSlice)
          std::this_thread::sleep_for(kPollSlice);
        continue;
      }
      try {
        pg_conn* pc = conn->native();
        pollfd p{PQsocket(pc), POLLIN, 0};
        if (p.fd < 0) throw Error(Code::kUnavailable, "no database socket");
        ::poll(&p, 1, static_cast<int>(kPollSlice.count()));
        if (PQconsumeInput(pc) == 0) throw Error(Code::kUnavailable, PQerrorMessage(pc));
        std::vector<std::string> ids;
        while (PGnotify* n = PQnotifies(pc)) {
          std::string channel = n->relname;
          std::string payload = n->extra;
          PQfreemem(n);
          if (channel == kEventsChannel) {
            ids.push_back(std::move(payload));
          } else {
            deliver_events(ids);  // keep arrival order
            deliver_transient(payload.c_str());
          }
        }
        deliver_events(ids);
        last_good = std::chrono::steady_clock::now();
      } catch (const std::exception& e) {
        log::warn("live events: lost the database connection; reconnecting", {{"error", e.what()}});
        conn.reset();
      }
    }
    conn.reset();
  }
};

LiveHub::LiveHub(std::string conninfo) : impl_(std::make_shared<Impl>(std::move(conninfo))) {}

LiveHub::~LiveHub() {
  stop();
}

void LiveHub::start() {
  if (impl_->thread.joinable()) return;
  {
    std::lock_guard lock(impl_->mu);
    if (impl_->stopped) return;
  }
  impl_->thread = std::jthread([impl = impl_](std::stop_token st) {
    try {
      impl->run(st);
    } catch (const std::exception& e) {
      log::error("live events hub failed", {{"error", e.what()}});
    }
  });
}

void LiveHub::close_streams() {
  std::vector<std::shared_ptr<Subscriber>> subs;
  {
    std::lock_guard lock(impl_->mu);
    impl_->stopped = true;
    for (auto& [_, v] : impl_->subscribers)
      for (auto& w : v)
        if (auto p = w.lock()) subs.push_back(std::move(p));
    impl_->subscribers.clear();
  }
  for (auto& s : subs) s->close();  // their streams end
}

void LiveHub::stop() {
  close_streams();
  if (impl_->thread.joinable()) {
    impl_->thread.request_stop();
    impl_->thread.join();
  }
}

namespace {

// ?types=a,b: subscribable types (upstream names accepted) and capsule.state.changed.
std::set<std::string> parse_types(const std::optional<std::string>& q) {
  std::set<std::string> out;
  if (!q) return out;
  std::size_t i = 0;
  while (i <= q->size()) {
    std::size_t j = q->find(',', i);
    if (j == std::string::npos) j = q->size();
    std::string name = q->substr(i, j - i);
    i = j + 1;
    if (name.empty()) continue;
    if (name == "capsule.state.changed") {
      out.insert(name);
      continue;
    }
    auto t = canonical_event_type(name);
    if (!t) {
      std::string shown = name.size() > 64 ? name.substr(0, 64) + "…" : name;
      throw ApiError(ApiCode::kInvalidRequest,
                     "unknown event type \"" + shown +
                         "\" in types (known: capsule.create, capsule.pause, capsule.resume, "
                         "capsule.destroy, template.snapshot.create, template.snapshot.delete, "
                         "host.up, host.down, capsule.state.changed)");
    }
    out.insert(*t);
  }
  return out;
}

std::vector<Item> replay(pg::Pool& db, const std::string& team, const std::string& after,
                         const std::set<std::string>& types) {
  std::vector<std::string> tv(types.begin(), types.end());
  pg::Param types_param;
  if (!tv.empty()) types_param = store::text_array(tv);
  auto lease = db.acquire();
  auto r = lease->exec(
      "SELECT id, type, payload::text FROM events "
      "WHERE team_id = $1 AND (created_at, id) > "
      "  (SELECT created_at, id FROM events WHERE id = $2 AND team_id = $1) "
      "  AND ($3::text[] IS NULL OR type = ANY ($3::text[])) "
      "ORDER BY created_at, id LIMIT $4",
      team, after, types_param, static_cast<std::int64_t>(kMaxReplay));
  std::vector<Item> out;
  for (int i = 0; i < r.rows(); ++i)
    out.push_back(
        Item{std::string(r.text(i, 0)), std::string(r.text(i, 1)), std::string(r.text(i, 2))});
  return out;
}

bhttp::response<bhttp::empty_body> stream_header() {
  bhttp::response<bhttp::empty_body> res(bhttp::status::ok, 11);
  res.set(bhttp::field::content_type, "text/event-stream");
  res.set(bhttp::field::cache_control, "no-cache");
  res.set("X-Accel-Buffering", "no");  // nginx: pass events on at once
  return res;
}

// Unsubscribes when the stream's coroutine ends, however it ends.
struct Registration {
  std::shared_ptr<LiveHub::Impl> hub;
  const Subscriber* sub;
  ~Registration() { hub->unsubscribe(sub); }
};

asio::awaitable<void> serve_stream(ServerContext& ctx, std::shared_ptr<LiveHub::Impl> hub,
                                   RequestContext& rc) {
  const std::string team = rc.caller().team_id;
  if (team.empty()) throw ApiError(ApiCode::kForbidden, "the event stream needs a team");
  std::set<std::string> types = parse_types(rc.query("types"));
  http::Exchange& ex = rc.exchange();
  std::string last_id(ex.header("Last-Event-ID"));
  if (last_id.empty()) last_id = rc.query("last_event_id").value_or("");

  auto executor = co_await asio::this_coro::executor;
  auto wake = std::make_shared<Notifier>(executor);
  auto sub = std::make_shared<Subscriber>();
  sub->team_id = team;
  sub->types = types;
  sub->executor = executor;
  sub->wake = wake;
  // Subscribed before the replay is read: nothing falls between the two (duplicates are
  // skipped by id).
  hub->subscribe(sub);
  Registration reg{hub, sub.get()};

  std::vector<Item> replayed;
  if (!last_id.empty()) {
    auto task = run_blocking(
        ctx.workers, [&ctx, team, last_id, types] { return replay(ctx.db, team, last_id, types); });
    replayed = co_await std::move(task);
  }

  auto head = rc.send_header(stream_header());
  co_await std::move(head);

  // A client that goes away makes its socket readable (EOF); nothing else is expected
  // from it. Watching for that ends the stream at once instead of at the next failed write.
  auto peer_gone = std::make_shared<bool>(false);
  boost::beast::tcp_stream& stream = ex.stream();  // the connection ends with the stream
  stream.socket().async_wait(
      asio::socket_base::wait_read,
      [peer_gone, w = std::weak_ptr<Notifier>(wake)](const boost::system::error_code& ec) {
        if (ec == asio::error::operation_aborted) return;
        *peer_gone = true;
        if (auto n = w.lock()) n->notify();
      });

  std::unordered_set<std::string> replayed_ids;
  std::string pending;
  for (const auto& item : replayed) {
    replayed_ids.insert(item.id);
    pending += frame(item);
  }
  replayed.clear();

  bool failed = false;
  auto last_write = std::chrono::steady_clock::now();
  for (;;) {
    bool overflowed = false, closed = false;
    {
      std::deque<Item> batch;
      {
        std::lock_guard lock(sub->mu);
        batch.swap(sub->queue);
        overflowed = sub->overflowed;
        closed = sub->closed;
        sub->wake_posted = false;
      }
      for (const auto& item : batch)
        if (item.id.empty() || !replayed_ids.count(item.id)) pending += frame(item);
    }
    if (*peer_gone) break;
    if (pending.empty() && std::chrono::steady_clock::now() - last_write >= kPingInterval)
      pending = ": ping\n\n";
    const bool wrote = !pending.empty();
    if (wrote) {
      stream.expires_after(kWriteTimeout);
      try {
        auto write = ex.write_body(pending);
        co_await std::move(write);
      } catch (const std::exception&) {
        failed = true;
      }
      if (failed) break;
      stream.expires_never();
      pending.clear();
      last_write = std::chrono::steady_clock::now();
    }
    if (overflowed) {
      log::info("live events: a subscriber fell too far behind; closing its stream",
                {{"team_id", team}});
      break;
    }
    if (closed) break;
    // A wake-up posted while the write was suspended may have found nobody waiting: look
    // at the queue again before sleeping.
    if (wrote) continue;
    const auto next_ping = last_write + kPingInterval;
    const auto now = std::chrono::steady_clock::now();
    auto wait = wake->wait_for(next_ping > now ? next_ping - now : 0ms);
    co_await std::move(wait);
  }
  boost::system::error_code ig;
  stream.socket().cancel(ig);  // the readability watch
  if (!failed && !*peer_gone) {
    stream.expires_after(kWriteTimeout);
    try {
      auto fin = ex.finish_body();
      co_await std::move(fin);
    } catch (const std::exception&) {
    }
  }
}

}  // namespace

void register_event_stream_route(ServerContext& ctx, LiveHub& hub) {
  std::shared_ptr<LiveHub::Impl> impl = hub.impl_;
  ctx.router.add(bhttp::verb::get, "/v1/events/stream", Access::kTeam,
                 [&ctx, impl](RequestContext& rc) { return serve_stream(ctx, impl, rc); });
}

}  // namespace wrenn::cp::events
