#include "events/providers.h"

#include <boost/json/serialize.hpp>
#include <boost/json/string.hpp>
#include <cctype>

#include "api/api_error.h"
#include "crypto/hash.h"
#include "events/targets.h"

namespace wrenn::cp::events {

namespace json = boost::json;

namespace {

[[noreturn]] void invalid(std::string message) {
  throw ApiError(ApiCode::kInvalidRequest, std::move(message));
}

std::string str(const json::object& o, std::string_view key) {
  auto it = o.find(key);
  if (it == o.end()) return {};
  if (it->value().is_string()) return std::string(it->value().get_string());
  if (it->value().is_null()) return {};
  return json::serialize(it->value());
}

const json::object* obj(const json::object& o, std::string_view key) {
  auto it = o.find(key);
  return it != o.end() && it->value().is_object() ? &it->value().get_object() : nullptr;
}

std::string get(const std::map<std::string, std::string>& m, const std::string& key) {
  auto it = m.find(key);
  return it == m.end() ? std::string() : it->second;
}

std::string strip_slash(std::string s) {
  while (!s.empty() && s.back() == '/') s.pop_back();
  return s;
}

// The first sentence of a message: what happened to what.
std::string summary(const json::object& payload) {
  std::string event = str(payload, "event");
  std::string outcome = str(payload, "outcome");
  std::string error = str(payload, "error");
  std::string id;
  std::string type;
  if (const auto* r = obj(payload, "resource")) {
    id = str(*r, "id");
    type = str(*r, "type");
  }
  auto done = [&](const std::string& noun, const std::string& verb) {
    if (outcome == "error")
      return noun + " " + id + " failed to be " + verb + (error.empty() ? "" : ": " + error);
    return noun + " " + id + " " + verb;
  };
  if (event == "capsule.create") return done("Capsule", "created");
  if (event == "capsule.pause") return done("Capsule", "paused");
  if (event == "capsule.resume") return done("Capsule", "resumed");
  if (event == "capsule.destroy") return done("Capsule", "destroyed");
  if (event == "template.snapshot.create") return done("Template snapshot", "created");
  if (event == "template.snapshot.delete") return done("Template snapshot", "deleted");
  if (event == "host.up") return "Host " + id + " is up";
  if (event == "host.down") return "Host " + id + " is down";
  return event + " on " + type + " " + id;
}

std::string actor_text(const json::object& payload) {
  const auto* a = obj(payload, "actor");
  if (a == nullptr) return "system";
  std::string type = str(*a, "type");
  std::string id = str(*a, "id");
  std::string name = str(*a, "name");
  if (type.empty() || type == "system") return "system";
  std::string who = name.empty() ? id : (id.empty() ? name : name + " (" + id + ")");
  return type == "api_key" ? "api_key " + who : who;
}

// At most n Unicode code points of UTF-8 text (never cuts inside a character).
std::string cut_code_points(const std::string& s, std::size_t n) {
  std::size_t count = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xc0) != 0x80) {
      if (count == n) return s.substr(0, i);
      ++count;
    }
  }
  return s;
}

std::string replace_all(std::string s, std::string_view from, std::string_view to) {
  for (std::size_t pos = 0; (pos = s.find(from, pos)) != std::string::npos; pos += to.size())
    s.replace(pos, from.size(), to);
  return s;
}

// Percent-encodes everything but RFC 3986 unreserved characters (a path segment).
std::string url_escape(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

bool is_chat_webhook(const std::string& provider) {
  return provider == "slack" || provider == "discord" || provider == "teams" ||
         provider == "google-chat";
}

// The server part of a matrix room id or alias ("!abc:example.org" -> "example.org").
std::string matrix_server(const std::string& room) {
  auto colon = room.find(':');
  return colon == std::string::npos ? std::string() : room.substr(colon + 1);
}

std::string matrix_homeserver(const ChannelConfig& ch) {
  std::string hs = get(ch.options, "homeserver");
  if (!hs.empty()) return strip_slash(hs);
  std::string server = matrix_server(ch.target);
  return server.empty() ? std::string() : "https://" + server;
}

std::string json_body(json::object o) {
  return json::serialize(o);
}

// Checks an http(s) URL without resolving; `field` names it in the message.
ParsedUrl check_field_url(const std::string& field, const std::string& url) {
  if (url.empty()) invalid(field + " is required");
  try {
    return parse_url(url);
  } catch (const ApiError& e) {
    invalid(field + ": " + e.what());
  }
}

}  // namespace

std::string message(const json::object& payload) {
  std::string out = summary(payload);
  std::string event = str(payload, "event");
  std::string outcome = str(payload, "outcome");
  out += "\n\nEvent: " + event;
  if (!outcome.empty()) out += " (" + outcome + ")";
  std::string id;
  std::string type;
  if (const auto* r = obj(payload, "resource")) {
    id = str(*r, "id");
    type = str(*r, "type");
  }
  out += "\nResource: " + type + " " + id;
  out += "\nActor: " + actor_text(payload);
  out += "\nTeam: " + str(payload, "team_id");
  out += "\nTime: " + str(payload, "timestamp");
  if (std::string error = str(payload, "error"); !error.empty()) out += "\nError: " + error;
  if (const auto* m = obj(payload, "metadata")) {
    std::map<std::string, std::string> sorted;
    for (const auto& kv : *m) sorted[std::string(kv.key())] = str(*m, kv.key());
    for (const auto& [k, v] : sorted) out += "\n" + k + ": " + v;
  }
  return out;
}

std::string signature(std::string_view key, std::string_view timestamp, std::string_view body) {
  std::string data;
  data.reserve(timestamp.size() + 1 + body.size());
  data.append(timestamp).append(".").append(body);
  return crypto::hmac_sha256_hex(key, data);
}

