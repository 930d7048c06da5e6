#include "volume/tree_copy.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "error.h"
#include "net/unique_fd.h"

namespace wrenn::agent {

namespace {

using InodeKey = std::pair<dev_t, ino_t>;

struct Copier {
  dev_t root_dev = 0;
  std::map<InodeKey, std::string> links;  // src inode with nlink > 1 -> its first copy
  std::uint64_t bytes = 0;

  // Names in a directory (without "." and "..").
  static std::vector<std::string> entries(const std::string& dir) {
    DIR* d = ::opendir(dir.c_str());
    if (!d) throw errno_error(errno, "opendir " + dir);
    std::vector<std::string> out;
    errno = 0;
    while (dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n != "." && n != "..") out.push_back(std::move(n));
    }
    const int err = errno;
    ::closedir(d);
    if (err) throw errno_error(err, "readdir " + dir);
    return out;
  }

  // Owner, then mode (chown clears setuid/setgid), then times; never follows a symlink.
  static void attrs(const std::string& dst, const struct stat& st) {
    if (::lchown(dst.c_str(), st.st_uid, st.st_gid) != 0) throw errno_error(errno, "chown " + dst);
    if (!S_ISLNK(st.st_mode) && ::chmod(dst.c_str(), st.st_mode & 07777) != 0)
      throw errno_error(errno, "chmod " + dst);
    const timespec times[2] = {st.st_atim, st.st_mtim};
    if (::utimensat(AT_FDCWD, dst.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0)
      throw errno_error(errno, "utimensat " + dst);
  }

  void file(const std::string& src, const std::string& dst, const struct stat& st) {
    UniqueFd in(::open(src.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (in.get() < 0) throw errno_error(errno, "open " + src);
    UniqueFd out(::open(dst.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (out.get() < 0) throw errno_error(errno, "create " + dst);
    for (;;) {
      ssize_t n = ::copy_file_range(in.get(), nullptr, out.get(), nullptr, 1 << 30, 0);
      if (n == 0) break;
      if (n > 0) continue;
      if (errno == EINTR) continue;
      if (errno != EXDEV && errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP)
        throw errno_error(errno, "copy " + src);
      // Not supported between these file systems: plain read/write for the rest.
      char buf[1 << 16];
      for (;;) {
        ssize_t r = ::read(in.get(), buf, sizeof buf);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) throw errno_error(errno, "read " + src);
        if (r == 0) break;
        for (ssize_t off = 0; off < r;) {
          ssize_t w = ::write(out.get(), buf + off, static_cast<size_t>(r - off));
          if (w < 0 && errno == EINTR) continue;
          if (w < 0) throw errno_error(errno, "write " + dst);
          off += w;
        }
      }
      break;
    }
    bytes += static_cast<std::uint64_t>(st.st_size);
  }

  void node(const std::string& src, const std::string& dst, const struct stat& st) {
    if (!S_ISDIR(st.st_mode) && st.st_nlink > 1) {
      auto [it, fresh] = links.try_emplace(InodeKey{st.st_dev, st.st_ino}, dst);
      if (!fresh) {
        if (::link(it->second.c_str(), dst.c_str()) != 0)
          throw errno_error(errno, "link " + dst + " to " + it->second);
        return;
      }
    }
    if (S_ISDIR(st.st_mode)) {
      dir(src, dst, st);
      return;
    }
    if (S_ISREG(st.st_mode)) {
      file(src, dst, st);
    } else if (S_ISLNK(st.st_mode)) {
      std::string target(static_cast<size_t>(st.st_size) + 1, '\0');
      ssize_t n = ::readlink(src.c_str(), target.data(), target.size());
      if (n < 0) throw errno_error(errno, "readlink " + src);
      target.resize(static_cast<size_t>(n));
      if (::symlink(target.c_str(), dst.c_str()) != 0) throw errno_error(errno, "symlink " + dst);
    } else {
      // Device nodes, fifos, sockets: the node itself.
      if (::mknod(dst.c_str(), st.st_mode & (S_IFMT | 0777), st.st_rdev) != 0)
        throw errno_error(errno, "mknod " + dst);
    }
    attrs(dst, st);
  }

  void dir(const std::string& src, const std::string& dst, const struct stat& st) {
    if (::mkdir(dst.c_str(), 0700) != 0) throw errno_error(errno, "mkdir " + dst);
    // A mount point below the root (another device): keep the directory, not its contents.
    if (st.st_dev == root_dev) {
      for (const auto& name : entries(src)) {
        const std::string s = src + "/" + name, d = dst + "/" + name;
        struct stat cst {};
        if (::lstat(s.c_str(), &cst) != 0) throw errno_error(errno, "lstat " + s);
        node(s, d, cst);
      }
    }
    attrs(dst, st);  // last: the copies above would change the directory's mtime
  }
};

}  // namespace

std::uint64_t copy_tree(const std::string& src, const std::string& dst) {
  struct stat st {};
  if (::lstat(src.c_str(), &st) != 0) throw errno_error(errno, "lstat " + src);
  if (!S_ISDIR(st.st_mode)) throw Error(Code::kInvalidArgument, src + " is not a directory");
  Copier c;
  c.root_dev = st.st_dev;
  c.dir(src, dst, st);
  return c.bytes;
}

std::uint64_t tree_bytes(const std::string& dir) {
  std::uint64_t total = 0;
  std::set<InodeKey> seen;
  std::vector<std::string> todo{dir};
  while (!todo.empty()) {
    const std::string d = std::move(todo.back());
    todo.pop_back();
    std::vector<std::string> names;
    try {
      names = Copier::entries(d);
    } catch (const Error&) {
      continue;  // missing or unreadable: counts as empty
    }
    for (const auto& n : names) {
      const std::string p = d + "/" + n;
      struct stat st {};
      if (::lstat(p.c_str(), &st) != 0) continue;
      if (S_ISDIR(st.st_mode)) {
        todo.push_back(p);
      } else if (S_ISREG(st.st_mode) &&
                 (st.st_nlink <= 1 || seen.insert(InodeKey{st.st_dev, st.st_ino}).second)) {
        total += static_cast<std::uint64_t>(st.st_size);
      }
    }
  }
  return total;
}

}  // namespace wrenn::agent
