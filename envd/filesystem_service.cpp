#include "filesystem_service.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <vector>

#include "envd/filesystem.pb.h"
#include "error.h"
#include "paths.h"
#include "rpc_context.h"
#include "watcher.h"

namespace wrenn::envd {

namespace asio = boost::asio;
using connect::CallContext;

namespace {



std::string join(const std::string& dir, const std::string& name) {
  return dir == "/" ? "/" + name : dir + "/" + name;
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// Entry names of a directory, without "." and "..". Returns 0 or the errno of the failure.
int read_names(const std::string& dir, std::vector<std::string>& out) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) return errno;
  int err = 0;
  for (;;) {
    errno = 0;
    dirent* e = ::readdir(d);
    if (!e) {
      err = errno;
      break;
    }
    std::string_view name = e->d_name;
    if (name != "." && name != "..") out.emplace_back(name);
  }
  ::closedir(d);
  return err;
}

std::vector<std::string> names_or_throw(const std::string& dir, std::string_view what) {
  std::vector<std::string> names;
  if (int err = read_names(dir, names)) throw errno_error(err, std::string(what) + " " + dir);
  return names;
}

// "drwxr-xr-x" as ls prints it (setuid/setgid/sticky as s/S/t/T).
std::string permissions(mode_t m) {
  char type = '?';
  if (S_ISDIR(m))
    type = 'd';
  else if (S_ISLNK(m))
    type = 'L';
  else if (S_ISREG(m))
    type = '-';
  else if (S_ISBLK(m))
    type = 'b';
  else if (S_ISCHR(m))
    type = 'c';
  else if (S_ISFIFO(m))
    type = 'p';
  else if (S_ISSOCK(m))
    type = 'S';
  std::string s(1, type);
  const char* rwx = "rwx";
  for (int i = 0; i < 9; ++i) s += (m & (0400 >> i)) ? rwx[i % 3] : '-';
  auto special = [&s](std::size_t pos, bool set, char lower) {
    if (set) s[pos] = s[pos] == 'x' ? lower : static_cast<char>(lower - 'a' + 'A');
  };
  special(3, m & S_ISUID, 's');
  special(6, m & S_ISGID, 's');
  special(9, m & S_ISVTX, 't');
  return s;
}

filesystem::EntryInfo make_entry(const State& state, const std::string& path,
                                 const struct stat& st) {
  filesystem::EntryInfo e;
  e.set_name(base_name(path));
  e.set_path(path);
  if (S_ISREG(st.st_mode))
    e.set_type(filesystem::FILE_TYPE_FILE);
  else if (S_ISDIR(st.st_mode))
    e.set_type(filesystem::FILE_TYPE_DIRECTORY);
  else if (S_ISLNK(st.st_mode))
    e.set_type(filesystem::FILE_TYPE_SYMLINK);
  else
    e.set_type(filesystem::FILE_TYPE_UNSPECIFIED);
  e.set_size(st.st_size);
  e.set_mode(st.st_mode & 07777);
  e.set_permissions(permissions(st.st_mode));
  e.set_owner(state.users().user_name(st.st_uid));
  e.set_group(state.users().group_name(st.st_gid));
  if (st.st_mtim.tv_sec != 0 || st.st_mtim.tv_nsec != 0) {
    e.mutable_modified_time()->set_seconds(st.st_mtim.tv_sec);
    e.mutable_modified_time()->set_nanos(static_cast<int>(st.st_mtim.tv_nsec));
  }
  if (S_ISLNK(st.st_mode)) {
    std::string target(4096, '\0');
    ssize_t n = ::readlink(path.c_str(), target.data(), target.size());
    if (n >= 0) {
      target.resize(static_cast<std::size_t>(n));
      e.set_symlink_target(target);
    }
  }
  return e;
}

filesystem::EntryInfo entry_at(const State& state, const std::string& path, std::string_view what) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) throw errno_error(errno, std::string(what) + " " + path);
  return make_entry(state, path, st);
}