OutboundRequest request(const ChannelConfig& channel, const json::object& payload,
                        const std::string& body, const std::string& delivery_id,
                        const std::string& timestamp, const ProviderSettings& settings) {
  OutboundRequest req;
  req.headers.emplace_back("Content-Type", "application/json");
  req.headers.emplace_back("X-Wrenn-Delivery", delivery_id);
  const std::string& p = channel.provider;
  if (p == "webhook") {
    req.url = channel.target;
    req.body = body;
    req.headers.emplace_back("X-Wrenn-Timestamp", timestamp);
    if (std::string key = get(channel.secrets, "signing_key"); !key.empty())
      req.headers.emplace_back("X-Wrenn-Signature", "sha256=" + signature(key, timestamp, body));
    return req;
  }
  if (is_chat_webhook(p)) {
    req.url = get(channel.secrets, "webhook_url");
    if (req.url.empty()) invalid("secrets.webhook_url is required for provider " + p);
    std::string text = message(payload);
    if (p == "slack" || p == "google-chat") {
      req.body = json_body({{"text", text}});
    } else if (p == "discord") {
      req.body = json_body({{"content", cut_code_points(text, 2000)}});
    } else {  // teams
      std::string s = summary(payload);
      req.body = json_body({{"@type", "MessageCard"},
                            {"@context", "https://schema.org/extensions"},
                            {"summary", s},
                            {"title", s},
                            {"text", replace_all(text, "\n", "<br>")}});
    }
    return req;
  }
  if (p == "telegram") {
    std::string token = get(channel.secrets, "bot_token");
    if (token.empty()) invalid("secrets.bot_token is required for provider telegram");
    req.url = strip_slash(settings.telegram_api_url) + "/bot" + token + "/sendMessage";
    req.body = json_body({{"chat_id", channel.target},
                          {"text", message(payload)},
                          {"disable_web_page_preview", true}});
    return req;
  }
  if (p == "matrix") {
    std::string token = get(channel.secrets, "access_token");
    if (token.empty()) invalid("secrets.access_token is required for provider matrix");
    std::string hs = matrix_homeserver(channel);
    if (hs.empty()) invalid("options.homeserver is required for matrix room " + channel.target);
    req.method = "PUT";
    req.url = hs + "/_matrix/client/v3/rooms/" + url_escape(channel.target) +
              "/send/m.room.message/" + url_escape(delivery_id);
    req.headers.emplace_back("Authorization", "Bearer " + token);
    req.body = json_body({{"msgtype", "m.text"}, {"body", message(payload)}});
    return req;
  }
  invalid("unknown provider " + p);
}

void validate(const ChannelConfig& channel, const ProviderSettings& settings) {
  const std::string& p = channel.provider;
  if (p == "webhook") {
    check_field_url("target", channel.target);
    return;
  }
  if (is_chat_webhook(p)) {
    ParsedUrl u = check_field_url("secrets.webhook_url", get(channel.secrets, "webhook_url"));
    if (!u.tls && !settings.allow_private)
      invalid(
          "secrets.webhook_url must be an https URL (http is allowed only with "
          "WRENN_ALLOW_PRIVATE_TARGETS=1, for local receivers)");
    return;
  }
  if (p == "telegram") {
    const std::string& t = channel.target;
    bool numeric = !t.empty();
    for (std::size_t i = 0; i < t.size(); ++i)
      numeric = numeric && (std::isdigit(static_cast<unsigned char>(t[i])) ||
                            (i == 0 && t[i] == '-' && t.size() > 1));
    bool username = t.size() >= 2 && t[0] == '@' && t.size() <= 33;
    for (std::size_t i = 1; username && i < t.size(); ++i)
      username = std::isalnum(static_cast<unsigned char>(t[i])) || t[i] == '_';
    if (!numeric && !username)
      invalid(
          "target must be a telegram chat id (a number such as -1001234567890, or "
          "@channelname)");
    std::string token = get(channel.secrets, "bot_token");
    if (token.empty()) invalid("secrets.bot_token is required for provider telegram");
    for (unsigned char c : token)
      if (!std::isalnum(c) && c != ':' && c != '_' && c != '-')
        invalid("secrets.bot_token is not a telegram bot token");
    return;
  }
  if (p == "matrix") {
    const std::string& t = channel.target;
    std::string server = matrix_server(t);
    if (t.size() < 4 || (t[0] != '!' && t[0] != '#') || t.find(':') < 2 || server.empty())
      invalid("target must be a matrix room id (!room:server) or alias (#alias:server)");
    if (get(channel.secrets, "access_token").empty())
      invalid("secrets.access_token is required for provider matrix");
    if (std::string hs = get(channel.options, "homeserver"); !hs.empty())
      check_field_url("options.homeserver", hs);
    else
      check_field_url("options.homeserver (defaulting to https://" + server + ")",
                      "https://" + server);
    return;
  }
  invalid(
      "provider must be one of webhook, slack, discord, teams, google-chat, telegram, "
      "matrix" +
      std::string(p.empty() ? "" : " (got " + p.substr(0, 40) + ")"));
}

std::string destination_url(const ChannelConfig& channel, const ProviderSettings& settings) {
  const std::string& p = channel.provider;
  if (p == "webhook") return channel.target;
  if (is_chat_webhook(p)) return get(channel.secrets, "webhook_url");
  if (p == "telegram") return strip_slash(settings.telegram_api_url) + "/";
  if (p == "matrix") {
    std::string hs = matrix_homeserver(channel);
    return hs.empty() ? hs : hs + "/";
  }
  return {};
}

}  // namespace wrenn::cp::events
