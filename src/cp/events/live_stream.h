// Live events for dashboards: GET /v1/events/stream, Server-Sent Events.
//
// Contract:
//  - LiveHub keeps one database connection LISTENing on kEventsChannel and kLiveChannel
//    (event.h) on its own thread. A durable event's NOTIFY carries its id; the hub reads
//    the event (team, type, payload) and passes it to the subscribers of that team. A
//    transient event's NOTIFY carries its JSON (with team_id) and is passed on as is.
//    Every replica's hub sees every replica's events. A lost connection is reopened (with
//    a warning); events committed meanwhile are recovered by id order from `events`.
//  - GET /v1/events/stream (Access::kTeam): 200 text/event-stream; each event is
//    "id: <ev-id>\nevent: <type>\ndata: <payload JSON>\n\n" (transient ones have no id
//    line); a comment ": ping" every 15 s keeps proxies from closing the stream. Optional
//    ?types=a,b filters by type. A Last-Event-ID header (or ?last_event_id=) replays the
//    team's durable events after that one (at most 1000) before going live. Only the
//    caller's team's events are ever sent.
//  - A subscriber that falls more than 1024 events behind is disconnected (the client
//    reconnects with Last-Event-ID); the hub never blocks on a slow client.
#pragma once

#include <memory>
#include <string>

#include "server_context.h"

namespace wrenn::cp::events {

class LiveHub {
 public:
  explicit LiveHub(std::string conninfo);
  ~LiveHub();  // stops the thread
  LiveHub(const LiveHub&) = delete;
  LiveHub& operator=(const LiveHub&) = delete;
  void start();
  // Ends every open stream (each finishes its response) and any opened later, without
  // waiting for the thread: call it first in a graceful shutdown, which otherwise waits for
  // the streams' connections to close. Safe on the I/O thread.
  void close_streams();
  void stop();  // close_streams() and joins the thread

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
  friend void register_event_stream_route(ServerContext& ctx, LiveHub& hub);
};

void register_event_stream_route(ServerContext& ctx, LiveHub& hub);

}  // namespace wrenn::cp::events
