// Volume: the writable root of one sandbox, made from a template image copy-on-write.
// The ns runtime's implementation (OverlayVolumes) stacks an overlay on the template's
// root tree whose upper layer lives on a private ext4 file system of disk_mb, so what a
// sandbox can write is bounded by disk_mb and never touches the template. The VM runtimes
// add a dm-snapshot implementation behind the same interface.
//
// Layout under <state_dir>/sandboxes/<id>/volume/: disk.ext4 (sparse), disk/ (its mount:
// upper/, work/), rootfs/ (the overlay). Everything is derived from the id, so release()
// and sweep need nothing else.
#pragma once

#include <cstdint>
#include <set>
#include <string>

namespace wrenn::agent {

struct Volume {
  std::string id;
  std::string rootfs;  // merged root tree, mounted in the agent's mount namespace
  std::string upper;   // the sandbox's own changes
};

class Volumes {
 public:
  virtual ~Volumes() = default;
  // Builds the volume; template_root is the image's root tree. Throws wrenn::Error
  // (not_found when the template is missing) and leaves nothing behind on failure.
  virtual Volume prepare(const std::string& id, const std::string& template_root, std::uint64_t disk_mb) = 0;
  // The volume of an existing sandbox (after an agent restart); nothing is mounted anew.
  virtual Volume existing(const std::string& id) const = 0;
  // Unmounts and deletes everything of the id. Idempotent; succeeds when nothing exists.
  virtual void release(const std::string& id) = 0;
  // Bytes the sandbox has written (used blocks of its writable file system).
  virtual std::uint64_t used_bytes(const std::string& id) const = 0;
  // Removes mounts and files of every sandbox directory whose id is not in keep.
  virtual void sweep_stale(const std::set<std::string>& keep) = 0;
};

}  // namespace wrenn::agent
