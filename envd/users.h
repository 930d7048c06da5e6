// Users and groups from the sandbox's own /etc/passwd and /etc/group (never NSS), so a
// static envd behaves the same in any distribution, glibc or musl.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

namespace wrenn::envd {

struct User {
  std::string name;
  uid_t uid = 0;
  gid_t gid = 0;
  std::string home;
  std::string shell;
  std::vector<gid_t> groups;  // supplementary groups, primary gid included
};

class UserDb {
 public:
  // etc_dir holds passwd and group; files are re-read when they change (useradd inside
  // the sandbox takes effect without restarting envd).
  explicit UserDb(std::string etc_dir = "/etc") : etc_(std::move(etc_dir)) {}
  // Throws Error(unauthenticated) naming the user when it does not exist.
  User require(const std::string& name) const;
  std::optional<User> find(const std::string& name) const;
  // Name for a uid/gid, or the number as text when unknown.
  std::string user_name(uid_t uid) const;
  std::string group_name(gid_t gid) const;

 private:
  struct Cache;
  void refresh() const;
  std::string etc_;
  mutable std::shared_ptr<Cache> cache_;
};

}  // namespace wrenn::envd
