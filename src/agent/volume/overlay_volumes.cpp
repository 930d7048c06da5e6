#include "volume/overlay_volumes.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <linux/types.h>
#include <spawn.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "error.h"
#include "log.h"
#include "runtime/fs_util.h"
#include "volume/loop.h"

extern char** environ;

namespace wrenn::agent {

namespace fs = std::filesystem;

namespace {

constexpr auto kRefillSettle = std::chrono::milliseconds(100);
constexpr std::uint64_t kMinDiskMb = 16;  // smaller ext4s have almost no room left
constexpr std::uint64_t kMaxDiskMb = 16ull << 20;

void validate_id(const std::string& id) {
  bool ok = !id.empty() && id.size() <= 128 && id != "." && id != "..";
  for (char c : id)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.'))
      ok = false;
  if (!ok) throw Error(Code::kInvalidArgument, "invalid sandbox id \"" + id + "\"");
}

// Runs mkfs.ext4 (the one subprocess the agent spawns, once per disk size).
void run_mkfs(const std::string& image) {
  std::vector<std::string> args = {
      "mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard",
      "-m",        "0",  image};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid;
  int rc = ::posix_spawnp(&pid, "mkfs.ext4", nullptr, nullptr, argv.data(), environ);
  if (rc != 0) throw errno_error(rc, "spawn mkfs.ext4");
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw errno_error(errno, "waitpid mkfs.ext4");
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw Error(Code::kInternal,
                "mkfs.ext4 " + image + " failed (status " + std::to_string(status) + ")");
}

// Copies src to dst (created, must not exist) keeping holes: only the data extents are
// copied, the rest stays sparse.
void copy_sparse(const std::string& src, const std::string& dst) {
  UniqueFd in = open_fd(src, O_RDONLY);
  struct stat st {};
  if (::fstat(in.get(), &st) != 0) throw errno_error(errno, "stat " + src);
  UniqueFd out = open_fd(dst, O_WRONLY | O_CREAT | O_EXCL, 0600);
  if (::ftruncate(out.get(), st.st_size) != 0) throw errno_error(errno, "truncate " + dst);
  off_t pos = 0;
  while (pos < st.st_size) {
    off_t data = ::lseek(in.get(), pos, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;  // only a hole is left
      throw errno_error(errno, "SEEK_DATA " + src);
    }
    off_t hole = ::lseek(in.get(), data, SEEK_HOLE);
    if (hole < 0) throw errno_error(errno, "SEEK_HOLE " + src);
    loff_t off_in = data, off_out = data;
    while (off_in < hole) {
      ssize_t n = ::copy_file_range(in.get(), &off_in, out.get(), &off_out,
                                    static_cast<std::size_t>(hole - off_in), 0);
      if (n < 0) {
        if (errno == EINTR) continue;
        throw errno_error(errno, "copy_file_range " + src + " to " + dst);
      }
      if (n == 0) break;
    }
    pos = hole;
  }
}

// Unmounts path; a busy mount is detached instead. Not mounted is fine.
void unmount(const std::string& path) {
  if (::umount2(path.c_str(), 0) == 0) return;
  if (errno == EINVAL || errno == ENOENT) return;
  if (errno == EBUSY && ::umount2(path.c_str(), MNT_DETACH) == 0) return;
  throw errno_error(errno, "umount " + path);
}

void unmount_all_under(const std::string& dir) {
  for (const auto& m : mounts_under(dir)) unmount(m);
  if (!mounts_under(dir).empty())
    throw Error(Code::kInternal, "still mounted below " + dir + " after unmounting");
}

void remove_tree(const std::string& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
  if (ec) throw Error(Code::kInternal, "remove " + path + ": " + ec.message());
}

std::uint64_t used_of(const std::string& mount_point) {
  struct statfs s {};
  if (::statfs(mount_point.c_str(), &s) != 0) throw errno_error(errno, "statfs " + mount_point);
  return static_cast<std::uint64_t>(s.f_blocks - s.f_bfree) * static_cast<std::uint64_t>(s.f_bsize);
}

// The disk's contents are thrown away: shutting the file system down first (no log
// flush) turns the unmount's sync into a no-op, which is most of release()'s time.
void discard_disk(const std::string& disk) {
  constexpr unsigned long kExt4IocShutdown = _IOR('X', 125, __u32);
  constexpr __u32 kGoingFlagsNoLogFlush = 0x2;
  int fd = ::open(disk.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  struct statfs s {};
  __u32 flags = kGoingFlagsNoLogFlush;
  if (::fstatfs(fd, &s) == 0 && s.f_type == EXT4_SUPER_MAGIC && !mounts_under(disk).empty())
    ::ioctl(fd, kExt4IocShutdown, &flags);
  ::close(fd);
}

}  // namespace

OverlayVolumes::OverlayVolumes(std::string state_dir)
    : OverlayVolumes(OverlayVolumesOptions{std::move(state_dir), 0, {}}) {}

OverlayVolumes::OverlayVolumes(OverlayVolumesOptions opts)
    : state_dir_(std::move(opts.state_dir)), ready_target_(opts.ready_disks) {
  if (state_dir_.empty()) throw Error(Code::kInvalidArgument, "overlay volumes: no state_dir");
  for (auto mb : opts.ready_sizes_mb) {
    if (mb < kMinDiskMb || mb > kMaxDiskMb)
      throw Error(Code::kInvalidArgument,
                  "ready disk size " + std::to_string(mb) + " MiB is out of range");
    pooled_sizes_.push_back(mb);
  }
  trash_thread_ = std::thread([this] { empty_trash_loop(); });
  if (ready_target_ > 0) refill_thread_ = std::thread([this] { refill_loop(); });
}

OverlayVolumes::~OverlayVolumes() {
  {
    std::lock_guard lock(pool_mu_);
    pool_stopping_ = true;
  }
  pool_cv_.notify_all();
  if (refill_thread_.joinable()) refill_thread_.join();
  for (auto& [mb, dirs] : ready_)
    for (auto& d : dirs) {
      try {
        remove_volume_dir(d);
      } catch (const Error& e) {
        log::warn("overlay volumes: cannot remove ready disk", {{"path", d}, {"error", e.what()}});
      }
    }
  {
    std::lock_guard lock(trash_mu_);
    stopping_ = true;
  }
  trash_cv_.notify_all();
  trash_thread_.join();
}

void OverlayVolumes::trash(const std::string& file) {
  std::string dir = state_dir_ + "/trash";
  make_dir(dir);
  std::string target;
  {
    std::lock_guard lock(trash_mu_);
    target = dir + "/" + std::to_string(::getpid()) + "-" + std::to_string(++trash_seq_) + ".ext4";
  }
  if (::rename(file.c_str(), target.c_str()) != 0) {
    if (errno == ENOENT) return;
    throw errno_error(errno, "rename " + file + " to " + target);
  }
  {
    std::lock_guard lock(trash_mu_);
    trash_queue_.push_back(target);
  }
  trash_cv_.notify_one();
}

void OverlayVolumes::empty_trash_loop() {
  std::unique_lock lock(trash_mu_);
  for (;;) {
    trash_cv_.wait(lock, [this] { return stopping_ || !trash_queue_.empty(); });
    if (trash_queue_.empty()) return;  // stopping and drained
    std::string f = std::move(trash_queue_.front());
    trash_queue_.pop_front();
    lock.unlock();
    if (::unlink(f.c_str()) != 0 && errno != ENOENT)
      log::warn("overlay volumes: cannot delete released disk",
                {{"path", f}, {"error", std::strerror(errno)}});
    lock.lock();
  }
}

std::string OverlayVolumes::dir_of(const std::string& id) const {
  validate_id(id);
  return state_dir_ + "/sandboxes/" + id + "/volume";
}

std::string OverlayVolumes::cached_image(std::uint64_t disk_mb) {
  std::string cache = state_dir_ + "/cache";
  std::string image = cache + "/ext4-" + std::to_string(disk_mb) + "M.img";
  std::lock_guard lock(cache_mu_);
  if (::access(image.c_str(), F_OK) == 0) return image;
  make_dir(state_dir_);
  make_dir(cache);
  // Built under a temporary name and renamed: an image in place is always complete.
  std::string tmp = image + ".tmp-" + std::to_string(::getpid());
  ::unlink(tmp.c_str());
  {
    UniqueFd f = open_fd(tmp, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (::ftruncate(f.get(), static_cast<off_t>(disk_mb) << 20) != 0)
      throw errno_error(errno, "truncate " + tmp);
  }
  try {
    run_mkfs(tmp);
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  if (::rename(tmp.c_str(), image.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    throw errno_error(err, "rename " + tmp);
  }
  log::info("made empty ext4 image", {{"path", image}});
  return image;
}

void OverlayVolumes::make_disk(const std::string& dir, std::uint64_t disk_mb) {
  std::string image = cached_image(disk_mb);
  std::string disk_file = dir + "/disk.ext4", disk = dir + "/disk";
  make_dir(dir, 0700);
  copy_sparse(image, disk_file);
  make_dir(disk);
  {
    std::string dev;
    // The fd may close right after mount: AUTOCLEAR then detaches at the last unmount.
    UniqueFd loop = attach_loop(disk_file, dev);
    // noinit_itable: the image's inode tables are left unzeroed (lazy_itable_init) and
    // are never initialised in the background, so the sparse file stays sparse.
    // nobarrier: no cache flushes, which the loop driver turns into fsync of disk.ext4;
    // the disk does not outlive the host, so its durability does not matter.
    if (::mount(dev.c_str(), disk.c_str(), "ext4", MS_NOATIME | MS_NODEV | MS_NOSUID,
                "noinit_itable,nobarrier") != 0)
      throw errno_error(errno, "mount " + dev + " on " + disk);
  }
  std::string upper = disk + "/upper";
  if (::mkdir(upper.c_str(), 0755) != 0) throw errno_error(errno, "mkdir " + upper);
  if (::chmod(upper.c_str(), 0755) != 0) throw errno_error(errno, "chmod " + upper);
  if (::mkdir((disk + "/work").c_str(), 0700) != 0)
    throw errno_error(errno, "mkdir " + disk + "/work");
  // What the empty file system uses; used_bytes() reports what is above it.
  write_text(disk + "/baseline", std::to_string(used_of(disk) + 4096), true);
}

void OverlayVolumes::remove_volume_dir(const std::string& dir) {
  unmount(dir + "/rootfs");
  discard_disk(dir + "/disk");
  unmount(dir + "/disk");
  // Never delete through a mount: that would reach the template or another disk.
  unmount_all_under(dir);
  trash(dir + "/disk.ext4");
  remove_tree(dir);
}

bool OverlayVolumes::take_ready(std::uint64_t disk_mb, const std::string& dir) {
  if (ready_target_ == 0) return false;
  std::string from;
  {
    std::lock_guard lock(pool_mu_);
    // Most recently requested sizes stay pooled; a bounded few.
    auto it = std::find(pooled_sizes_.begin(), pooled_sizes_.end(), disk_mb);
    if (it != pooled_sizes_.end()) pooled_sizes_.erase(it);
    pooled_sizes_.push_front(disk_mb);
    constexpr std::size_t kMaxPooledSizes = 4;
    while (pooled_sizes_.size() > kMaxPooledSizes) pooled_sizes_.pop_back();
    auto& q = ready_[disk_mb];
    if (!q.empty()) {
      from = std::move(q.front());
      q.pop_front();
    }
    last_take_ = std::chrono::steady_clock::now();
  }
  pool_cv_.notify_all();
  if (from.empty()) return false;
  if (::rename(from.c_str(), dir.c_str()) != 0) {
    int err = errno;
    log::warn("overlay volumes: cannot take a ready disk",
              {{"path", from}, {"error", std::strerror(err)}});
    try {
      remove_volume_dir(from);
    } catch (const Error&) {
    }
    return false;
  }
  return true;
}

void OverlayVolumes::refill_loop() {
  // Below the sandboxes' own work: a ready disk is only worth having if making it does
  // not slow down the start it is meant to speed up.
  ::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), 10);
  const std::string pool = state_dir_ + "/pool";
  std::unique_lock lock(pool_mu_);
  for (;;) {
    std::uint64_t want = 0;
    pool_cv_.wait(lock, [&] {
      if (pool_stopping_) return true;
      for (auto mb : pooled_sizes_)
        if (ready_[mb].size() < ready_target_) {
          want = mb;
          return true;
        }
      return false;
    });
    if (pool_stopping_) return;
    // While disks of that size are still ready, wait for a quiet moment: making one
    // (copy, loop attach, mount) contends with the start of the sandbox that took one.
    const auto quiet_at = last_take_ + kRefillSettle;
    if (!ready_[want].empty() && std::chrono::steady_clock::now() < quiet_at) {
      pool_cv_.wait_until(lock, quiet_at, [&] { return pool_stopping_; });
      continue;
    }
    std::string dir = pool + "/" + std::to_string(want) + "M-" + std::to_string(::getpid()) + "-" +
                      std::to_string(++pool_seq_);
    lock.unlock();
    bool ok = false;
    try {
      make_dir(state_dir_);
      make_dir(pool, 0700);
      make_disk(dir, want);
      ok = true;
    } catch (const std::exception& e) {
      log::warn("overlay volumes: cannot make a ready disk", {{"error", e.what()}});
      try {
        remove_volume_dir(dir);
      } catch (const std::exception&) {
      }
    }
    lock.lock();
    if (ok) {
      ready_[want].push_back(dir);
    } else {
      // Do not spin on a persistent failure (disk full, no loop devices).
      pool_cv_.wait_for(lock, std::chrono::seconds(5), [&] { return pool_stopping_; });
    }
  }
}

std::size_t OverlayVolumes::ready_count(std::uint64_t disk_mb) const {
  std::lock_guard lock(pool_mu_);
  auto it = ready_.find(disk_mb);
  return it == ready_.end() ? 0 : it->second.size();
}

Volume OverlayVolumes::prepare(const std::string& id, const std::string& template_root,
                               std::uint64_t disk_mb) {
  std::string dir = dir_of(id);
  struct stat st {};
  if (::stat(template_root.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    throw Error(Code::kNotFound, "template root " + template_root + " does not exist");
  if (disk_mb < kMinDiskMb || disk_mb > kMaxDiskMb)
    throw Error(Code::kInvalidArgument, "disk_mb must be " + std::to_string(kMinDiskMb) + ".." +
                                            std::to_string(kMaxDiskMb) + ", got " +
                                            std::to_string(disk_mb));
  Volume v = existing(id);
  if (::access(dir.c_str(), F_OK) == 0)
    throw Error(Code::kAlreadyExists, "volume of " + id + " already exists");
  make_dir(state_dir_ + "/sandboxes");
  make_dir(state_dir_ + "/sandboxes/" + id, 0700);
  try {
    if (!take_ready(disk_mb, dir)) make_disk(dir, disk_mb);
    make_dir(v.rootfs);
    std::string opts =
        "lowerdir=" + template_root + ",upperdir=" + v.upper + ",workdir=" + dir + "/disk/work";
    if (::mount("overlay", v.rootfs.c_str(), "overlay", MS_NODEV, opts.c_str()) != 0)
      throw errno_error(errno, "mount overlay on " + v.rootfs);
  } catch (...) {
    try {
      release(id);
    } catch (const Error& e) {
      log::error("overlay volumes: cleanup after failed prepare",
                 {{"id", id}, {"error", e.what()}});
    }
    throw;
  }
  return v;
}

Volume OverlayVolumes::existing(const std::string& id) const {
  std::string dir = dir_of(id);
  return Volume{id, dir + "/rootfs", dir + "/disk/upper"};
}

void OverlayVolumes::release(const std::string& id) {
  remove_volume_dir(dir_of(id));
}

std::uint64_t OverlayVolumes::used_bytes(const std::string& id) const {
  std::string disk = dir_of(id) + "/disk";
  std::uint64_t used = used_of(disk);
  std::uint64_t baseline = 0;
  try {
    baseline = std::stoull(read_text(disk + "/baseline"));
  } catch (const std::exception&) {
  }
  return used > baseline ? used - baseline : 0;
}

void OverlayVolumes::sweep_stale(const std::set<std::string>& keep) {
  std::string root = state_dir_ + "/sandboxes";
  std::error_code ec;
  // Disks a previous agent released but did not get to delete (queued ones are skipped:
  // the worker deletes them).
  std::string own_prefix = std::to_string(::getpid()) + "-";
  for (const auto& e : fs::directory_iterator(state_dir_ + "/trash", ec))
    if (e.path().filename().string().rfind(own_prefix, 0) != 0) ::unlink(e.path().c_str());
  // Ready disks of a previous agent: cheaper to make anew than to vet.
  for (const auto& e : fs::directory_iterator(state_dir_ + "/pool", ec)) {
    std::string name = e.path().filename().string();
    if (name.find("M-" + own_prefix) != std::string::npos) continue;  // ours
    log::info("overlay volumes: removing a previous agent's ready disk", {{"path", name}});
    remove_volume_dir(e.path().string());
  }
  for (const auto& e : fs::directory_iterator(root, ec)) {
    std::string id = e.path().filename().string();
    if (keep.count(id)) continue;
    log::info("overlay volumes: removing stale sandbox directory", {{"id", id}});
    std::string dir = e.path().string();
    unmount_all_under(dir);
    remove_tree(dir);
  }
}

}  // namespace wrenn::agent