// mkdir -p: creates the missing components of dir, each owned by `owner` when envd is root.
void make_dirs(const std::string& dir, const User& owner) {
  std::size_t pos = 0;
  while (pos != std::string::npos) {
    pos = dir.find('/', pos + 1);
    std::string prefix = dir.substr(0, pos);
    struct stat st;
    if (::stat(prefix.c_str(), &st) == 0) {
      if (!S_ISDIR(st.st_mode))
        throw Error(Code::kInvalidArgument, prefix + " exists and is not a directory");
      continue;
    }
    if (errno != ENOENT) throw errno_error(errno, "stat " + prefix);
    if (::mkdir(prefix.c_str(), 0755) != 0) {
      int err = errno;
      // Lost a race with someone creating it: fine if it is a directory now.
      if (err == EEXIST && ::stat(prefix.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) continue;
      throw errno_error(err, "mkdir " + prefix);
    }
    if (::geteuid() == 0 && ::lchown(prefix.c_str(), owner.uid, owner.gid) != 0)
      throw errno_error(errno, "chown " + prefix);
  }
}

// Removes path and everything below it without following symlinks; entries that vanish
// meanwhile are not errors.
void remove_tree(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return;
    throw errno_error(errno, "remove " + path);
  }
  if (S_ISDIR(st.st_mode)) {
    std::vector<std::string> names;
    if (int err = read_names(path, names); err != 0 && err != ENOENT)
      throw errno_error(err, "remove " + path);
    for (auto& n : names) remove_tree(join(path, n));
    if (::rmdir(path.c_str()) != 0 && errno != ENOENT) throw errno_error(errno, "remove " + path);
  } else if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    throw errno_error(errno, "remove " + path);
  }
}

