#include "crypto/ids.h"

#include "crypto/random.h"
#include "error.h"

namespace wrenn::ids {

namespace {

using U128 = unsigned __int128;

constexpr char kBase36[] = "0123456789abcdefghijklmnopqrstuvwxyz";

struct KindInfo {
  std::string_view prefix;
  std::string_view name;
};

KindInfo info(Kind kind) {
  switch (kind) {
    case Kind::kCapsule:
      return {"cl-", "capsule"};
    case Kind::kUser:
      return {"usr-", "user"};
    case Kind::kTeam:
      return {"team-", "team"};
    case Kind::kApiKey:
      return {"key-", "API key"};
    case Kind::kBuild:
      return {"bld-", "build"};
    case Kind::kPermission:
      return {"perm-", "permission"};
    case Kind::kHost:
      return {"host-", "host"};
    case Kind::kHostToken:
      return {"htok-", "host token"};
    case Kind::kHostRefreshToken:
      return {"hrt-", "host refresh token"};
    case Kind::kAuditLog:
      return {"log-", "audit log"};
    case Kind::kChannel:
      return {"ch-", "channel"};
    case Kind::kTemplate:
      return {"tmpl-", "template"};
    case Kind::kEvent:
      return {"ev-", "event"};
    case Kind::kDelivery:
      return {"dl-", "delivery"};
  }
  throw Error(Code::kInternal, "unknown id kind");
}

U128 to_u128(const Uuid& u) {
  U128 v = 0;
  for (uint8_t b : u) v = v << 8 | b;
  return v;
}

Uuid from_u128(U128 v) {
  Uuid u{};
  for (int i = 15; i >= 0; --i) {
    u[static_cast<std::size_t>(i)] = static_cast<uint8_t>(v & 0xff);
    v >>= 8;
  }
  return u;
}

int base36_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'z') return c - 'a' + 10;
  return -1;
}

// Printable, bounded rendering of untrusted text for error messages.
std::string quote_for_error(std::string_view text) {
  constexpr std::size_t kMax = 64;
  std::string out = "\"";
  for (std::size_t i = 0; i < text.size() && i < kMax; ++i) {
    auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
      out += static_cast<char>(c);
    } else {
      constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  if (text.size() > kMax) out += "...";
  out += '"';
  return out;
}

std::optional<Uuid> decode(Kind kind, std::string_view text) {
  std::string_view p = info(kind).prefix;
  if (text.size() != p.size() + kEncodedLength || !text.starts_with(p)) return std::nullopt;
  constexpr U128 kMax = ~U128{0};
  U128 v = 0;
  for (char c : text.substr(p.size())) {
    int d = base36_value(c);
    if (d < 0) return std::nullopt;
    if (v > (kMax - static_cast<U128>(d)) / 36) return std::nullopt;  // >= 2^128
    v = v * 36 + static_cast<U128>(d);
  }
  return from_u128(v);
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool is_lower_hex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

}  // namespace

std::string_view prefix(Kind kind) {
  return info(kind).prefix;
}
std::string_view kind_name(Kind kind) {
  return info(kind).name;
}

Uuid new_uuid() {
  Uuid u;
  crypto::random_fill(u);
  u[6] = static_cast<uint8_t>((u[6] & 0x0f) | 0x40);  // version 4
  u[8] = static_cast<uint8_t>((u[8] & 0x3f) | 0x80);  // RFC 4122 variant
  return u;
}

std::string format_id(Kind kind, const Uuid& uuid) {
  char digits[kEncodedLength];
  U128 v = to_u128(uuid);
  for (std::size_t i = kEncodedLength; i-- > 0;) {
    digits[i] = kBase36[static_cast<int>(v % 36)];
    v /= 36;
  }
  std::string out(prefix(kind));
  out.append(digits, kEncodedLength);
  return out;
}

std::string new_id(Kind kind) {
  return format_id(kind, new_uuid());
}

std::optional<Uuid> try_parse_id(Kind kind, std::string_view text) {
  return decode(kind, text);
}

Uuid parse_id(Kind kind, std::string_view text) {
  if (auto u = decode(kind, text)) return *u;
  throw Error(Code::kInvalidArgument,
              "invalid " + std::string(kind_name(kind)) + " ID " + quote_for_error(text));
}

std::string uuid_string(const Uuid& uuid) {
  constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(36);
  for (std::size_t i = 0; i < uuid.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out += '-';
    out += kHex[uuid[i] >> 4];
    out += kHex[uuid[i] & 15];
  }
  return out;
}

Uuid parse_uuid(std::string_view text) {
  auto invalid = [&] {
    return Error(Code::kInvalidArgument, "invalid UUID " + quote_for_error(text));
  };
  if (text.size() != 36) throw invalid();
  Uuid u{};
  std::size_t n = 0;
  for (std::size_t i = 0; i < text.size();) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (text[i] != '-') throw invalid();
      ++i;
      continue;
    }
    int hi = hex_value(text[i]);
    int lo = hex_value(text[i + 1]);
    if (hi < 0 || lo < 0) throw invalid();
    u[n++] = static_cast<uint8_t>(hi << 4 | lo);
    i += 2;
  }
  return u;
}

std::string new_api_key() {
  return std::string(kApiKeyPrefix) + crypto::random_hex(16);
}

bool looks_like_api_key(std::string_view s) {
  if (s.size() != kApiKeyLength || !s.starts_with(kApiKeyPrefix)) return false;
  for (char c : s.substr(kApiKeyPrefix.size())) {
    if (!is_lower_hex(c)) return false;
  }
  return true;
}

std::string api_key_prefix(std::string_view key) {
  if (!looks_like_api_key(key)) throw Error(Code::kInvalidArgument, "invalid API key");
  return std::string(key.substr(0, kApiKeyDisplayPrefixLength));
}

}  // namespace wrenn::ids
