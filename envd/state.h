// envd's shared state: defaults set by /init, the access token, users, and the
// identity of a request. Everything runs on envd's single I/O thread, so no locks.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "users.h"

namespace wrenn::envd {

struct Identity {
  User user;
  std::optional<std::string> workdir;  // default workdir from /init, if any
};

class State {
 public:
  explicit State(std::string etc_dir = "/etc");

  const UserDb& users() const { return users_; }

  // Defaults from /init (the upstream accepted these and ignored them; here they apply to
  // every later process, file operation, ownership and "~").
  const std::string& default_user() const { return default_user_; }
  void set_default_user(std::string u) { default_user_ = std::move(u); }
  const std::optional<std::string>& default_workdir() const { return default_workdir_; }
  void set_default_workdir(std::optional<std::string> w) { default_workdir_ = std::move(w); }

  // Default environment of every process (WRENN_SANDBOX, template env, /init envVars).
  const std::map<std::string, std::string>& env() const { return env_; }
  void set_env(const std::string& k, const std::string& v) { env_[k] = v; }

  // Access token: empty means none set (nothing enforced).
  bool token_set() const { return !token_.empty(); }
  // Constant-time comparison.
  bool token_matches(std::string_view candidate) const;
  void set_token(std::string t);
  const std::string& token() const { return token_; }

  // Last applied /init timestamp in nanoseconds since the epoch.
  std::optional<long long> last_init_ns;

  // Identity for a request: the user named explicitly (Basic auth on RPCs, `username` on
  // /files) or else the default user. Throws Error(unauthenticated) for unknown users.
  Identity identity(std::optional<std::string> explicit_user) const;
  // Parses "Authorization: Basic base64(user:)" into the user name; nullopt when the
  // header is absent; Error(unauthenticated) when malformed.
  static std::optional<std::string> basic_auth_user(std::string_view authorization);

 private:
  UserDb users_;
  std::string default_user_ = "root";
  std::optional<std::string> default_workdir_;
  std::map<std::string, std::string> env_;
  std::string token_;
};

}  // namespace wrenn::envd
