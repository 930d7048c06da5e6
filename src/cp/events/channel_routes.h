// The REST API of notification channels (/v1/channels, reference §3.11 made stricter).
//
// Routes (Access::kTeam: a user's JWT or an API key, scoped to its team; another team's
// channel is 404):
//  - POST /v1/channels {name, provider, config:{…}, events:[…]} -> 201 Channel, with
//    "secret" (the webhook signing secret: the caller's config.secret or 64 generated hex
//    characters) shown this once. config keys per provider: webhook url, secret?;
//    slack|discord|teams|google-chat (alias googlechat) webhook_url; telegram bot_token,
//    chat_id; matrix homeserver_url, access_token, room_id. An unknown key is 400 naming
//    it. Events: kEventTypes or their upstream names (event.h), at least one. Name: trimmed,
//    lowercased, spaces to '-', then the slug rule; 409 conflict when the team has it.
//    The destination is checked against SSRF (targets.h) with the configured policy.
//  - GET /v1/channels (newest first), GET /v1/channels/{id}.
//  - PATCH /v1/channels/{id} {name?, events?, config?}: what is given is replaced
//    (config entirely, provider fixed; a webhook keeps its signing secret unless config
//    has "secret"). PUT /v1/channels/{id}/config {config} as upstream.
//  - POST /v1/channels/{id}/rotate-secret: webhook only; a new signing secret, returned
//    once as "secret".
//  - DELETE /v1/channels/{id}: 204, also when it does not exist.
//  - POST /v1/channels/test {provider, config}: validates, sends a "channel.test" event to
//    that configuration synchronously (nothing stored) and answers 200 {"status":"ok",
//    "http_status"} or 502 delivery_failed with the provider's answer in the message.
//  - GET /v1/channels/{id}/deliveries?limit=N(1..200, default 50)&before=<dl-id>: newest
//    first, each {id, event_id, event, state, attempts, next_attempt_at, last_error,
//    created_at, attempt_log:[{attempt, request_id, started_at, duration_ms, status_code,
//    error, outcome}]}.
//  - Channel JSON: {id, team_id, name, provider, events, apply_set (null for REST-made),
//    read_only, created_at, updated_at}; config values and secrets are never returned.
//  - A channel declared in specs (apply_set set) is read-only here: PATCH, PUT config,
//    rotate-secret and DELETE are 409 conflict naming the apply set.
//  - Audited: channel create (success), update / rotate_config (info), delete (warning),
//    metadata {name, provider} — never a secret.
#pragma once

#include "auth/bootstrap.h"
#include "server_context.h"

namespace wrenn::cp {

void register_channel_routes(ServerContext& ctx, const auth::Secrets& secrets);

}  // namespace wrenn::cp
