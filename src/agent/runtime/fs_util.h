// Small file-system helpers shared by the ns runtime and the overlay volumes: an owning fd,
// whole-file reads and writes of kernel interface files (cgroupfs, procfs) and the mount
// table. Every failure throws wrenn::Error naming the path (errno_error).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "net/unique_fd.h"

namespace wrenn::agent {


// open(2) with O_CLOEXEC added; throws errno_error("open <path>") on failure.
UniqueFd open_fd(const std::string& path, int flags, unsigned mode = 0);

// Reads a whole (small) file. Throws on failure.
std::string read_text(const std::string& path);
// Writes data with one write(2) (what cgroupfs and procfs expect), no O_CREAT/O_TRUNC
// unless create is set. Throws naming the path and the value on failure.
void write_text(const std::string& path, const std::string& data, bool create = false);
// mkdir(2) that treats an existing directory as success. Throws on other errors.
void make_dir(const std::string& path, unsigned mode = 0755);

// Mount points (field 5 of /proc/self/mountinfo, octal escapes decoded) equal to dir or
// below it, deepest first, so unmounting them in order works.
std::vector<std::string> mounts_under(const std::string& dir);

}  // namespace wrenn::agent
