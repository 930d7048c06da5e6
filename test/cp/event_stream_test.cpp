// GET /v1/events/stream end to end: a real wrenn-cp on a throwaway PostgreSQL, read with a
// raw Beast client (chunked text/event-stream). Sandbox lifecycle events from a real agent
// reach the owning team's stream (transient capsule.state.changed and durable
// capsule.create / capsule.destroy) and never another team's; Last-Event-ID replay,
// ?types, credentials, reconnection of the hub's database connection and client
// disconnects.
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <random>
#include <thread>

#include "cp_fixture.h"

using namespace wrenn;
using namespace wrenn::test;
using namespace std::chrono_literals;
namespace json = boost::json;
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;

namespace {

struct SseEvent {
  std::string id;  // "" for transient events
  std::string type;
  std::string data;
};

// One SSE connection, read on a background thread into a list of events.
class SseClient {
 public:
  SseClient(unsigned short port, const std::string& target,
            std::map<std::string, std::string> headers)
      : sock_(io_) {
    sock_.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
    bhttp::request<bhttp::empty_body> req(bhttp::verb::get, target, 11);
    req.set(bhttp::field::host, "127.0.0.1");
    req.set(bhttp::field::accept, "text/event-stream");
    for (const auto& [k, v] : headers) req.set(k, v);
    bhttp::write(sock_, req);
    bhttp::read_header(sock_, buf_, parser_);
    status_ = parser_.get().result_int();
    for (const auto& f : parser_.get())
      headers_[beast::iequals(f.name_string(), "content-type") ? "content-type"
                                                               : std::string(f.name_string())] =
          std::string(f.value());
    chunked_ = parser_.get().chunked();
    reader_ = std::thread([this] { read_loop(); });
  }
  ~SseClient() { close(); }

  unsigned status() const { return status_; }
  bool chunked() const { return chunked_; }
  std::string header(const std::string& name) const {
    auto it = headers_.find(name);
    return it == headers_.end() ? "" : it->second;
  }
  // The events so far.
  std::vector<SseEvent> events() const {
    std::lock_guard lock(mu_);
    return events_;
  }
  std::string raw() const {
    std::lock_guard lock(mu_);
    return raw_;
  }
  // True once the server ended the response or the connection.
  bool ended() const {
    std::lock_guard lock(mu_);
    return ended_;
  }
  // Waits for an event matching pred; returns it (REQUIREs that it came).
  SseEvent wait_for(const std::function<bool(const SseEvent&)>& pred,
                    std::chrono::milliseconds budget = 20s) const {
    std::optional<SseEvent> found;
    wait_until(
        [&] {
          for (const auto& e : events())
            if (pred(e)) {
              found = e;
              return true;
            }
          return false;
        },
        budget);
    INFO(raw());
    REQUIRE(found);
    return *found;
  }
  void close() {
    boost::system::error_code ig;
    sock_.shutdown(tcp::socket::shutdown_both, ig);
    if (reader_.joinable()) reader_.join();
    sock_.close(ig);
  }

 private:
  void read_loop() {
    char tmp[4096];
    boost::system::error_code ec;
    while (!parser_.is_done()) {
      parser_.get().body().data = tmp;
      parser_.get().body().size = sizeof tmp;
      bhttp::read_some(sock_, buf_, parser_, ec);
      if (ec == bhttp::error::need_buffer) ec = {};
      const std::size_t n = sizeof tmp - parser_.get().body().size;
      if (n) append(std::string_view(tmp, n));
      if (ec) break;
    }
    std::lock_guard lock(mu_);
    ended_ = true;
  }
  void append(std::string_view bytes) {
    std::lock_guard lock(mu_);
    raw_ += bytes;
    pending_ += bytes;
    for (;;) {
      auto end = pending_.find("\n\n");
      if (end == std::string::npos) break;
      std::string block = pending_.substr(0, end + 1);
      pending_.erase(0, end + 2);
      SseEvent ev;
      bool any = false;
      std::size_t i = 0;
      while (i < block.size()) {
        std::size_t j = block.find('\n', i);
        std::string line = block.substr(i, j - i);
        i = j + 1;
        if (line.starts_with("id: ")) ev.id = line.substr(4), any = true;
        if (line.starts_with("event: ")) ev.type = line.substr(7), any = true;
        if (line.starts_with("data: ")) {
          if (!ev.data.empty()) ev.data += "\n";
          ev.data += line.substr(6);
          any = true;
        }
      }
      if (any) events_.push_back(std::move(ev));
    }
  }

