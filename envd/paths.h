// Path resolution for sandbox requests, shared by processes (cwd), the filesystem service
// and /files.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "users.h"

namespace wrenn::envd {

// Resolves a client-supplied path for `user`:
//   ""          -> workdir if set, else the user's home
//   "~", "~/x"  -> the user's home (+ "/x")
//   relative    -> joined onto workdir if set, else the user's home
//   absolute    -> itself
// The result is lexically normalised ("a//b/./c" -> "a/b/c"). Throws Error(invalid_argument)
// for a NUL byte, a ".." component, or "~user" forms.
std::string resolve_path(std::string_view path, const User& user, const std::optional<std::string>& workdir);

// Last path component ("/" for the root).
std::string base_name(std::string_view path);
// Parent directory of an absolute normalised path ("/" for "/x").
std::string parent_dir(std::string_view path);

}  // namespace wrenn::envd
