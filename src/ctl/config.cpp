#include "config.h"

#include <toml++/toml.h>

#include <cstdlib>
#include <filesystem>

namespace wrenn::ctl {

namespace {

namespace fs = std::filesystem;

struct FileValues {
  std::optional<std::string> server, api_key, ca_cert;
};

std::string where(const std::string& file, const toml::source_region& r) {
  return file + ":" + std::to_string(r.begin.line) + ":" + std::to_string(r.begin.column);
}

FileValues read_config(const std::string& file) {
  toml::table t;
  try {
    t = toml::parse_file(file);
  } catch (const toml::parse_error& e) {
    throw ConfigError(where(file, e.source()) + ": " + std::string(e.description()));
  }
  FileValues v;
  for (auto&& [key, node] : t) {
    const std::string k(key.str());
    std::optional<std::string>* slot = k == "server"    ? &v.server
                                       : k == "api_key" ? &v.api_key
                                       : k == "ca_cert" ? &v.ca_cert
                                                        : nullptr;
    if (!slot)
      throw ConfigError(where(file, key.source()) + ": unknown key \"" + k +
                        "\" (expected server, api_key or ca_cert)");
    auto s = node.value<std::string>();
    if (!s) throw ConfigError(where(file, node.source()) + ": " + k + " must be a string");
    *slot = *s;
  }
  return v;
}

Setting pick(const std::optional<std::string>& flag, const char* flag_name, const char* env,
             const std::optional<std::string>& file_value, const std::string& file,
             std::string fallback) {
  if (flag) return {*flag, flag_name};
  if (const char* e = std::getenv(env); e && *e) return {e, env};
  if (file_value) return {*file_value, file};
  return {std::move(fallback), "default"};
}

}  // namespace

Settings resolve_settings(const Flags& flags) {
  Settings s;
  if (const char* c = std::getenv("WRENN_CONFIG"); c && *c) {
    std::error_code ec;
    if (!fs::is_regular_file(c, ec))
      throw ConfigError(std::string("the config file ") + c +
                        " (WRENN_CONFIG) does not exist or is not a file");
    s.config_file = c;
  } else if (const char* home = std::getenv("HOME"); home && *home) {
    const std::string p = std::string(home) + "/.config/wrenn/config.toml";
    std::error_code ec;
    if (fs::is_regular_file(p, ec)) s.config_file = p;
  }
  FileValues fv;
  if (!s.config_file.empty()) fv = read_config(s.config_file);
  s.server = pick(flags.server, "--server", "WRENN_URL", fv.server, s.config_file, kDefaultServer);
  s.api_key = pick(flags.api_key, "--api-key", "WRENN_API_KEY", fv.api_key, s.config_file, "");
  s.ca_cert = pick(flags.ca_cert, "--ca-cert", "WRENN_CA_CERT", fv.ca_cert, s.config_file, "");
  return s;
}

}  // namespace wrenn::ctl
