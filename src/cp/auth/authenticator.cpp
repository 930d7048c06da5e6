#include "auth/authenticator.h"

#include <cctype>

#include "api/api_error.h"
#include "auth/tokens.h"
#include "blocking.h"
#include "crypto/hash.h"
#include "crypto/ids.h"
#include "store/api_keys.h"
#include "store/sql.h"

namespace wrenn::cp::auth {

namespace {

constexpr std::string_view kMissing = "X-API-Key or Authorization: Bearer <token> required";

std::string_view bearer_of(std::string_view authorization) {
  constexpr std::string_view kPrefix = "Bearer ";
  if (authorization.size() <= kPrefix.size()) return {};
  for (std::size_t i = 0; i < kPrefix.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(authorization[i])) !=
        std::tolower(static_cast<unsigned char>(kPrefix[i])))
      return {};
  authorization.remove_prefix(kPrefix.size());
  while (!authorization.empty() && authorization.front() == ' ') authorization.remove_prefix(1);
  return authorization;
}

}  // namespace

PgAuthenticator::PgAuthenticator(pg::Pool& db, boost::asio::thread_pool& workers,
                                 std::string jwt_secret)
    : db_(db), workers_(workers), jwt_secret_(std::move(jwt_secret)) {}

Caller PgAuthenticator::check_api_key(std::string_view key) {
  if (!ids::looks_like_api_key(key)) throw ApiError(ApiCode::kUnauthorized, "invalid API key");
  const std::string hash = crypto::sha256_hex(key);
  auto lease = db_.acquire();
  auto match = store::find_api_key_by_hash(*lease, hash);
  if (!match) throw ApiError(ApiCode::kUnauthorized, "invalid API key");
  if (match->stale_last_used) store::touch_api_key(*lease, match->key.id);
  Caller c;
  c.kind = Caller::Kind::kApiKey;
  c.team_id = match->key.team_id;
  c.actor_id = match->key.id;
  c.actor_name = match->key.name;
  c.is_admin = match->key.team_id == store::kPlatformTeamId;
  return c;
}

Caller PgAuthenticator::check_user_token(std::string_view token) {
  UserClaims claims = verify_user_token(jwt_secret_, token);
  auto lease = db_.acquire();
  auto r = lease->exec(
      "SELECT u.status, u.is_admin, u.email, m.role "
      "FROM users u "
      "LEFT JOIN users_teams m ON m.user_id = u.id AND m.team_id = $2 "
      "LEFT JOIN teams t ON t.id = m.team_id AND t.deleted_at IS NULL "
      "WHERE u.id = $1 AND u.status <> 'deleted'",
      claims.user_id, claims.team_id);
  if (r.empty()) throw ApiError(ApiCode::kUnauthorized, "user not found");
  if (r.text(0, 0) != "active")
    throw ApiError(ApiCode::kAccountDeactivated, "account is not active");
  if (r.is_null(0, 3)) throw ApiError(ApiCode::kForbidden, "not a member of this team");
  Caller c;
  c.kind = Caller::Kind::kUser;
  c.team_id = claims.team_id;
  c.actor_id = claims.user_id;
  c.actor_name = std::string(r.text(0, 2));
  c.role = std::string(r.text(0, 3));
  c.is_admin = r.as_bool(0, 1);
  return c;
}

Caller PgAuthenticator::check_host_token(std::string_view token) const {
  Caller c;
  c.kind = Caller::Kind::kHost;
  c.actor_id = verify_host_token(jwt_secret_, token);
  c.actor_name = c.actor_id;
  return c;
}

asio::awaitable<Caller> PgAuthenticator::team_caller(http::Exchange& ex, Access access) {
  const std::string key(ex.header("x-api-key"));
  const std::string bearer(bearer_of(ex.header(bhttp::field::authorization)));
  Caller caller;
  if (!key.empty() && (access != Access::kUser || bearer.empty())) {
    if (access == Access::kUser)
      throw ApiError(ApiCode::kUnauthorized,
                     "this endpoint needs a user token (Authorization: Bearer <token>)");
    auto task = run_blocking(workers_, [this, key] { return check_api_key(key); });
    caller = co_await std::move(task);
  } else if (!bearer.empty()) {
    // The signature check is cheap; do it here so bad tokens never reach the workers.
    (void)verify_user_token(jwt_secret_, bearer);
    auto task = run_blocking(workers_, [this, bearer] { return check_user_token(bearer); });
    caller = co_await std::move(task);
  } else {
    throw ApiError(ApiCode::kUnauthorized, std::string(kMissing));
  }
  if (access == Access::kAdmin && !caller.is_admin)
    throw ApiError(ApiCode::kForbidden, "admin access required");
  co_return caller;
}

asio::awaitable<Caller> PgAuthenticator::authenticate(http::Exchange& ex, Access access) {
  switch (access) {
    case Access::kPublic:
      co_return Caller{};
    case Access::kHost: {
      std::string_view token = ex.header("x-host-token");
      if (token.empty()) throw ApiError(ApiCode::kUnauthorized, "X-Host-Token header required");
      co_return check_host_token(token);
    }
    case Access::kWebSocket: {
      if (ex.header("x-api-key").empty() && ex.header(bhttp::field::authorization).empty())
        co_return Caller{};
      Caller caller;
      bool ok = true;
      try {
        auto task = team_caller(ex, Access::kTeam);
        caller = co_await std::move(task);
      } catch (const ApiError&) {
        ok = false;  // the handler asks for the first frame instead
      }
      co_return ok ? caller : Caller{};
    }
    case Access::kTeam:
    case Access::kUser:
    case Access::kAdmin:
      break;
  }
  auto task = team_caller(ex, access);
  Caller caller = co_await std::move(task);
  co_return caller;
}

asio::awaitable<Caller> PgAuthenticator::authenticate_token(std::string token) {
  if (ids::looks_like_api_key(token)) {
    auto task = run_blocking(workers_, [this, token] { return check_api_key(token); });
    Caller caller = co_await std::move(task);
    co_return caller;
  }
  (void)verify_user_token(jwt_secret_, token);
  auto task = run_blocking(workers_, [this, token] { return check_user_token(token); });
  Caller caller = co_await std::move(task);
  co_return caller;
}

}  // namespace wrenn::cp::auth
