// Structured logging: one JSON object a line on stderr, e.g.
//   {"ts":"2026-11-22T21:50:01.123Z","level":"info","msg":"listening","addr":"0.0.0.0:49983"}
// Never pass secrets as fields; there is no redaction layer behind this.
#pragma once

#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace wrenn::log {

enum class Level { kDebug, kInfo, kWarn, kError };

using Field = std::pair<std::string_view, std::string>;

void set_level(Level level);
// "debug", "info", "warn" or "error"; nullopt for anything else (callers name the flag).
std::optional<Level> parse_level(std::string_view name);
void write(Level level, std::string_view msg, std::initializer_list<Field> fields = {});

inline void debug(std::string_view m, std::initializer_list<Field> f = {}) {
  write(Level::kDebug, m, f);
}
inline void info(std::string_view m, std::initializer_list<Field> f = {}) {
  write(Level::kInfo, m, f);
}
inline void warn(std::string_view m, std::initializer_list<Field> f = {}) {
  write(Level::kWarn, m, f);
}
inline void error(std::string_view m, std::initializer_list<Field> f = {}) {
  write(Level::kError, m, f);
}

}  // namespace wrenn::log
