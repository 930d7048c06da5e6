// copy_tree: a faithful copy of one directory tree, for turning a sandbox's root into a
// template (SandboxManager::create_snapshot).
//
// Contract:
//  - Copies src (a directory) to dst (must not exist; created with src's mode): regular
//    files (contents, sparse holes not preserved), directories, symlinks (the link text,
//    never followed), device nodes, fifos and sockets (as nodes). Owner, group, mode
//    (including setuid/setgid/sticky) and modification times are preserved; files hard-linked
//    to each other inside src are hard-linked to each other in dst. Extended attributes
//    are not copied.
//  - Stays on src's file system: a directory on another device (a mount point below src)
//    is copied as an empty directory with its own owner and mode, its contents skipped.
//  - Needs CAP_CHOWN/CAP_MKNOD (the agent runs as root). On failure throws wrenn::Error
//    naming the path and leaves whatever was copied so far: the caller removes dst.
//  - Returns the bytes of the copy: the sizes of its regular files, each hard-linked file
//    counted once.
#pragma once

#include <cstdint>
#include <string>

namespace wrenn::agent {

std::uint64_t copy_tree(const std::string& src, const std::string& dst);

// Sum of the sizes of the regular files below dir (hard links counted once); 0 when dir
// is missing.
std::uint64_t tree_bytes(const std::string& dir);

}  // namespace wrenn::agent
