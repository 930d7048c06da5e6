// The control plane's bearer credentials (reference §8): user JWTs, host JWTs and their
// lifetimes. All are HS256 with the control plane's JWT secret (auth/secrets.h).
//
// User token claims: sub = "usr-…", team_id = "team-…", role, email, name, is_admin (only
// when true; informational — admin rights are re-read from the database), iat, exp = iat +
// 6 h. Host token claims: typ = "host", host_id = sub = "host-…", iat, exp = iat + 7 d.
// A host token is never accepted as a user token and vice versa.
// Verification failures are ApiError unauthorized with a fixed message; the token and the
// reason are not echoed.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

namespace wrenn::cp::auth {

inline constexpr std::chrono::seconds kUserTokenTtl = std::chrono::hours(6);
inline constexpr std::chrono::seconds kHostTokenTtl = std::chrono::hours(24 * 7);
inline constexpr std::chrono::seconds kRefreshTokenTtl = std::chrono::hours(24 * 60);
inline constexpr std::chrono::seconds kRegistrationTokenTtl = std::chrono::hours(1);

struct UserClaims {
  std::string user_id;  // "usr-…"
  std::string team_id;  // "team-…"
  std::string role;
  std::string email;
  std::string name;
  bool is_admin = false;
};

std::string sign_user_token(
    std::string_view secret, const UserClaims& claims,
    std::chrono::system_clock::time_point now = std::chrono::system_clock::now(),
    std::chrono::seconds ttl = kUserTokenTtl);
// ApiError unauthorized "invalid or expired token".
UserClaims verify_user_token(std::string_view secret, std::string_view token);

std::string sign_host_token(
    std::string_view secret, const std::string& host_id,
    std::chrono::system_clock::time_point now = std::chrono::system_clock::now(),
    std::chrono::seconds ttl = kHostTokenTtl);
// Returns the host id; ApiError unauthorized "invalid or expired host token".
std::string verify_host_token(std::string_view secret, std::string_view token);

}  // namespace wrenn::cp::auth
