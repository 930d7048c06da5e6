// wrennctl's connection settings: where the control plane is and which API key to use.
//
// Contract:
//  - resolve_settings() picks each setting by precedence flag > environment > config file >
//    default: server (--server, WRENN_URL, `server`, http://127.0.0.1:8000), api_key
//    (--api-key, WRENN_API_KEY, `api_key`, none) and ca_cert (--ca-cert, WRENN_CA_CERT,
//    `ca_cert`, none).
//  - The config file is $WRENN_CONFIG when set (then it must exist), else
//    ~/.config/wrenn/config.toml when it exists. It is TOML with only the keys server,
//    api_key and ca_cert (strings); anything else, or a syntax error, throws
//    ConfigError naming the file, line and column.
//  - `source` records where each value came from (for messages such as the 401 hint).
// Thread-safety: reads the environment and one file; call from one thread.
#pragma once

#include <optional>
#include <stdexcept>
#include <string>

namespace wrenn::ctl {

inline constexpr const char* kDefaultServer = "http://127.0.0.1:8000";

class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Flags {  // values given on the command line
  std::optional<std::string> server;
  std::optional<std::string> api_key;
  std::optional<std::string> ca_cert;
};

struct Setting {
  std::string value;
  std::string source;  // "--server", "WRENN_URL", "/path/config.toml", "default", …
};

struct Settings {
  Setting server;
  Setting api_key;
  Setting ca_cert;
  std::string config_file;  // the file read ("" when none)
};

Settings resolve_settings(const Flags& flags);

}  // namespace wrenn::ctl
