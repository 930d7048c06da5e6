#include "auth/tokens.h"

#include <boost/json.hpp>

#include "api/api_error.h"
#include "crypto/ids.h"
#include "crypto/jwt.h"
#include "error.h"

namespace wrenn::cp::auth {

namespace {

std::int64_t unix_seconds(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

std::string claim(const boost::json::object& o, std::string_view key) {
  auto it = o.find(key);
  if (it == o.end() || !it->value().is_string()) return {};
  return std::string(it->value().as_string());
}

// The claims of a valid token; ApiError unauthorized otherwise.
boost::json::object verify(std::string_view secret, std::string_view token,
                           std::string_view message) {
  try {
    return crypto::verify_hs256(secret, token, std::chrono::system_clock::now());
  } catch (const Error&) {
  }
  throw ApiError(ApiCode::kUnauthorized, std::string(message));
}

}  // namespace

std::string sign_user_token(std::string_view secret, const UserClaims& c,
                            std::chrono::system_clock::time_point now, std::chrono::seconds ttl) {
  boost::json::object o;
  o["sub"] = c.user_id;
  o["team_id"] = c.team_id;
  o["role"] = c.role;
  o["email"] = c.email;
  o["name"] = c.name;
  if (c.is_admin) o["is_admin"] = true;
  o["iat"] = unix_seconds(now);
  o["exp"] = unix_seconds(now + ttl);
  return crypto::sign_hs256(secret, o);
}

UserClaims verify_user_token(std::string_view secret, std::string_view token) {
  constexpr std::string_view kMsg = "invalid or expired token";
  auto o = verify(secret, token, kMsg);
  if (o.contains("typ") || o.contains("host_id"))
    throw ApiError(ApiCode::kUnauthorized, std::string(kMsg));
  UserClaims c;
  c.user_id = claim(o, "sub");
  c.team_id = claim(o, "team_id");
  c.role = claim(o, "role");
  c.email = claim(o, "email");
  c.name = claim(o, "name");
  if (!ids::try_parse_id(ids::Kind::kUser, c.user_id) ||
      !ids::try_parse_id(ids::Kind::kTeam, c.team_id))
    throw ApiError(ApiCode::kUnauthorized, std::string(kMsg));
  return c;
}

std::string sign_host_token(std::string_view secret, const std::string& host_id,
                            std::chrono::system_clock::time_point now, std::chrono::seconds ttl) {
  boost::json::object o;
  o["typ"] = "host";
  o["host_id"] = host_id;
  o["sub"] = host_id;
  o["iat"] = unix_seconds(now);
  o["exp"] = unix_seconds(now + ttl);
  return crypto::sign_hs256(secret, o);
}

std::string verify_host_token(std::string_view secret, std::string_view token) {
  constexpr std::string_view kMsg = "invalid or expired host token";
  auto o = verify(secret, token, kMsg);
  const std::string host_id = claim(o, "host_id");
  if (claim(o, "typ") != "host" || !ids::try_parse_id(ids::Kind::kHost, host_id))
    throw ApiError(ApiCode::kUnauthorized, std::string(kMsg));
  return host_id;
}

}  // namespace wrenn::cp::auth
