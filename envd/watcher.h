// Directory watches on inotify: the one implementation behind WatchDir (a stream) and the
// buffered CreateWatcher/GetWatcherEvents/RemoveWatcher RPCs.
//
// Contract:
//  - DirWatcher::open() checks the path (not_found when missing, invalid_argument when not
//    a directory, failed_precondition on NFS/CIFS/SMB/FUSE, where inotify cannot see changes
//    made elsewhere), installs the watches and starts reading the inotify fd asynchronously
//    on the io_context (never blocking it). Every change after open() returns is reported.
//  - Event mapping; names are absolute paths under the path given to open():
//      IN_CREATE                  -> CREATE
//      IN_MOVED_TO                -> CREATE  (the new name, as Go's fsnotify reports it)
//      IN_MODIFY, IN_CLOSE_WRITE  -> WRITE, once per write cycle: the first modification
//                                    after an open, or the close when nothing was modified
//      IN_ATTRIB                  -> CHMOD
//      IN_DELETE                  -> REMOVE
//      IN_MOVED_FROM              -> RENAME  (the old name)
//      the watched directory itself deleted / moved -> REMOVE / RENAME of its path
//    Other inotify events (open, access, close without writing) are dropped. An event equal
//    to the newest one still queued is not queued again (a long write is one WRITE while
//    nobody drains, rather than one per write(2)).
//  - recursive: every subdirectory is watched, including ones created or moved in later.
//    Entries already inside such a new directory when its watch is added are reported as
//    CREATE (so `mkdir -p a/b && touch a/b/f` is not lost); this may repeat a CREATE.
//    Symbolic links are never followed below the watched path.
//  - Events queue until take() drains them, at most kMaxQueuedEvents; beyond that the oldest
//    are dropped. Losses (dropped here, or the kernel's own queue overflowing) are reported
//    once by take_loss(), which callers turn into resource_exhausted.
//  - Once the watched directory itself is gone (deleted, unmounted), alive() is false and no
//    further events come.
//  - Destroying the DirWatcher closes the inotify fd; its pending read ends harmlessly.
//  - Single-threaded: use only on the io_context's thread.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <chrono>
#include <cstddef>
#include <deque>
#include <unordered_set>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "envd/filesystem.pb.h"
#include "notifier.h"

namespace wrenn::envd {

struct WatchEvent {
  std::string path;
  filesystem::EventType type;
};

class DirWatcher : public std::enable_shared_from_this<DirWatcher> {
 public:
  static constexpr std::size_t kMaxQueuedEvents = 100000;

  // Throws wrenn::Error as described above; inotify limits give resource_exhausted.
  static std::shared_ptr<DirWatcher> open(boost::asio::io_context& io, std::string path,
                                          bool recursive);
  ~DirWatcher();
  DirWatcher(const DirWatcher&) = delete;
  DirWatcher& operator=(const DirWatcher&) = delete;

  const std::string& path() const { return path_; }
  // Queued events, oldest first; the queue is left empty.
  std::vector<WatchEvent> take();
  // A description of events lost since the last call, or nullopt when none were.
  std::optional<std::string> take_loss();
  bool alive() const { return alive_; }
  // Returns when events or a loss are pending, the directory is gone, or after timeout.
  // One waiter at a time.
  boost::asio::awaitable<void> wait(std::chrono::steady_clock::duration timeout);

 private:
  DirWatcher(boost::asio::io_context& io, std::string path, bool recursive, int fd);
  static boost::asio::awaitable<void> read_loop(std::weak_ptr<DirWatcher> weak);
  bool pending() const { return !queue_.empty() || dropped_ > 0 || kernel_overflow_ || !alive_; }
  // Adds a watch on dir; false when it cannot (throws for the root, and for the watch limit
  // while open() sets up). *already: dir was watched under this path before.
  bool add_watch(const std::string& dir, bool root, bool initial, bool* already);
  // Watches the directories below dir; `report` queues CREATE for every entry found.
  void add_tree(const std::string& dir, bool report, bool initial);
  void watch_new_dir(const std::string& dir);
  void unwatch_tree(const std::string& dir);
  void process(const char* buf, std::size_t n);
  void push(std::string path, filesystem::EventType type);

  std::string path_;
  bool recursive_;
  boost::asio::posix::stream_descriptor fd_;
  Notifier notifier_;
  std::unordered_map<int, std::string> wds_;  // watch descriptor -> directory path
  int root_wd_ = -1;
  std::deque<WatchEvent> queue_;
  // Files modified since they were opened for writing (see process()).
  std::unordered_set<std::string> writing_;
  static constexpr std::size_t kMaxWriting = 4096;
  std::size_t dropped_ = 0;
  bool kernel_overflow_ = false;
  bool alive_ = true;
};

}  // namespace wrenn::envd
