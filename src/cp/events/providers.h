// How each provider is called: the HTTP request that carries one event to one channel.
//
// Contract (request() is pure: no I/O, no clock, no randomness — the caller passes the
// delivery id and timestamp, so tests can check exact requests):
//  - webhook: POST channel.target, body = the payload JSON exactly as serialized, headers
//    Content-Type: application/json, X-Wrenn-Delivery: <delivery_id>, X-Wrenn-Timestamp:
//    <timestamp>, and, when the channel has a signing_key secret, X-Wrenn-Signature:
//    sha256=<hex HMAC-SHA256(signing_key, timestamp + "." + body)>.
//  - slack: POST secrets.webhook_url {"text": message}
//  - discord: POST secrets.webhook_url {"content": message} (cut to 2000 characters)
//  - teams: POST secrets.webhook_url, a MessageCard {"@type":"MessageCard","@context":
//    "https://schema.org/extensions","summary":summary,"title":summary,"text":message
//    with "\n" as "<br>"}
//  - google-chat: POST secrets.webhook_url {"text": message}
//  - telegram: POST <telegram_api_url>/bot<bot_token>/sendMessage {"chat_id": target,
//    "text": message, "disable_web_page_preview": true}
//  - matrix: PUT <options.homeserver>/_matrix/client/v3/rooms/<urlescaped target>/send/
//    m.room.message/<delivery_id> with Authorization: Bearer <access_token>, {"msgtype":
//    "m.text","body": message}. The delivery id as transaction id makes a retried send
//    idempotent on the homeserver.
//  - Every request of a chat provider has Content-Type: application/json and carries the
//    X-Wrenn-Delivery header too.
//  - message(payload): "<summary>\n\nEvent: <event>[ (<outcome>)]\nResource: <type> <id>\n
//    Actor: <actor>\nTeam: <team_id>\nTime: <timestamp>[\nError: <error>][\n<k>: <v> for
//    each metadata entry, sorted]". summary: "Capsule X created" / "… failed to be
//    created: <error>" / "paused" / "resumed" / "destroyed", "Template snapshot X created"
//    / "deleted", "Host X is up" / "is down"; actor "system", "Name (usr-…)",
//    "api_key Name (key-…)".
//  - validate(config) checks a channel configuration before it is stored or tested and
//    throws ApiError invalid_request naming the field: provider known; webhook target an
//    http(s) URL; slack/discord/teams/google-chat webhook_url an https URL (http allowed
//    only for private targets, for local receivers); telegram target a chat id and
//    bot_token present; matrix target a room id/alias, access_token present, homeserver an
//    http(s) URL (default https://<server part of the room>). It does not resolve names
//    (targets.h does that).
#pragma once

#include <boost/json/object.hpp>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace wrenn::cp::events {

// A channel as delivery needs it: the secrets already opened.
struct ChannelConfig {
  std::string id;        // "ch-…" (empty for POST /v1/channels/test)
  std::string provider;  // webhook | slack | discord | teams | google-chat | telegram | matrix
  std::string target;    // webhook URL, telegram chat id, matrix room; empty otherwise
  std::map<std::string, std::string> secrets;  // signing_key, webhook_url, bot_token,
                                               // access_token
  std::map<std::string, std::string> options;  // matrix: homeserver
};

struct OutboundRequest {
  std::string method = "POST";  // POST | PUT
  std::string url;              // absolute http(s) URL
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

struct ProviderSettings {
  std::string telegram_api_url = "https://api.telegram.org";  // WRENN_TELEGRAM_API_URL
  bool allow_private = false;                                  // relaxes https-only URLs
};

// The human-readable text of an event (see the contract).
std::string message(const boost::json::object& payload);
// The request delivering `payload` (its serialized form is `body`) to `channel`.
OutboundRequest request(const ChannelConfig& channel, const boost::json::object& payload,
                        const std::string& body, const std::string& delivery_id,
                        const std::string& timestamp, const ProviderSettings& settings);
// hex HMAC-SHA256(key, timestamp + "." + body), without the "sha256=" prefix.
std::string signature(std::string_view key, std::string_view timestamp, std::string_view body);
// Checks a configuration (throws ApiError invalid_request).
void validate(const ChannelConfig& channel, const ProviderSettings& settings);
// The URL the request goes to (webhook target, chat webhook_url, telegram API, matrix
// homeserver), for the SSRF check; empty when none can be formed.
std::string destination_url(const ChannelConfig& channel, const ProviderSettings& settings);

}  // namespace wrenn::cp::events
