// JSON Web Tokens (RFC 7519) signed with HMAC-SHA256 (JWS "HS256") — the user and host
// tokens of reference §8. Only HS256 is produced and only HS256 is accepted: "none",
// HS384/HS512 and every asymmetric alg are rejected (deliberately stricter than upstream,
// which accepted any HMAC alg).
//
// Errors:
//   sign_hs256   — Error(invalid_argument) for an empty secret or claims without a numeric
//                  "exp" (such a token could never verify).
//   verify_hs256 — Error(unauthenticated, "jwt: <short reason>") for every bad token; the
//                  message never contains the token, its claims or the secret. Reasons:
//                  "malformed token", "unsupported alg", "unsupported header" (a "crit"
//                  member), "bad signature", "invalid claims", "missing exp", "expired",
//                  "not yet valid". Error(invalid_argument) for an empty secret (a
//                  configuration error, not a bad token).
// The signature is checked (in constant time) before the payload is parsed; time claims are
// checked after. Claims other than exp/nbf (typ, sub, iat, ...) are the caller's business.
// Thread-safety: pure functions; safe from any thread.
#pragma once

#include <boost/json/object.hpp>
#include <chrono>
#include <string>
#include <string_view>

namespace wrenn::crypto {

struct JwtVerifyOptions {
  // Tolerated clock skew, applied to both exp and nbf.
  std::chrono::seconds leeway{30};
  // Tokens longer than this are rejected as malformed before any work is done.
  std::size_t max_token_size = 8192;
};

// Compact serialisation header.payload.signature with header {"alg":"HS256","typ":"JWT"};
// the payload is boost::json::serialize(claims), members in their insertion order.
std::string sign_hs256(std::string_view secret, const boost::json::object& claims);

// Returns the claims of a valid token. exp is required: the token is expired when
// now >= exp + leeway (RFC 7519 §4.1.4). When present, nbf must satisfy nbf <= now + leeway.
// exp and nbf are NumericDate (integer or fractional seconds since the epoch); other types
// are rejected.
boost::json::object verify_hs256(std::string_view secret, std::string_view token,
                                 std::chrono::system_clock::time_point now,
                                 const JwtVerifyOptions& options = {});

}  // namespace wrenn::crypto
