#include "paths.h"

#include <vector>

#include "error.h"

namespace wrenn::envd {

namespace {
std::string normalise(std::string_view p) {
  std::vector<std::string_view> parts;
  std::size_t i = 0;
  while (i <= p.size()) {
    auto j = p.find('/', i);
    if (j == std::string_view::npos) j = p.size();
    auto part = p.substr(i, j - i);
    if (!part.empty() && part != ".") {
      if (part == "..")
        throw Error(Code::kInvalidArgument, "path \"" + std::string(p) + "\" must not contain \"..\" components");
      parts.push_back(part);
    }
    i = j + 1;
  }
  std::string out;
  for (auto part : parts) {
    out += '/';
    out += part;
  }
  return out.empty() ? "/" : out;
}
}  // namespace

std::string resolve_path(std::string_view path, const User& user, const std::optional<std::string>& workdir) {
  if (path.find('\0') != std::string_view::npos)
    throw Error(Code::kInvalidArgument, "path contains a NUL byte");
  if (path.size() > 4096) throw Error(Code::kInvalidArgument, "path is longer than 4096 bytes");
  const std::string& base = workdir && !workdir->empty() ? *workdir : user.home;
  if (path.empty()) return normalise(base);
  if (path[0] == '~') {
    if (path.size() == 1) return normalise(user.home);
    if (path[1] != '/')
      throw Error(Code::kInvalidArgument, "path \"" + std::string(path) + "\": ~user forms are not supported");
    return normalise(user.home + std::string(path.substr(1)));
  }
  if (path[0] == '/') return normalise(path);
  return normalise(base + "/" + std::string(path));
}

std::string base_name(std::string_view path) {
  while (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
  auto s = path.rfind('/');
  if (s == std::string_view::npos) return std::string(path);
  if (path.size() == 1) return "/";
  return std::string(path.substr(s + 1));
}

std::string parent_dir(std::string_view path) {
  auto s = path.rfind('/');
  if (s == std::string_view::npos || s == 0) return "/";
  return std::string(path.substr(0, s));
}

}  // namespace wrenn::envd
