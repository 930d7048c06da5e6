#include "private_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>

#include "error.h"

namespace wrenn {

namespace {

// Writes a temporary "<path>.tmp-<pid>-<n>" completely (0600, owner applied); throws, leaving
// nothing behind, on failure.
std::string write_temporary(const std::string& path, std::string_view data,
                            const PrivateFileOptions& options) {
  // Unique per writer, so racing writers never share (and truncate) one temporary.
  static std::atomic<unsigned> counter{0};
  const std::string tmp =
      path + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) throw errno_error(errno, "creating " + tmp);
  int err = 0;
  if (::fchmod(fd, 0600) != 0) err = errno;  // whatever the umask, or an older tmp's mode
  std::size_t off = 0;
  while (err == 0 && off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0)
      err = errno;
    else
      off += static_cast<std::size_t>(n);
  }
  if (err == 0 && options.owner && ::fchown(fd, options.owner->first, options.owner->second) != 0)
    err = errno;
  if (err == 0 && options.fsync && ::fsync(fd) != 0) err = errno;
  ::close(fd);
  if (err != 0) {
    ::unlink(tmp.c_str());
    throw errno_error(err, "writing " + tmp);
  }
  return tmp;
}

}  // namespace

void write_private_file(const std::string& path, std::string_view data,
                        const PrivateFileOptions& options) {
  const std::string tmp = write_temporary(path, data, options);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    throw errno_error(err, "replacing " + path);
  }
}

bool create_private_file(const std::string& path, std::string_view data,
                         const PrivateFileOptions& options) {
  const std::string tmp = write_temporary(path, data, options);
  // link() never replaces: it fails with EEXIST when another writer won.
  int rc = ::link(tmp.c_str(), path.c_str());
  int err = errno;
  ::unlink(tmp.c_str());
  if (rc == 0) return true;
  if (err == EEXIST) return false;
  throw errno_error(err, "creating " + path);
}

}  // namespace wrenn
