// Small private files — credentials, keys, records: written with mode 0600 whatever the
// umask, never through a symlink at the final path, and complete or not at all.
//
// Contract:
//  - write_private_file(): replaces `path` atomically (a temporary "<path>.tmp-<pid>-<n>" in
//    the same directory, renamed over it). After a failure the previous file is untouched and the
//    temporary is gone. With `fsync` the data is on disk before the rename (credentials
//    that must survive a host crash); without it the file only outlives the process.
//    `owner` (uid, gid), when set, is applied to the file before it becomes visible.
//  - create_private_file(): the create-once variant for files that are generated once and
//    then only read (an admin key, a token): the complete file appears at `path` in one
//    step (link of a finished temporary), and when `path` already exists nothing is
//    written and false is returned — two processes racing both read the winner's file.
//  - Errors: wrenn::Error from errno_error(), naming the path.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace wrenn {

struct PrivateFileOptions {
  bool fsync = false;
  std::optional<std::pair<uid_t, gid_t>> owner;
};

void write_private_file(const std::string& path, std::string_view data,
                        const PrivateFileOptions& options = {});

bool create_private_file(const std::string& path, std::string_view data,
                         const PrivateFileOptions& options = {});

}  // namespace wrenn
