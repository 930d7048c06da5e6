// The control plane's Authenticator (api/router.h) on PostgreSQL (reference §1.5, §8).
//
//  - X-API-Key: looked up by sha256_hex in team_api_keys (team not deleted); last_used is
//    updated at most once a minute. A key that is present but wrong is 401 "invalid API
//    key" — there is no fallback to a JWT sent alongside. The caller acts as the key's
//    team (no user, no role); keys of the platform team are platform admins.
//  - Authorization: Bearer <user JWT>: the user row is re-read on every request: it must
//    exist (401 "user not found") and be active (403 account_deactivated); the role is the
//    user's current membership of the token's team (403 forbidden when no longer a
//    member); platform admin = users.is_admin.
//  - X-Host-Token: a host JWT (typ host) for kHost routes; the host row is not read here
//    (the heartbeat answers 404 for a deleted host, which tells its agent to stop).
//  - Neither credential: 401 "X-API-Key or Authorization: Bearer <token> required".
// Database work runs on the worker pool; JWT checks run inline.
#pragma once

#include <boost/asio/thread_pool.hpp>
#include <string>
#include <string_view>

#include "api/router.h"
#include "pg/pool.h"

namespace wrenn::cp::auth {

class PgAuthenticator : public Authenticator {
 public:
  PgAuthenticator(pg::Pool& db, boost::asio::thread_pool& workers, std::string jwt_secret);

  asio::awaitable<Caller> authenticate(http::Exchange& ex, Access access) override;
  asio::awaitable<Caller> authenticate_token(std::string token) override;

  // Blocking checks (the worker-pool side of the above). Throw ApiError.
  Caller check_api_key(std::string_view key);
  Caller check_user_token(std::string_view token);
  Caller check_host_token(std::string_view token) const;

  const std::string& jwt_secret() const { return jwt_secret_; }

 private:
  asio::awaitable<Caller> team_caller(http::Exchange& ex, Access access);

  pg::Pool& db_;
  boost::asio::thread_pool& workers_;
  std::string jwt_secret_;
};

}  // namespace wrenn::cp::auth
