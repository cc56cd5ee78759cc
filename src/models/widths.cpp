#include "widths.h"

#include <cstdlib>

#include <fmt/format.h>

#include "ibn/spec_string.h"

namespace ibn::models {

std::vector<int64_t> parse_widths(KeyValueSpec& kv, const std::string& fallback) {
  const std::string text = kv.text_value("widths", fallback);
  std::vector<int64_t> widths;
  for (const std::string& word : split(text, '-')) {
    const std::optional<int64_t> w = parse_integer(word);
    if (!w || *w < 1) kv.fail(fmt::format("widths='{}' is not a list of positive integers like 10-7-5", text));
    widths.push_back(*w);
  }
  return widths;
}

}  // namespace ibn::models
