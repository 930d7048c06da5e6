#include "watcher.h"

#include <dirent.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/statfs.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cerrno>
#include <cstdint>
#include <cstring>

#include "error.h"
#include "log.h"

namespace wrenn::envd {

namespace asio = boost::asio;

namespace {

constexpr std::uint32_t kEvents =
    IN_CREATE | IN_MODIFY | IN_CLOSE_WRITE | IN_ATTRIB | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO;

std::string join(const std::string& dir, const char* name) {
  return dir == "/" ? "/" + std::string(name) : dir + "/" + name;
}

// Filesystems where inotify only sees local changes, so a watch would silently miss most.
const char* network_fs_name(std::uint32_t magic) {
  switch (magic) {
    case 0x6969:
      return "NFS";
    case 0xFF534D42:
      return "CIFS";
    case 0x517B:
      return "SMB";
    case 0xFE534D42:
      return "SMB2";
    case 0x65735546:
      return "FUSE";
    default:
      return nullptr;
  }
}

Error watch_error(int err, const std::string& dir) {
  // inotify reports its limits with ENOSPC (watches) and EMFILE (instances).
  if (err == ENOSPC)
    return Error(
        Code::kResourceExhausted,
        "watch " + dir + ": the inotify watch limit (fs.inotify.max_user_watches) is reached");
  if (err == EMFILE)
    return Error(
        Code::kResourceExhausted,
        "watch " + dir + ": the inotify instance limit (fs.inotify.max_user_instances) is reached");
  return errno_error(err, "watch " + dir);
}

}  // namespace

DirWatcher::DirWatcher(asio::io_context& io, std::string path, bool recursive, int fd)
    : path_(std::move(path)), recursive_(recursive), fd_(io, fd), notifier_(io.get_executor()) {}

DirWatcher::~DirWatcher() {
  boost::system::error_code ec;
  fd_.close(ec);  // also removes every watch
}

std::shared_ptr<DirWatcher> DirWatcher::open(asio::io_context& io, std::string path,
                                             bool recursive) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) throw errno_error(errno, "watch " + path);
  if (!S_ISDIR(st.st_mode))
    throw Error(Code::kInvalidArgument, "watch " + path + ": not a directory");
  struct statfs fs;
  if (::statfs(path.c_str(), &fs) != 0) throw errno_error(errno, "watch " + path);
  if (const char* name = network_fs_name(static_cast<std::uint32_t>(fs.f_type)))
    throw Error(Code::kFailedPrecondition,
                "watch " + path + ": directories on " + name +
                    " filesystems cannot be watched (changes made elsewhere are invisible)");
  int fd = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd < 0) throw watch_error(errno, path);
  std::shared_ptr<DirWatcher> w(new DirWatcher(io, std::move(path), recursive, fd));
  w->add_watch(w->path_, true, true, nullptr);
  if (recursive) w->add_tree(w->path_, false, true);
  asio::co_spawn(io, read_loop(w), asio::detached);
  return w;
}

bool DirWatcher::add_watch(const std::string& dir, bool root, bool initial, bool* already) {
  // The root may be a symlink to a directory; below it links are never followed.
  std::uint32_t mask =
      kEvents | IN_ONLYDIR | (root ? IN_DELETE_SELF | IN_MOVE_SELF : IN_DONT_FOLLOW);
  int wd = ::inotify_add_watch(fd_.native_handle(), dir.c_str(), mask);
  if (wd < 0) {
    int err = errno;
    // A watch that open() cannot complete fails as a whole; later, one directory that
    // cannot be watched must not end the others.
    if (root || (initial && err == ENOSPC)) throw watch_error(err, dir);
    // Vanished (or replaced by a non-directory) before we got to it: nothing to watch.
    if (err != ENOENT && err != ENOTDIR)
      log::warn("cannot watch directory", {{"path", dir}, {"error", watch_error(err, dir).what()}});
    return false;
  }
  auto [it, inserted] = wds_.try_emplace(wd, dir);
  if (already) *already = !inserted && it->second == dir;
  it->second = dir;
  if (root) root_wd_ = wd;
  return true;
}

