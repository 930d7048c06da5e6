// Loop devices for sandbox disks.
#pragma once

#include <string>

#include "runtime/fs_util.h"

namespace wrenn::agent {

// Attaches file to a free loop device (LOOP_CTL_GET_FREE + LOOP_CONFIGURE) with
// LO_FLAGS_AUTOCLEAR, so the device detaches by itself once the returned fd is closed and
// the last mount of it is gone. Retries when another attacher takes the same device
// first. Returns the open device and sets dev_path ("/dev/loopN"). Throws on failure.
UniqueFd attach_loop(const std::string& file, std::string& dev_path);

}  // namespace wrenn::agent
