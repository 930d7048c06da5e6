// Wire identifiers and API keys (reference §1.4, §8).
//
// Every entity id is a random UUIDv4 (the form Postgres stores); on the wire it is a
// kind-specific prefix followed by exactly 25 characters of lowercase base36 (0-9a-z): the
// 16 UUID bytes read as a big-endian 128-bit integer, left-padded with '0'. For example
// the all-zero UUID of the Platform team is "team-0000000000000000000000000".
//
// Errors: parse_id throws Error(invalid_argument, "invalid <kind> ID \"<text>\"") — the
// text is truncated to 64 bytes and non-printable bytes are escaped — so an HTTP layer
// maps it to 400 without inspecting strings; try_parse_id returns nullopt instead for
// callers that answer 404. Uppercase letters are rejected (the encoder never emits them).
// Thread-safety: every function may be called from any thread concurrently.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace wrenn::ids {

// One per prefix in reference §1.4.
enum class Kind {
  kCapsule,           // cl-
  kUser,              // usr-
  kTeam,              // team-
  kApiKey,            // key-
  kBuild,             // bld-   template build
  kPermission,        // perm-  admin permission (unused upstream)
  kHost,              // host-
  kHostToken,         // htok-  host registration-token record
  kHostRefreshToken,  // hrt-   host refresh-token record (never exposed)
  kAuditLog,          // log-
  kChannel,           // ch-    notification channel
  kTemplate,          // tmpl-  template (ours; upstream used bare UUIDs)
  kEvent,             // ev-    lifecycle event (the outbox)
  kDelivery,          // dl-    one event's delivery to one channel
};

// 16 bytes, network (big-endian) order, as in RFC 4122.
using Uuid = std::array<uint8_t, 16>;

inline constexpr std::size_t kEncodedLength = 25;

// "cl-", "usr-", ...
std::string_view prefix(Kind kind);
// Human name used in error messages: "capsule", "user", "API key", ...
std::string_view kind_name(Kind kind);

// A fresh random UUIDv4.
Uuid new_uuid();

// prefix + 25 base36 characters.
std::string format_id(Kind kind, const Uuid& uuid);
// format_id(kind, new_uuid()).
std::string new_id(Kind kind);

// Inverse of format_id: exact prefix, exactly 25 characters of [0-9a-z], value < 2^128.
// The UUID's version bits are not checked (seeded rows use the all-zero UUID).
Uuid parse_id(Kind kind, std::string_view text);
std::optional<Uuid> try_parse_id(Kind kind, std::string_view text);

// Hyphenated lowercase form "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" (Postgres, agent RPCs
// carrying team_id/template_id) and its parser (either case; invalid_argument otherwise).
std::string uuid_string(const Uuid& uuid);
Uuid parse_uuid(std::string_view text);

// API keys: "wrn_" + 32 lowercase hex characters (16 random bytes). Stored as
// crypto::sha256_hex(key); listed by api_key_prefix(key) = the first 10 characters.
inline constexpr std::string_view kApiKeyPrefix = "wrn_";
inline constexpr std::size_t kApiKeyLength = 36;
inline constexpr std::size_t kApiKeyDisplayPrefixLength = 10;

std::string new_api_key();
// Exactly the shape new_api_key produces.
bool looks_like_api_key(std::string_view s);
// The first 10 characters; Error(invalid_argument) unless looks_like_api_key(key).
std::string api_key_prefix(std::string_view key);

}  // namespace wrenn::ids