void copy_file_data(const std::string& src, const std::string& dst, const struct stat& st) {
  Fd in(::open(src.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (in.get() < 0) throw errno_error(errno, "open " + src);
  Fd out(::open(dst.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (out.get() < 0) throw errno_error(errno, "create " + dst);
  std::vector<char> buf(1 << 20);
  for (;;) {
    ssize_t n = ::read(in.get(), buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw errno_error(errno, "read " + src);
    if (n == 0) break;
    for (ssize_t off = 0; off < n;) {
      ssize_t w = ::write(out.get(), buf.data() + off, static_cast<std::size_t>(n - off));
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) throw errno_error(errno, "write " + dst);
      off += w;
    }
  }
  if (::geteuid() == 0 && ::fchown(out.get(), st.st_uid, st.st_gid) != 0)
    throw errno_error(errno, "chown " + dst);
  // After chown, which clears setuid/setgid bits.
  if (::fchmod(out.get(), st.st_mode & 07777) != 0) throw errno_error(errno, "chmod " + dst);
}

// Copies src to dst (which must not exist) like `cp -a`: directory trees, symlinks as
// links, modes, ownership (when root) and modification times.
void copy_tree(const std::string& src, const std::string& dst) {
  struct stat st;
  if (::lstat(src.c_str(), &st) != 0) throw errno_error(errno, "stat " + src);
  const bool root = ::geteuid() == 0;
  if (S_ISDIR(st.st_mode)) {
    if (::mkdir(dst.c_str(), 0700) != 0) throw errno_error(errno, "mkdir " + dst);
    for (auto& n : names_or_throw(src, "list")) copy_tree(join(src, n), join(dst, n));
    if (root && ::lchown(dst.c_str(), st.st_uid, st.st_gid) != 0)
      throw errno_error(errno, "chown " + dst);
    if (::chmod(dst.c_str(), st.st_mode & 07777) != 0) throw errno_error(errno, "chmod " + dst);
  } else if (S_ISREG(st.st_mode)) {
    copy_file_data(src, dst, st);
  } else if (S_ISLNK(st.st_mode)) {
    std::string target(4096, '\0');
    ssize_t n = ::readlink(src.c_str(), target.data(), target.size());
    if (n < 0) throw errno_error(errno, "readlink " + src);
    target.resize(static_cast<std::size_t>(n));
    if (::symlink(target.c_str(), dst.c_str()) != 0) throw errno_error(errno, "symlink " + dst);
    if (root && ::lchown(dst.c_str(), st.st_uid, st.st_gid) != 0)
      throw errno_error(errno, "chown " + dst);
  } else {
    if (::mknod(dst.c_str(), st.st_mode, st.st_rdev) != 0) throw errno_error(errno, "mknod " + dst);
    if (root && ::lchown(dst.c_str(), st.st_uid, st.st_gid) != 0)
      throw errno_error(errno, "chown " + dst);
  }
  struct timespec times[2] = {st.st_atim, st.st_mtim};
  ::utimensat(AT_FDCWD, dst.c_str(), times, AT_SYMLINK_NOFOLLOW);  // best effort, as cp -a
}

// rename(2) across filesystems: copy next to dst, rename the copy into place (so dst is
// replaced exactly as rename would replace it), then remove src.
void move_across_devices(const std::string& src, const std::string& dst) {
  auto ns = std::chrono::system_clock::now().time_since_epoch().count();
  std::string tmp =
      join(parent_dir(dst), ".wrenn-move-" + std::to_string(::getpid()) + "-" + std::to_string(ns));
  try {
    copy_tree(src, tmp);
    if (::rename(tmp.c_str(), dst.c_str()) != 0)
      throw errno_error(errno, "move " + src + " to " + dst);
  } catch (...) {
    try {
      remove_tree(tmp);
    } catch (const Error&) {
    }
    throw;
  }
  try {
    remove_tree(src);
  } catch (const Error& e) {
    throw Error(e.code(), "move " + src + " to " + dst +
                              ": copied, but removing the source failed: " + e.what());
  }
}

void list_into(const State& state, const std::string& dir, unsigned level, unsigned depth,
               std::vector<filesystem::EntryInfo>& out) {
  std::vector<std::string> names;
  if (int err = read_names(dir, names)) {
    // A subdirectory that vanished or was replaced while walking is simply skipped.
    if (level > 1 && (err == ENOENT || err == ENOTDIR)) return;
    throw errno_error(err, "list " + dir);
  }
  for (auto& n : names) {
    std::string full = join(dir, n);
    struct stat st;
    if (::lstat(full.c_str(), &st) != 0) {
      if (errno == ENOENT) continue;
      throw errno_error(errno, "stat " + full);
    }
    out.push_back(make_entry(state, full, st));
    if (S_ISDIR(st.st_mode) && level < depth) list_into(state, full, level + 1, depth, out);
  }
}

filesystem::ListDirResponse list_dir(const State& state, const std::string& path, unsigned depth) {
  struct stat st;
  // The requested path itself may be a symlink to a directory; nothing below it is followed.
  if (::stat(path.c_str(), &st) != 0) throw errno_error(errno, "list " + path);
  if (!S_ISDIR(st.st_mode))
    throw Error(Code::kInvalidArgument, "list " + path + ": not a directory");
  std::vector<filesystem::EntryInfo> entries;
  list_into(state, path, 1, std::max(1u, depth), entries);
  std::sort(entries.begin(), entries.end(),
            [](const auto& a, const auto& b) { return a.path() < b.path(); });
  filesystem::ListDirResponse resp;
  for (auto& e : entries) *resp.add_entries() = std::move(e);
  return resp;
}

filesystem::EntryInfo make_dir(const State& state, const std::string& path, const User& owner) {
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode))
      throw Error(Code::kAlreadyExists, "directory " + path + " already exists");
    throw Error(Code::kInvalidArgument, path + " already exists and is not a directory");
  }
  if (errno != ENOENT) throw errno_error(errno, "mkdir " + path);
  make_dirs(path, owner);
  return entry_at(state, path, "stat");
}

filesystem::EntryInfo move(const State& state, const std::string& src, const std::string& dst,
                           const User& owner) {
  struct stat st;
  if (::lstat(src.c_str(), &st) != 0) throw errno_error(errno, "move " + src);
  make_dirs(parent_dir(dst), owner);
  if (::rename(src.c_str(), dst.c_str()) != 0) {
    int err = errno;
    if (err == ENOTEMPTY || err == EEXIST)
      throw Error(Code::kAlreadyExists,
                  "move " + src + " to " + dst + ": the destination is a non-empty directory");
    if (err != EXDEV) throw errno_error(err, "move " + src + " to " + dst);
    move_across_devices(src, dst);
  }
  return entry_at(state, dst, "stat");
}

void remove(const std::string& path) {
  if (path == "/") throw Error(Code::kInvalidArgument, "refusing to remove /");
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) throw errno_error(errno, "remove " + path);
  remove_tree(path);
}