void DirWatcher::add_tree(const std::string& dir, bool report, bool initial) {
  std::unique_ptr<DIR, int (*)(DIR*)> d(::opendir(dir.c_str()), ::closedir);
  if (!d) {
    int err = errno;
    if (err != ENOENT && err != ENOTDIR)
      log::warn("cannot list directory to watch",
                {{"path", dir}, {"error", watch_error(err, dir).what()}});
    return;
  }
  std::vector<std::string> subdirs;
  while (dirent* e = ::readdir(d.get())) {
    std::string_view name = e->d_name;
    if (name == "." || name == "..") continue;
    std::string full = join(dir, e->d_name);
    bool is_dir = e->d_type == DT_DIR;
    if (e->d_type == DT_UNKNOWN) {
      struct stat st;
      is_dir = ::lstat(full.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
    }
    if (report) push(full, filesystem::EVENT_TYPE_CREATE);
    if (is_dir) subdirs.push_back(std::move(full));
  }
  d.reset();  // closed before recursing, so deep trees do not hold one fd per level
  for (auto& sub : subdirs) {
    bool already = false;
    if (add_watch(sub, false, initial, &already) && !already) add_tree(sub, report, initial);
  }
}

void DirWatcher::watch_new_dir(const std::string& dir) {
  bool already = false;
  if (add_watch(dir, false, false, &already) && !already) add_tree(dir, true, false);
}

void DirWatcher::unwatch_tree(const std::string& dir) {
  std::string prefix = dir + "/";
  for (auto it = wds_.begin(); it != wds_.end();) {
    if (it->first != root_wd_ && (it->second == dir || it->second.starts_with(prefix))) {
      ::inotify_rm_watch(fd_.native_handle(), it->first);
      it = wds_.erase(it);
    } else {
      ++it;
    }
  }
}

void DirWatcher::push(std::string path, filesystem::EventType type) {
  if (!queue_.empty() && queue_.back().type == type && queue_.back().path == path) return;
  if (queue_.size() >= kMaxQueuedEvents) {
    if (dropped_ == 0)
      log::warn("watch queue full; dropping the oldest events",
                {{"path", path_}, {"limit", std::to_string(kMaxQueuedEvents)}});
    queue_.pop_front();
    ++dropped_;
  }
  queue_.push_back(WatchEvent{std::move(path), type});
}

void DirWatcher::process(const char* buf, std::size_t n) {
  std::size_t off = 0;
  while (off + sizeof(inotify_event) <= n) {
    // Copy the fixed header out: the read buffer lives in a coroutine frame, whose
    // alignment GCC does not guarantee for alignas locals.
    inotify_event header;
    std::memcpy(&header, buf + off, sizeof header);
    const inotify_event* ev = &header;
    const char* name = buf + off + sizeof(inotify_event);
    if (off + sizeof(inotify_event) + header.len > n) break;  // truncated record
    off += sizeof(inotify_event) + header.len;
    if (ev->mask & IN_Q_OVERFLOW) {
      kernel_overflow_ = true;
      continue;
    }
    auto it = wds_.find(ev->wd);
    if (it == wds_.end()) continue;      // a watch already removed; stale event
    const std::string dir = it->second;  // copy: the handlers below change wds_
    const bool root = ev->wd == root_wd_;
    if (ev->mask & IN_IGNORED) {
      wds_.erase(ev->wd);
      if (root) alive_ = false;
      continue;
    }
    if (ev->len == 0) {
      // The watched directory itself. Subdirectories are reported by their parent's
      // watch already, so only the root's own events count.
      if (!root) continue;
      if (ev->mask & IN_ATTRIB) push(dir, filesystem::EVENT_TYPE_CHMOD);
      if (ev->mask & IN_DELETE_SELF) push(dir, filesystem::EVENT_TYPE_REMOVE);
      if (ev->mask & IN_MOVE_SELF) push(dir, filesystem::EVENT_TYPE_RENAME);
      continue;
    }
    const std::string full = join(dir, name);
    const bool is_dir = ev->mask & IN_ISDIR;
    if (ev->mask & IN_MOVED_FROM) {
      push(full, filesystem::EVENT_TYPE_RENAME);
      if (recursive_ && is_dir) unwatch_tree(full);  // paths below it are stale now
    }
    if (ev->mask & (IN_CREATE | IN_MOVED_TO)) {
      push(full, filesystem::EVENT_TYPE_CREATE);
      if (recursive_ && is_dir) watch_new_dir(full);
    }
    // One WRITE per write cycle: the first IN_MODIFY after an open reports it, and the
    // IN_CLOSE_WRITE that ends the cycle reports it only when nothing was modified
    // (otherwise a single `echo x > f` yields one or two WRITEs depending on timing).
    if (ev->mask & IN_MODIFY) {
      if (writing_.insert(full).second) push(full, filesystem::EVENT_TYPE_WRITE);
      if (writing_.size() > kMaxWriting) writing_.clear();  // lost closes must not pile up
    }
    if (ev->mask & IN_CLOSE_WRITE) {
      if (writing_.erase(full) == 0) push(full, filesystem::EVENT_TYPE_WRITE);
    }
    if (ev->mask & IN_ATTRIB) push(full, filesystem::EVENT_TYPE_CHMOD);
    if (ev->mask & IN_DELETE) {
      push(full, filesystem::EVENT_TYPE_REMOVE);
      writing_.erase(full);
    }
  }
  if (pending()) notifier_.notify();
}

asio::awaitable<void> DirWatcher::read_loop(std::weak_ptr<DirWatcher> weak) {
  // The buffer lives in this frame, so a read still pending when the watcher is destroyed
  // (which cancels it) never writes into freed memory.
  char buf[16 * 1024];
  for (;;) {
    asio::posix::stream_descriptor* fd = nullptr;
    if (auto self = weak.lock(); self && self->fd_.is_open()) fd = &self->fd_;
    if (!fd) co_return;
    // Not holding `self` across the wait: the owner decides the watcher's lifetime.
    auto [ec, n] =
        co_await fd->async_read_some(asio::buffer(buf), asio::as_tuple(asio::use_awaitable));
    auto self = weak.lock();
    if (!self) co_return;
    if (ec) {
      if (ec != asio::error::operation_aborted && ec != asio::error::bad_descriptor)
        log::warn("reading inotify failed", {{"path", self->path_}, {"error", ec.message()}});
      self->alive_ = false;
      self->notifier_.notify();
      co_return;
    }
    self->process(buf, n);
  }
}

std::vector<WatchEvent> DirWatcher::take() {
  std::vector<WatchEvent> out(std::make_move_iterator(queue_.begin()),
                              std::make_move_iterator(queue_.end()));
  queue_.clear();
  return out;
}

std::optional<std::string> DirWatcher::take_loss() {
  if (dropped_ == 0 && !kernel_overflow_) return std::nullopt;
  std::string msg;
  if (dropped_ > 0)
    msg = std::to_string(dropped_) + " events were dropped (more than " +
          std::to_string(kMaxQueuedEvents) + " were waiting to be read)";
  if (kernel_overflow_)
    msg += std::string(msg.empty() ? "" : "; ") +
           "the kernel's inotify queue overflowed and lost events";
  dropped_ = 0;
  kernel_overflow_ = false;
  return msg;
}

asio::awaitable<void> DirWatcher::wait(std::chrono::steady_clock::duration timeout) {
  if (pending()) co_return;
  co_await notifier_.wait_for(timeout);
}

}  // namespace wrenn::envd
