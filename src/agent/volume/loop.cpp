#include "volume/loop.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cstring>

#include "error.h"

namespace wrenn::agent {

namespace {

constexpr int kLoopMajor = 7;
constexpr int kAttempts = 64;

// Opens /dev/loopN, making its node when /dev is no devtmpfs (containers).
int open_loop(int n, std::string& path) {
  path = "/dev/loop" + std::to_string(n);
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) {
    if (::mknod(path.c_str(), S_IFBLK | 0660, makedev(kLoopMajor, n)) != 0 && errno != EEXIST)
      throw errno_error(errno, "mknod " + path);
    fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  }
  if (fd < 0) throw errno_error(errno, "open " + path);
  return fd;
}

}  // namespace

UniqueFd attach_loop(const std::string& file, std::string& dev_path) {
  UniqueFd backing = open_fd(file, O_RDWR);
  UniqueFd ctl = open_fd("/dev/loop-control", O_RDWR);
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    int n = ::ioctl(ctl.get(), LOOP_CTL_GET_FREE);
    if (n < 0) throw errno_error(errno, "LOOP_CTL_GET_FREE");
    UniqueFd dev(open_loop(n, dev_path));
    loop_config cfg;
    std::memset(&cfg, 0, sizeof cfg);
    cfg.fd = static_cast<__u32>(backing.get());
    cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR;
    std::strncpy(reinterpret_cast<char*>(cfg.info.lo_file_name), file.c_str(), LO_NAME_SIZE - 1);
    if (::ioctl(dev.get(), LOOP_CONFIGURE, &cfg) == 0) return dev;
    // EBUSY: someone else configured the device between GET_FREE and CONFIGURE.
    if (errno != EBUSY) throw errno_error(errno, "LOOP_CONFIGURE " + dev_path + " for " + file);
  }
  throw Error(Code::kUnavailable, "no free loop device for " + file);
}

}  // namespace wrenn::agent
