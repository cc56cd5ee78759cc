#include "ibn/io/csv.h"

#include <cstdlib>

#include <fmt/format.h>

#include "ibn/error.h"
#include "ibn/spec_string.h"

namespace ibn::io {

std::string csv_field(const std::string& text) {
  if (text.find_first_of(",\"\n") == std::string::npos) return text;
  std::string out = "\"";
  for (const char c : text) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

std::vector<std::string> csv_fields(const std::string& line) {
  std::vector<std::string> fields(1);
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted && c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
      fields.back() += '"';
      ++i;
    } else if (c == '"') {
      quoted = !quoted;
    } else if (c == ',' && !quoted) {
      fields.emplace_back();
    } else {
      fields.back() += c;
    }
  }
  return fields;
}

double csv_number(const std::string& field, const std::string& where) {
  const std::optional<double> v = parse_number(field);
  if (!v) throw DataError(fmt::format("{}: '{}' is not a number", where, field));
  return *v;
}

int64_t csv_integer(const std::string& field, const std::string& where) {
  const std::optional<int64_t> v = parse_integer(field);
  if (!v) throw DataError(fmt::format("{}: '{}' is not an integer", where, field));
  return *v;
}

}  // namespace ibn::io
