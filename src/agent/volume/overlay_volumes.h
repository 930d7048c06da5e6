// OverlayVolumes: the ns runtime's volumes. See volume.h for the layout.
//
// prepare(): copies a pre-formatted empty ext4 image of disk_mb (sparse, made once per
// size under <state_dir>/cache/ext4-<mb>M.img with mkfs.ext4) to
// sandboxes/<id>/disk.ext4, loop-mounts it at sandboxes/<id>/disk, and mounts an overlay
// (lower: the template root, upper/work: on that disk) at sandboxes/<id>/rootfs. The
// sandbox can thus write at most disk_mb (minus ext4's metadata), and never into the
// template.
//
// release() removes only disk.ext4, disk/ and rootfs/ of sandboxes/<id>/: the directory
// is shared with the sandbox manager (record.json). sweep_stale() removes whole
// directories. Deleting a disk file that was just written through a loop device waits
// for a journal commit of the host file system (tens of ms), so release() renames it
// into <state_dir>/trash/ and a background thread unlinks it; sweep_stale() and the
// destructor finish whatever is left there.
//
// Thread-safe.
#pragma once

#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>
#include <thread>

#include "volume/volume.h"

namespace wrenn::agent {

class OverlayVolumes : public Volumes {
 public:
  explicit OverlayVolumes(std::string state_dir);
  // Waits until the trash is empty.
  ~OverlayVolumes() override;

  Volume prepare(const std::string& id, const std::string& template_root,
                 std::uint64_t disk_mb) override;
  Volume existing(const std::string& id) const override;
  void release(const std::string& id) override;
  // Used bytes of the sandbox's ext4 above what the empty file system uses.
  std::uint64_t used_bytes(const std::string& id) const override;
  void sweep_stale(const std::set<std::string>& keep) override;

 private:
  std::string dir_of(const std::string& id) const;
  // The cached empty image for disk_mb, made on first use.
  std::string cached_image(std::uint64_t disk_mb);

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
  std::thread trash_thread_;  // last: started once everything above exists
};

}  // namespace wrenn::agent
