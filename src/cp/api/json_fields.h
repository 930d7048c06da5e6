// Reading fields of a request's JSON object with the API's error for bad input (ApiError
// invalid_request naming the field). Absent and null fields give the default.
#pragma once

#include <boost/json.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "api/api_error.h"

namespace wrenn::cp::json_fields {

inline std::optional<std::string> opt_string(const boost::json::object& o, std::string_view key,
                                             std::size_t max_len = 1024) {
  auto it = o.find(key);
  if (it == o.end() || it->value().is_null()) return std::nullopt;
  if (!it->value().is_string())
    throw ApiError(ApiCode::kInvalidRequest, std::string(key) + " must be a string");
  const auto& s = it->value().as_string();
  if (s.size() > max_len)
    throw ApiError(ApiCode::kInvalidRequest,
                   std::string(key) + " is longer than " + std::to_string(max_len) + " bytes");
  return std::string(s);
}

inline std::string string_or(const boost::json::object& o, std::string_view key,
                             std::string def = {}, std::size_t max_len = 1024) {
  auto v = opt_string(o, key, max_len);
  return v ? *v : def;
}

inline std::int64_t int_or(const boost::json::object& o, std::string_view key, std::int64_t def,
                           std::int64_t min, std::int64_t max) {
  auto it = o.find(key);
  if (it == o.end() || it->value().is_null()) return def;
  const auto& v = it->value();
  std::optional<std::int64_t> n;
  if (v.is_int64()) n = v.as_int64();
  if (v.is_uint64() && v.as_uint64() <= static_cast<std::uint64_t>(INT64_MAX))
    n = static_cast<std::int64_t>(v.as_uint64());
  if (v.is_double() &&
      v.as_double() == static_cast<double>(static_cast<std::int64_t>(v.as_double())))
    n = static_cast<std::int64_t>(v.as_double());
  if (!n || *n < min || *n > max)
    throw ApiError(ApiCode::kInvalidRequest, std::string(key) + " must be an integer from " +
                                                 std::to_string(min) + " to " +
                                                 std::to_string(max));
  return *n;
}

inline std::vector<std::string> string_list(const boost::json::object& o, std::string_view key,
                                            std::size_t max_items, std::size_t max_len) {
  std::vector<std::string> out;
  auto it = o.find(key);
  if (it == o.end() || it->value().is_null()) return out;
  if (!it->value().is_array())
    throw ApiError(ApiCode::kInvalidRequest, std::string(key) + " must be an array of strings");
  for (const auto& e : it->value().as_array()) {
    if (!e.is_string() || e.as_string().size() > max_len || out.size() >= max_items)
      throw ApiError(ApiCode::kInvalidRequest, std::string(key) + " must be an array of at most " +
                                                   std::to_string(max_items) +
                                                   " strings of at most " +
                                                   std::to_string(max_len) + " bytes");
    out.emplace_back(e.as_string());
  }
  return out;
}

}  // namespace wrenn::cp::json_fields
