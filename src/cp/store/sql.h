// Small SQL helpers shared by the control plane's stores (src/cp/store).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace wrenn::cp::store {

// The platform team (seeded by sql/0001_init.sql).
inline constexpr std::string_view kPlatformTeamId = "team-0000000000000000000000000";

// An SQL expression rendering a timestamptz column as RFC 3339 UTC with second precision
// ("2026-05-01T12:00:00Z"), the API's timestamp format (reference §1.1). NULL stays NULL.
std::string ts(std::string_view column);

// A PostgreSQL text[] literal ('{"a","b"}') for a text-format parameter.
std::string text_array(const std::vector<std::string>& items);

// The elements of a JSON array of strings (array_to_json(col)::text); [] for "" or null.
std::vector<std::string> json_string_array(std::string_view json);

}  // namespace wrenn::cp::store