// Watchers created by CreateWatcher, by id.
class WatcherRegistry {
 public:
  std::string add(std::shared_ptr<DirWatcher> w) {
    // Nanoseconds, bumped past the last id so two watchers in one tick still differ.
    long long ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
    last_ns_ = std::max(ns, last_ns_ + 1);
    char id[32];
    std::snprintf(id, sizeof id, "w-%llx", last_ns_);
    watchers_[id] = std::move(w);
    return id;
  }
  DirWatcher& find(const std::string& id) {
    auto it = watchers_.find(id);
    if (it == watchers_.end()) throw Error(Code::kNotFound, "watcher \"" + id + "\" not found");
    return *it->second;
  }
  void remove(const std::string& id) { watchers_.erase(id); }

 private:
  std::map<std::string, std::shared_ptr<DirWatcher>> watchers_;
  long long last_ns_ = 0;
};

filesystem::GetWatcherEventsResponse drain(DirWatcher& w, const std::string& id) {
  // Lost events are reported once, instead of the batch; the events queued meanwhile stay
  // for the next call, so a client that retries loses nothing more.
  if (auto loss = w.take_loss())
    throw Error(Code::kResourceExhausted, "watcher " + id + " on " + w.path() + ": " + *loss);
  filesystem::GetWatcherEventsResponse resp;
  for (auto& e : w.take()) {
    auto* ev = resp.add_events();
    ev->set_name(std::move(e.path));
    ev->set_type(e.type);
  }
  return resp;
}

// WatchDir messages, built outside the coroutine.
filesystem::WatchDirResponse start_message() {
  filesystem::WatchDirResponse r;
  r.mutable_start();
  return r;
}

filesystem::WatchDirResponse keepalive_message() {
  filesystem::WatchDirResponse r;
  r.mutable_keepalive();
  return r;
}

filesystem::WatchDirResponse event_message(WatchEvent& e) {
  filesystem::WatchDirResponse r;
  r.mutable_filesystem()->set_name(std::move(e.path));
  r.mutable_filesystem()->set_type(e.type);
  return r;
}

// Streams a watcher's events until the client goes away (a send throws canceled, and the
// watcher's destruction closes the inotify fd), the call's deadline passes, or the watched
// directory is gone (the stream then ends cleanly after its REMOVE/RENAME).
asio::awaitable<void> watch_stream(std::shared_ptr<DirWatcher> w,
                                   connect::ServerStream<filesystem::WatchDirResponse>& out,
                                   CallContext& ctx, std::chrono::seconds interval) {
  using clock = std::chrono::steady_clock;
  // Messages are named locals: GCC 12 mishandles some temporaries inside co_await.
  auto start = start_message();
  co_await out.send(start);
  auto next_keepalive = clock::now() + interval;
  for (;;) {
    if (auto loss = w->take_loss())
      throw Error(Code::kResourceExhausted, "watch " + w->path() + ": " + *loss);
    if (ctx.deadline && clock::now() >= *ctx.deadline)
      throw Error(Code::kDeadlineExceeded,
                  "watch " + w->path() + ": the call's Connect-Timeout-Ms deadline passed");
    auto events = w->take();
    for (auto& e : events) {
      auto msg = event_message(e);
      co_await out.send(msg);
    }
    if (!events.empty()) {
      next_keepalive = clock::now() + interval;
      continue;  // more may have arrived while sending
    }
    if (!w->alive()) co_return;
    auto now = clock::now();
    if (now >= next_keepalive) {
      auto keepalive = keepalive_message();
      co_await out.send(keepalive);
      next_keepalive = clock::now() + interval;
      continue;
    }
    auto until = next_keepalive;
    if (ctx.deadline) until = std::min(until, *ctx.deadline);
    co_await w->wait(until - now);
  }
}

}  // namespace