  asio::io_context io_;
  tcp::socket sock_;
  beast::flat_buffer buf_;
  bhttp::response_parser<bhttp::buffer_body> parser_;
  unsigned status_ = 0;
  bool chunked_ = false;
  std::map<std::string, std::string> headers_;
  std::thread reader_;
  mutable std::mutex mu_;
  std::string raw_, pending_;
  std::vector<SseEvent> events_;
  bool ended_ = false;
};

json::object data_of(const SseEvent& e) {
  return json::parse(e.data).as_object();
}

std::string str(const json::value& v) {
  return v.is_string() ? std::string(v.as_string()) : "<" + json::serialize(v) + ">";
}

std::string random_event_id() {
  static std::mt19937_64 rng(std::random_device{}());
  const char* digits = "0123456789abcdefghijklmnopqrstuvwxyz";
  std::string id = "ev-";
  for (int i = 0; i < 25; ++i) id += digits[rng() % 36];
  return id;
}

// Inserts a durable event the way events::record does (row + NOTIFY with its id), with
// created_at `offset_ms` from now so tests control the order.
std::string insert_event(pg::Pool& db, const std::string& team, const std::string& type,
                         int offset_ms = 0, bool notify = true) {
  const std::string id = random_event_id();
  json::object p;
  p["event"] = type;
  p["team_id"] = team;
  p["resource"] = {{"id", "cl-test"}, {"type", "sandbox"}};
  auto lease = db.acquire();
  lease->exec(
      "INSERT INTO events (id, team_id, type, payload, created_at) "
      "VALUES ($1, $2, $3, $4::json, now() + make_interval(secs => $5::double precision / 1000))",
      id, team, type, json::serialize(p), offset_ms);
  if (notify) lease->exec("SELECT pg_notify('wrenn_events', $1)", id);
  return id;
}

void notify_transient(pg::Pool& db, const std::string& team, const std::string& state) {
  json::object o;
  o["event"] = "capsule.state.changed";
  o["team_id"] = team;
  o["resource"] = {{"id", "cl-transient"}, {"type", "sandbox"}};
  o["state"] = state;
  auto lease = db.acquire();
  lease->exec("SELECT pg_notify('wrenn_live', $1)", json::serialize(o));
}

std::map<std::string, std::string> key_header(const std::string& key) {
  return {{"X-API-Key", key}};
}

// wrenn_cp_http_requests_total for the stream route with status 200 (counted when a
// stream's handler returns).
long finished_streams(const CpProcess& cp) {
  auto r = cp.get("/metrics");
  long total = 0;
  std::size_t i = 0;
  const std::string& b = r.body;
  while ((i = b.find("wrenn_cp_http_requests_total{", i)) != std::string::npos) {
    auto end = b.find('\n', i);
    std::string line = b.substr(i, end - i);
    i = end;
    if (line.find("route=\"/v1/events/stream\"") != std::string::npos &&
        line.find("status=\"200\"") != std::string::npos)
      total += std::stol(line.substr(line.rfind(' ') + 1));
  }
  return total;
}

}  // namespace

TEST_CASE("event stream: credentials and bad types are refused") {
  CpProcess cp;
  auto r = cp.get("/v1/events/stream");
  CHECK(r.status == 401);
  CHECK(r.error_code() == "unauthorized");
  auto team = cp.create_team("sse-auth");
  r = cp.get("/v1/events/stream?types=capsule.create,capsule.nonsense", team.api_key);
  CHECK(r.status == 400);
  CHECK(r.error_code() == "invalid_request");
  CHECK(r.error_message().find("capsule.nonsense") != std::string::npos);
}

