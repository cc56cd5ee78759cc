#include "ibn/io/ini.h"

#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>

#include <fmt/format.h>

#include "ibn/error.h"

namespace ibn::io {

std::string trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t\r");
  if (a == std::string::npos) return "";
  return s.substr(a, s.find_last_not_of(" \t\r") - a + 1);
}

std::vector<IniEntry> parse_ini(const std::string& text, const std::string& origin) {
  std::istringstream in(text);
  std::vector<IniEntry> entries;
  std::string section, raw;
  for (int line = 1; std::getline(in, raw); ++line) {
    const std::string content = trim(raw.substr(0, raw.find('#')));
    if (content.empty()) continue;
    if (content.front() == '[') {
      if (content.back() != ']') throw UsageError(fmt::format("{}:{}: malformed section '{}'", origin, line, content));
      section = trim(content.substr(1, content.size() - 2));
      continue;
    }
    const size_t eq = content.find('=');
    if (eq == std::string::npos || trim(content.substr(0, eq)).empty()) {
      throw UsageError(fmt::format("{}:{}: expected 'key = value', found '{}'", origin, line, content));
    }
    entries.push_back({section, trim(content.substr(0, eq)), trim(content.substr(eq + 1)), line});
  }
  return entries;
}

std::vector<IniEntry> read_ini_file(const std::string& path) {
  std::error_code error;
  // A directory opens as a stream that reads nothing: it would pass as an empty file.
  if (std::filesystem::is_directory(path, error)) throw UsageError(fmt::format("'{}' is a directory, not an .ini file", path));
  std::ifstream in(path);
  if (!in) throw UsageError(fmt::format("cannot open '{}'", path));
  return parse_ini(std::string(std::istreambuf_iterator<char>(in), {}), path);
}

std::map<std::string, std::string> ini_values(const std::string& text, const std::string& origin) {
  std::map<std::string, std::string> out;
  for (const IniEntry& e : parse_ini(text, origin)) out[e.key] = e.value;
  return out;
}

}  // namespace ibn::io
