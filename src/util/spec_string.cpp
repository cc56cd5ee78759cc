#include "ibn/spec_string.h"

#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdlib>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "ibn/error.h"

namespace ibn {

std::vector<std::string> split(const std::string& text, char separator) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    const size_t end = text.find(separator, start);
    parts.push_back(text.substr(start, end == std::string::npos ? std::string::npos : end - start));
    if (end == std::string::npos) return parts;
    start = end + 1;
  }
}

std::optional<int64_t> parse_integer(const std::string& text) {
  int64_t value = 0;
  const char* const last = text.data() + text.size();
  const auto [end, error] = std::from_chars(text.data(), last, value);
  if (text.empty() || error != std::errc() || end != last) return std::nullopt;
  return value;
}

std::optional<double> parse_number(const std::string& text) {
  // strtod skips leading blanks; parse_integer does not, and neither does this.
  if (text.empty() || std::isspace(static_cast<unsigned char>(text.front()))) return std::nullopt;
  char* end = nullptr;
  const double value = std::strtod(text.c_str(), &end);
  if (end != text.c_str() + text.size()) return std::nullopt;
  return value;
}

KeyValueSpec::KeyValueSpec(std::string text, std::string what)
    : text_(std::move(text)), what_(std::move(what)) {
  const size_t colon = text_.find(':');
  name_ = text_.substr(0, colon);
  if (colon == std::string::npos) return;
  size_t start = colon + 1;
  while (true) {
    const size_t end = text_.find_first_of(":,", start);
    const std::string part = text_.substr(start, end == std::string::npos ? std::string::npos : end - start);
    {
      const size_t eq = part.find('=');
      if (eq == std::string::npos) fail(fmt::format("'{}' is not key=value", part));
      const std::string key = part.substr(0, eq);
      const std::string value = part.substr(eq + 1);
      if (key.empty()) fail(fmt::format("'{}' has no key", part));
      if (values_.count(key)) fail(fmt::format("key '{}' given twice", key));
      if (value.empty()) fail(fmt::format("key '{}' has no value", key));
      values_[key] = value;
      ordered_.emplace_back(key, value);
    }
    if (end == std::string::npos) break;
    start = end + 1;
  }
}

void KeyValueSpec::fail(const std::string& what) const {
  throw UsageError(fmt::format("{} in {} '{}'", what, what_, text_));
}

const std::string* KeyValueSpec::raw(const std::string& key) {
  const auto it = values_.find(key);
  if (it == values_.end()) return nullptr;
  read_.insert(key);
  return &it->second;
}

double KeyValueSpec::number(const std::string& key, double fallback) {
  const std::string* value = raw(key);
  if (value == nullptr) return fallback;
  // An underflow (1e-320 is a denormal, 1e-400 rounds to 0) is a number all the same; an
  // overflow gives ±HUGE_VAL, refused as not finite.
  const std::optional<double> v = parse_number(*value);
  if (!v) fail(fmt::format("{}='{}' is not a number", key, *value));
  if (!std::isfinite(*v)) fail(fmt::format("{}='{}' is not a finite number", key, *value));
  return *v;
}

int64_t KeyValueSpec::integer(const std::string& key, int64_t fallback) {
  const std::string* value = raw(key);
  if (value == nullptr) return fallback;
  const std::optional<int64_t> v = parse_integer(*value);
  if (!v) fail(fmt::format("{}='{}' is not an integer", key, *value));
  return *v;
}

int64_t KeyValueSpec::integer_at_least(const std::string& key, int64_t fallback, int64_t low) {
  const int64_t v = integer(key, fallback);
  require_at_least(key, static_cast<double>(v), static_cast<double>(low));
  return v;
}

bool KeyValueSpec::boolean(const std::string& key, bool fallback) {
  const std::string* value = raw(key);
  if (value == nullptr) return fallback;
  if (*value == "true" || *value == "1" || *value == "yes") return true;
  if (*value == "false" || *value == "0" || *value == "no") return false;
  fail(fmt::format("{}='{}' is not a boolean; expected true or false", key, *value));
}

std::string KeyValueSpec::word(const std::string& key, const std::string& fallback,
                               const std::vector<std::string>& allowed) {
  const std::string* value = raw(key);
  if (value == nullptr) return fallback;
  for (const auto& a : allowed) {
    if (a == *value) return a;
  }
  fail(fmt::format("{}='{}' is not one of: {}", key, *value, fmt::join(allowed, ", ")));
}

std::string KeyValueSpec::text_value(const std::string& key, const std::string& fallback) {
  const std::string* value = raw(key);
  return value == nullptr ? fallback : *value;
}

void KeyValueSpec::require_at_least(const std::string& key, double value, double low) {
  if (value < low) fail(fmt::format("{}={} must be >= {}", key, value, low));
}

void KeyValueSpec::require_above(const std::string& key, double value, double low) {
  if (!(value > low)) fail(fmt::format("{}={} must be > {}", key, value, low));
}

void KeyValueSpec::require_within(const std::string& key, double value, double low, double high) {
  if (value < low || value > high) fail(fmt::format("{}={} must lie in [{}, {}]", key, value, low, high));
}

void KeyValueSpec::finish(const std::string& accepted) const {
  for (const auto& [key, value] : ordered_) {
    if (!read_.count(key)) fail(fmt::format("unknown key '{}'; {} accepts: {}", key, name_, accepted));
  }
}

}  // namespace ibn