TEST_CASE("event stream: team scoping and types and Last-Event-ID replay and transient events") {
  CpProcess cp;
  auto db = cp.pool();
  auto a = cp.create_team("sse-a");
  auto b = cp.create_team("sse-b");

  // Three earlier events of team A, one of team B, spaced in time, not notified.
  const std::string e1 = insert_event(*db, a.team_id, "capsule.create", -3000, false);
  const std::string e2 = insert_event(*db, a.team_id, "capsule.pause", -2000, false);
  const std::string eb = insert_event(*db, b.team_id, "capsule.pause", -1500, false);
  const std::string e3 = insert_event(*db, a.team_id, "capsule.resume", -1000, false);

  SECTION("live events reach only their team") {
    SseClient sa(cp.port(), "/v1/events/stream", key_header(a.api_key));
    SseClient sb(cp.port(), "/v1/events/stream", key_header(b.api_key));
    REQUIRE(sa.status() == 200);
    CHECK(sa.header("content-type") == "text/event-stream");
    CHECK(sa.chunked());
    CHECK(sa.events().empty());  // no replay without Last-Event-ID

    const std::string live = insert_event(*db, a.team_id, "capsule.destroy");
    notify_transient(*db, a.team_id, "pausing");
    auto ev = sa.wait_for([&](const SseEvent& e) { return e.id == live; });
    CHECK(ev.type == "capsule.destroy");
    CHECK(str(data_of(ev).at("team_id")) == a.team_id);
    auto tr = sa.wait_for([](const SseEvent& e) { return e.type == "capsule.state.changed"; });
    CHECK(tr.id.empty());
    CHECK(str(data_of(tr).at("state")) == "pausing");
    // Arrival order is kept: the durable event was committed first.
    auto all = sa.events();
    REQUIRE(all.size() == 2);
    CHECK(all[0].id == live);

    const std::string live_b = insert_event(*db, b.team_id, "capsule.create");
    sb.wait_for([&](const SseEvent& e) { return e.id == live_b; });
    std::this_thread::sleep_for(300ms);
    for (const auto& e : sa.events()) CHECK(e.id != live_b);
    // B saw nothing of A.
    for (const auto& e : sb.events()) {
      CHECK(e.id != live);
      CHECK(str(data_of(e).at("team_id")) == b.team_id);
    }
  }

  SECTION("Last-Event-ID replays the team's later events in order then goes live") {
    auto hdr = key_header(a.api_key);
    hdr["Last-Event-ID"] = e1;
    SseClient s(cp.port(), "/v1/events/stream", hdr);
    REQUIRE(s.status() == 200);
    s.wait_for([&](const SseEvent& e) { return e.id == e3; });
    auto got = s.events();
    REQUIRE(got.size() == 2);
    CHECK(got[0].id == e2);
    CHECK(got[0].type == "capsule.pause");
    CHECK(got[1].id == e3);
    const std::string live = insert_event(*db, a.team_id, "capsule.destroy");
    s.wait_for([&](const SseEvent& e) { return e.id == live; });
    CHECK(s.events().size() == 3);

    // ?last_event_id= works too; an unknown or foreign id replays nothing.
    SseClient q(cp.port(), "/v1/events/stream?last_event_id=" + e2, key_header(a.api_key));
    q.wait_for([&](const SseEvent& e) { return e.id == live; });
    got = q.events();
    REQUIRE(got.size() == 2);
    CHECK(got[0].id == e3);
    CHECK(got[1].id == live);

    auto foreign = key_header(a.api_key);
    foreign["Last-Event-ID"] = eb;
    SseClient f(cp.port(), "/v1/events/stream", foreign);
    REQUIRE(f.status() == 200);
    const std::string marker = insert_event(*db, a.team_id, "host.up");
    f.wait_for([&](const SseEvent& e) { return e.id == marker; });
    CHECK(f.events().size() == 1);
  }

  SECTION("types filters replay and live events and upstream names are accepted") {
    auto hdr = key_header(a.api_key);
    hdr["Last-Event-ID"] = e1;
    SseClient s(cp.port(), "/v1/events/stream?types=capsule.resume,capsule.paused", hdr);
    REQUIRE(s.status() == 200);
    s.wait_for([&](const SseEvent& e) { return e.id == e3; });
    auto got = s.events();
    REQUIRE(got.size() == 2);
    CHECK(got[0].id == e2);
    CHECK(got[1].id == e3);
    insert_event(*db, a.team_id, "capsule.destroy");
    notify_transient(*db, a.team_id, "resuming");
    const std::string wanted = insert_event(*db, a.team_id, "capsule.pause");
    s.wait_for([&](const SseEvent& e) { return e.id == wanted; });
    got = s.events();
    REQUIRE(got.size() == 3);  // neither the destroy nor the transient one

    SseClient t(cp.port(), "/v1/events/stream?types=capsule.state.changed", key_header(a.api_key));
    insert_event(*db, a.team_id, "capsule.create");
    notify_transient(*db, a.team_id, "starting");
    auto ev = t.wait_for([](const SseEvent& e) { return e.type == "capsule.state.changed"; });
    CHECK(str(data_of(ev).at("state")) == "starting");
    CHECK(t.events().size() == 1);
  }

  SECTION("a lost hub connection is reopened and events committed meanwhile are recovered") {
    SseClient s(cp.port(), "/v1/events/stream", key_header(a.api_key));
    REQUIRE(s.status() == 200);
    const std::string before = insert_event(*db, a.team_id, "capsule.create");
    s.wait_for([&](const SseEvent& e) { return e.id == before; });
    // An event whose NOTIFY the hub never saw (committed while it was disconnected), then
    // the hub's LISTEN session is killed: after reconnecting it recovers the event.
    const std::string during = insert_event(*db, a.team_id, "capsule.pause", 0, false);
    auto lease = db->acquire();
    auto killed = lease->exec(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE (query LIKE '%LISTEN wrenn_live%' OR query LIKE '%FROM events WHERE id = ANY%') "
        "  AND pid <> pg_backend_pid()");
    REQUIRE(killed.rows() >= 1);
    s.wait_for([&](const SseEvent& e) { return e.id == during; });
    const std::string after = insert_event(*db, a.team_id, "capsule.resume");
    s.wait_for([&](const SseEvent& e) { return e.id == after; });
    int seen_before = 0;
    for (const auto& e : s.events()) seen_before += e.id == before;
    CHECK(seen_before == 1);  // recovery does not repeat delivered events
    CHECK(cp.log().find("live events: lost the database connection") != std::string::npos);
  }

  SECTION("a client that goes away ends its stream at once") {
    const long before = finished_streams(cp);
    {
      SseClient s(cp.port(), "/v1/events/stream", key_header(a.api_key));
      REQUIRE(s.status() == 200);
    }
    CHECK(wait_until([&] { return finished_streams(cp) == before + 1; }, 5s));
  }
}

