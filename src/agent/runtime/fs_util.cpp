#include "runtime/fs_util.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "error.h"

namespace wrenn::agent {

UniqueFd open_fd(const std::string& path, int flags, unsigned mode) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  if (fd < 0) throw errno_error(errno, "open " + path);
  return UniqueFd(fd);
}

std::string read_text(const std::string& path) {
  UniqueFd fd = open_fd(path, O_RDONLY);
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw errno_error(errno, "read " + path);
    }
    if (n == 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  return out;
}

void write_text(const std::string& path, const std::string& data, bool create) {
  int flags = O_WRONLY | (create ? O_CREAT | O_TRUNC : 0);
  UniqueFd fd = open_fd(path, flags, 0644);
  ssize_t n;
  do {
    n = ::write(fd.get(), data.data(), data.size());
  } while (n < 0 && errno == EINTR);
  if (n < 0) throw errno_error(errno, "write \"" + data + "\" to " + path);
  if (static_cast<std::size_t>(n) != data.size())
    throw Error(Code::kInternal, "short write to " + path);
}

void make_dir(const std::string& path, unsigned mode) {
  if (::mkdir(path.c_str(), mode) == 0) return;
  int err = errno;
  struct stat st {};
  if (err == EEXIST && ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return;
  throw errno_error(err, "mkdir " + path);
}

namespace {

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string unescape_mount_path(const std::string& s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      int v = 0;
      bool ok = true;
      for (int k = 1; k <= 3; ++k) {
        char c = s[i + k];
        if (c < '0' || c > '7') ok = false;
        v = v * 8 + (c - '0');
      }
      if (ok) {
        out.push_back(static_cast<char>(v));
        i += 3;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

}  // namespace

std::vector<std::string> mounts_under(const std::string& dir) {
  std::string prefix = dir;
  while (prefix.size() > 1 && prefix.back() == '/') prefix.pop_back();
  std::istringstream in(read_text("/proc/self/mountinfo"));
  std::vector<std::string> out;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, parent, devno, root, mount_point;
    if (!(fields >> id >> parent >> devno >> root >> mount_point)) continue;
    std::string mp = unescape_mount_path(mount_point);
    if (mp == prefix || mp.rfind(prefix + "/", 0) == 0) out.push_back(mp);
  }
  // Deepest first; a path mounted twice appears twice (each umount removes one layer).
  std::stable_sort(out.begin(), out.end(),
                   [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  return out;
}

}  // namespace wrenn::agent
