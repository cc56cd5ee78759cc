#pragma once
// The one .ini reader: `--config` files, experiment files and a run's config.ini all go
// through it. The dialect is Boost.Program_options': `[section]` lines, `key = value` lines
// (spaces around both trimmed), '#' starts a comment, blank lines ignored.
#include <map>
#include <string>
#include <vector>

namespace ibn::io {

struct IniEntry {
  std::string section;  // "" before the first [section]
  std::string key, value;
  int line = 0;
};

// The entries of .ini text in order; ibn::UsageError "ORIGIN:LINE: ..." for a malformed line.
std::vector<IniEntry> parse_ini(const std::string& text, const std::string& origin);

// The same for a file; ibn::UsageError when it cannot be read or is a directory.
std::vector<IniEntry> read_ini_file(const std::string& path);

// `s` without leading and trailing blanks (spaces, tabs, carriage returns).
std::string trim(const std::string& s);

// key -> value of every entry (the last one wins), sections ignored: a run's config.ini.
std::map<std::string, std::string> ini_values(const std::string& text, const std::string& origin);

}  // namespace ibn::io