TEST_CASE("event stream: a real sandbox's lifecycle on its team's stream only") {
  enter_private_netns();
  TempDir tmp;
  CpProcess cp;
  const std::string dir = tmp.path() + "/agent";
  std::filesystem::create_directories(dir + "/images");
  std::filesystem::create_directory_symlink(busybox_template(), dir + "/images/minimal");
  AgentProcess agent(dir, {"--warm-slots", "0", "--ready-disks", "0"});
  cp.register_agent(agent);
  auto a = cp.create_team("sse-life-a");
  auto b = cp.create_team("sse-life-b");

  SseClient sa(cp.port(), "/v1/events/stream", key_header(a.api_key));
  SseClient sb(cp.port(), "/v1/events/stream", key_header(b.api_key));
  REQUIRE(sa.status() == 200);
  REQUIRE(sb.status() == 200);

  auto r = cp.post("/v1/capsules", R"({"memory_mb":256})", a.api_key);
  INFO(r.body);
  REQUIRE(r.status == 201);
  const std::string id = str(r.json().at("id"));

  auto starting = sa.wait_for([&](const SseEvent& e) {
    return e.type == "capsule.state.changed" && str(data_of(e).at("resource").at("id")) == id;
  });
  auto st = data_of(starting);
  CHECK(starting.id.empty());
  CHECK(str(st.at("state")) == "starting");
  CHECK(str(st.at("team_id")) == a.team_id);
  CHECK(str(st.at("resource").at("type")) == "sandbox");

  auto created = sa.wait_for([](const SseEvent& e) { return e.type == "capsule.create"; });
  CHECK(created.id.starts_with("ev-"));
  auto c = data_of(created);
  CHECK(str(c.at("outcome")) == "success");
  CHECK(str(c.at("team_id")) == a.team_id);
  CHECK(str(c.at("resource").at("id")) == id);
  CHECK(str(c.at("actor").at("type")) == "api_key");
  {
    // starting comes before create.
    auto all = sa.events();
    std::size_t i_start = all.size(), i_create = all.size();
    for (std::size_t i = 0; i < all.size(); ++i) {
      if (all[i].type == "capsule.state.changed" && i_start == all.size()) i_start = i;
      if (all[i].type == "capsule.create") i_create = i;
    }
    CHECK(i_start < i_create);
  }

  r = cp.del("/v1/capsules/" + id, a.api_key);
  CHECK(r.status == 204);
  auto destroyed = sa.wait_for([](const SseEvent& e) { return e.type == "capsule.destroy"; });
  CHECK(str(data_of(destroyed).at("resource").at("id")) == id);

  // Replay from the create's id gives the destroy.
  auto hdr = key_header(a.api_key);
  hdr["Last-Event-ID"] = created.id;
  SseClient replay(cp.port(), "/v1/events/stream", hdr);
  auto again = replay.wait_for([](const SseEvent& e) { return e.type == "capsule.destroy"; });
  CHECK(again.id == destroyed.id);
  CHECK(replay.events().size() == 1);

  std::this_thread::sleep_for(500ms);
  INFO(sb.raw());
  CHECK(sb.events().empty());  // team B saw nothing of team A
  CHECK_FALSE(sb.ended());
}
