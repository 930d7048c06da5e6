// OverlayVolumes: the ns runtime's volumes. See volume.h for the layout.
//
// A disk is a copy of a pre-formatted empty ext4 image of disk_mb (sparse, made once per
// size under <state_dir>/cache/ext4-<mb>M.img with mkfs.ext4), loop-mounted, with the
// overlay's upper/ and work/ on it. prepare() puts a disk at sandboxes/<id>/volume/
// (disk.ext4, disk/) and mounts an overlay (lower: the template root, upper/work: on that
// disk) at sandboxes/<id>/volume/rootfs. The sandbox can thus write at most disk_mb
// (minus ext4's metadata), and never into the template.
//
// Ready disks: copying, attaching and mounting a disk is a third of a sandbox's start, so
// with ready_disks > 0 a low-priority background thread keeps that many mounted, empty
// disks per recently requested size under <state_dir>/pool/, and prepare() takes one by
// renaming its directory into the sandbox's (a mount below a directory moves with it).
// When none is ready, prepare() makes the disk itself. Pool entries are never handed out
// twice and are thrown away (not reused) at the next start.
//
// release() removes only volume/ of sandboxes/<id>/: the directory is shared with the
// sandbox manager (record.json). sweep_stale() removes whole directories and the pool
// left by a previous agent. Deleting a disk file that was just written through a loop
// device waits for a journal commit of the host file system (tens of ms), so release()
// renames it into <state_dir>/trash/ and a background thread unlinks it; sweep_stale()
// and the destructor finish whatever is left there.
//
// Thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "volume/volume.h"

namespace wrenn::agent {

struct OverlayVolumesOptions {
  std::string state_dir;
  // Mounted empty disks kept ready per disk size (0: every disk is made on demand).
  unsigned ready_disks = 0;
  // Sizes made ready before the first request for them.
  std::vector<std::uint64_t> ready_sizes_mb;
};

class OverlayVolumes : public Volumes {
 public:
  explicit OverlayVolumes(std::string state_dir);
  explicit OverlayVolumes(OverlayVolumesOptions opts);
  // Releases the ready disks and waits until the trash is empty.
  ~OverlayVolumes() override;

  Volume prepare(const std::string& id, const std::string& template_root,
                 std::uint64_t disk_mb) override;
  Volume existing(const std::string& id) const override;
  void release(const std::string& id) override;
  // Used bytes of the sandbox's ext4 above what the empty file system uses.
  std::uint64_t used_bytes(const std::string& id) const override;
  void sweep_stale(const std::set<std::string>& keep) override;
  // Ready disks of disk_mb right now (for tests and metrics).
  std::size_t ready_count(std::uint64_t disk_mb) const;

 private:
  std::string dir_of(const std::string& id) const;
  // The cached empty image for disk_mb, made on first use.
  std::string cached_image(std::uint64_t disk_mb);
  // Makes a mounted empty disk of disk_mb in dir (volume layout: disk.ext4, disk/).
  void make_disk(const std::string& dir, std::uint64_t disk_mb);
  // Unmounts and deletes a directory in the volume layout.
  void remove_volume_dir(const std::string& dir);
  // Moves a ready disk of disk_mb to dir; false when none is ready.
  bool take_ready(std::uint64_t disk_mb, const std::string& dir);
  void refill_loop();

  // Moves a released disk file into the trash and queues its deletion.
  void trash(const std::string& file);
  void empty_trash_loop();

  std::string state_dir_;
  std::mutex cache_mu_;  // one mkfs per size at a time

  std::mutex trash_mu_;
  std::condition_variable trash_cv_;
  std::deque<std::string> trash_queue_;
  std::uint64_t trash_seq_ = 0;
  bool stopping_ = false;

  unsigned ready_target_ = 0;
  mutable std::mutex pool_mu_;
  std::condition_variable pool_cv_;
  std::map<std::uint64_t, std::deque<std::string>> ready_;  // size -> pool dirs, oldest first
  std::deque<std::uint64_t> pooled_sizes_;  // most recently requested first, bounded
  std::uint64_t pool_seq_ = 0;
  std::chrono::steady_clock::time_point last_take_{};
  bool pool_stopping_ = false;

  std::thread trash_thread_;  // last: started once everything above exists
  std::thread refill_thread_;
};

}  // namespace wrenn::agent
