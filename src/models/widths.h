#pragma once
// "10-7-5" -> {10, 7, 5}: the widths key shared by the models.
#include <cstdint>
#include <string>
#include <vector>

namespace ibn {
class KeyValueSpec;
}

namespace ibn::models {

std::vector<int64_t> parse_widths(KeyValueSpec& kv, const std::string& fallback);

}  // namespace ibn::models
