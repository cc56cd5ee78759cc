#include "widths.h"

#include <cstdlib>

#include <fmt/format.h>

#include "ibn/spec_string.h"

namespace ibn::models {

std::vector<int64_t> parse_widths(KeyValueSpec& kv, const std::string& fallback) {
  const std::string text = kv.text_value("widths", fallback);
  std::vector<int64_t> widths;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t end = text.find('-', start);
    const std::string word = text.substr(start, end == std::string::npos ? std::string::npos : end - start);
    char* stop = nullptr;
    const long long w = std::strtoll(word.c_str(), &stop, 10);
    if (word.empty() || *stop != '\0' || w < 1) {
      kv.fail(fmt::format("widths='{}' is not a list of positive integers like 10-7-5", text));
    }
    widths.push_back(w);
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return widths;
}

}  // namespace ibn::models
