#include "users.h"

#include <sys/stat.h>

#include <fstream>
#include <map>
#include <memory>
#include <sstream>

#include "error.h"

namespace wrenn::envd {

struct UserDb::Cache {
  struct timespec passwd_mtime {};
  struct timespec group_mtime {};
  std::map<std::string, User> users;
  std::map<uid_t, std::string> uid_names;
  std::map<gid_t, std::string> gid_names;
  std::map<std::string, std::vector<gid_t>> member_groups;
};

namespace {
std::vector<std::string> split(const std::string& line, char sep) {
  std::vector<std::string> out;
  std::string cur;
  std::istringstream in(line);
  while (std::getline(in, cur, sep)) out.push_back(cur);
  if (!line.empty() && line.back() == sep) out.emplace_back();
  return out;
}

bool parse_id(const std::string& s, unsigned long& out) {
  if (s.empty() || s.size() > 10) return false;
  out = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    out = out * 10 + static_cast<unsigned long>(c - '0');
  }
  return true;
}

struct timespec mtime_of(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return {};
  return st.st_mtim;
}

bool same(const struct timespec& a, const struct timespec& b) {
  return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}
}  // namespace

void UserDb::refresh() const {
  auto pm = mtime_of(etc_ + "/passwd");
  auto gm = mtime_of(etc_ + "/group");
  if (cache_ && same(cache_->passwd_mtime, pm) && same(cache_->group_mtime, gm)) return;
  auto c = std::make_shared<Cache>();
  c->passwd_mtime = pm;
  c->group_mtime = gm;
  std::ifstream g(etc_ + "/group");
  std::string line;
  while (std::getline(g, line)) {
    if (line.empty() || line[0] == '#') continue;
    auto f = split(line, ':');
    unsigned long gid;
    if (f.size() < 3 || !parse_id(f[2], gid)) continue;
    c->gid_names.emplace(static_cast<gid_t>(gid), f[0]);
    if (f.size() >= 4 && !f[3].empty())
      for (auto& m : split(f[3], ',')) c->member_groups[m].push_back(static_cast<gid_t>(gid));
  }
  std::ifstream p(etc_ + "/passwd");
  while (std::getline(p, line)) {
    if (line.empty() || line[0] == '#') continue;
    auto f = split(line, ':');
    unsigned long uid, gid;
    if (f.size() < 7 || !parse_id(f[2], uid) || !parse_id(f[3], gid)) continue;
    User u;
    u.name = f[0];
    u.uid = static_cast<uid_t>(uid);
    u.gid = static_cast<gid_t>(gid);
    u.home = f[5].empty() ? "/" : f[5];
    u.shell = f[6];
    u.groups.push_back(u.gid);
    for (gid_t extra : c->member_groups[u.name])
      if (extra != u.gid) u.groups.push_back(extra);
    c->uid_names.emplace(u.uid, u.name);
    c->users.emplace(u.name, std::move(u));
  }
  cache_ = std::move(c);
}

std::optional<User> UserDb::find(const std::string& name) const {
  refresh();
  auto it = cache_->users.find(name);
  if (it == cache_->users.end()) return std::nullopt;
  return it->second;
}

User UserDb::require(const std::string& name) const {
  if (auto u = find(name)) return *u;
  throw Error(Code::kUnauthenticated, "user \"" + name + "\" does not exist in " + etc_ + "/passwd");
}

std::string UserDb::user_name(uid_t uid) const {
  refresh();
  auto it = cache_->uid_names.find(uid);
  return it == cache_->uid_names.end() ? std::to_string(uid) : it->second;
}

std::string UserDb::group_name(gid_t gid) const {
  refresh();
  auto it = cache_->gid_names.find(gid);
  return it == cache_->gid_names.end() ? std::to_string(gid) : it->second;
}

}  // namespace wrenn::envd