void register_filesystem_service(connect::Router& router, State& state, asio::io_context& io) {
  router.unary<filesystem::StatRequest, filesystem::StatResponse>(
      "/filesystem.Filesystem/Stat",
      [&state](filesystem::StatRequest req,
               CallContext& ctx) -> asio::awaitable<filesystem::StatResponse> {
        Identity id = caller(state, ctx);
        std::string path = resolve_path(req.path(), id.user, id.workdir);
        filesystem::StatResponse resp;
        *resp.mutable_entry() = entry_at(state, path, "stat");
        co_return resp;
      });

  router.unary<filesystem::MakeDirRequest, filesystem::MakeDirResponse>(
      "/filesystem.Filesystem/MakeDir",
      [&state](filesystem::MakeDirRequest req,
               CallContext& ctx) -> asio::awaitable<filesystem::MakeDirResponse> {
        Identity id = caller(state, ctx);
        std::string path = resolve_path(req.path(), id.user, id.workdir);
        filesystem::MakeDirResponse resp;
        *resp.mutable_entry() = make_dir(state, path, id.user);
        co_return resp;
      });

  router.unary<filesystem::MoveRequest, filesystem::MoveResponse>(
      "/filesystem.Filesystem/Move",
      [&state](filesystem::MoveRequest req,
               CallContext& ctx) -> asio::awaitable<filesystem::MoveResponse> {
        Identity id = caller(state, ctx);
        std::string src = resolve_path(req.source(), id.user, id.workdir);
        std::string dst = resolve_path(req.destination(), id.user, id.workdir);
        filesystem::MoveResponse resp;
        *resp.mutable_entry() = move(state, src, dst, id.user);
        co_return resp;
      });

  router.unary<filesystem::ListDirRequest, filesystem::ListDirResponse>(
      "/filesystem.Filesystem/ListDir",
      [&state](filesystem::ListDirRequest req,
               CallContext& ctx) -> asio::awaitable<filesystem::ListDirResponse> {
        Identity id = caller(state, ctx);
        std::string path = resolve_path(req.path(), id.user, id.workdir);
        co_return list_dir(state, path, req.depth());
      });

  router.unary<filesystem::RemoveRequest, filesystem::RemoveResponse>(
      "/filesystem.Filesystem/Remove",
      [&state](filesystem::RemoveRequest req,
               CallContext& ctx) -> asio::awaitable<filesystem::RemoveResponse> {
        Identity id = caller(state, ctx);
        remove(resolve_path(req.path(), id.user, id.workdir));
        co_return filesystem::RemoveResponse{};
      });

  router.server_stream<filesystem::WatchDirRequest, filesystem::WatchDirResponse>(
      "/filesystem.Filesystem/WatchDir",
      [&state, &io](filesystem::WatchDirRequest req,
                    connect::ServerStream<filesystem::WatchDirResponse>& out,
                    CallContext& ctx) -> asio::awaitable<void> {
        Identity id = caller(state, ctx);
        std::string path = resolve_path(req.path(), id.user, id.workdir);
        auto interval = keepalive_interval(ctx);
        auto watcher = DirWatcher::open(io, path, req.recursive());
        co_await watch_stream(std::move(watcher), out, ctx, interval);
      });

  auto watchers = std::make_shared<WatcherRegistry>();

  router.unary<filesystem::CreateWatcherRequest, filesystem::CreateWatcherResponse>(
      "/filesystem.Filesystem/CreateWatcher",
      [&state, &io, watchers](filesystem::CreateWatcherRequest req, CallContext& ctx)
          -> asio::awaitable<filesystem::CreateWatcherResponse> {
        Identity id = caller(state, ctx);
        std::string path = resolve_path(req.path(), id.user, id.workdir);
        auto watcher = DirWatcher::open(io, path, req.recursive());
        filesystem::CreateWatcherResponse resp;
        resp.set_watcher_id(watchers->add(std::move(watcher)));
        co_return resp;
      });

  router.unary<filesystem::GetWatcherEventsRequest, filesystem::GetWatcherEventsResponse>(
      "/filesystem.Filesystem/GetWatcherEvents",
      [&state, watchers](filesystem::GetWatcherEventsRequest req, CallContext& ctx)
          -> asio::awaitable<filesystem::GetWatcherEventsResponse> {
        caller(state, ctx);
        co_return drain(watchers->find(req.watcher_id()), req.watcher_id());
      });

  router.unary<filesystem::RemoveWatcherRequest, filesystem::RemoveWatcherResponse>(
      "/filesystem.Filesystem/RemoveWatcher",
      [&state, watchers](filesystem::RemoveWatcherRequest req,
                         CallContext& ctx) -> asio::awaitable<filesystem::RemoveWatcherResponse> {
        caller(state, ctx);
        watchers->remove(req.watcher_id());  // unknown ids are fine: removal is idempotent
        co_return filesystem::RemoveWatcherResponse{};
      });
}

}  // namespace wrenn::envd
