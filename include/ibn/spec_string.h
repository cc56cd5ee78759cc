#pragma once
// Spec strings shared by every plug-in point: NAME[:KEY=VALUE]..., where pairs are separated by
// ':' or ',' (`ibnorm-t:lambda=2:area=batch`, `kde:var=0.1`, `gaussian:dx=5,dy=5,rho=0.8`).
// Split once; typed reads validate each value; finish() rejects keys nobody read. Every error
// is one ibn::UsageError line naming the offending part and the whole spec.
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "ibn/error.h"

namespace ibn {

// text split at every `separator`, empty parts kept ("a,,b" -> {"a", "", "b"}).
std::vector<std::string> split(const std::string& text, char separator);

// `text` as a base-10 integer when all of it is one within int64's range ("42", "-3"); nothing
// for "", " 4", "+4", "4x", "1e3" or 2^63. Every integer the tool reads from its user goes
// through here, so all of them accept and refuse the same texts.
std::optional<int64_t> parse_integer(const std::string& text);

// `text` as a number when all of it is one as strtod reads it ("0.5", "1e-3", "-2", "inf",
// "nan"); nothing for "", " 4" or "4x". Callers that need a finite value check it. Every
// floating-point number the tool reads from its user or its own files goes through here.
std::optional<double> parse_number(const std::string& text);

// The registry entry called `name`; otherwise ibn::UsageError "unknown <what> 'x'; expected one
// of: a, b, c". Entry needs a `name` member. Every registry's lookup goes through here.
template <typename Entry>
const Entry& find_named(const std::vector<Entry>& entries, const std::string& name, const std::string& what) {
  std::string names;
  for (const Entry& entry : entries) {
    if (entry.name == name) return entry;
    names += (names.empty() ? "" : ", ") + entry.name;
  }
  throw UsageError("unknown " + what + " '" + name + "'; expected one of: " + names);
}

class KeyValueSpec {
 public:
  // `what` names the kind of spec in errors: "norm spec", "estimator spec", "task spec".
  KeyValueSpec(std::string text, std::string what);

  const std::string& name() const { return name_; }
  const std::string& text() const { return text_; }
  bool has(const std::string& key) const { return values_.count(key) != 0; }

  // Typed reads: the value if the key is present, else the fallback. Marks the key as read.
  double number(const std::string& key, double fallback);
  int64_t integer(const std::string& key, int64_t fallback);
  bool boolean(const std::string& key, bool fallback);
  std::string word(const std::string& key, const std::string& fallback,
                   const std::vector<std::string>& allowed);
  std::string text_value(const std::string& key, const std::string& fallback);

  // An integer that must be at least `low`: the common case of counts and sizes.
  int64_t integer_at_least(const std::string& key, int64_t fallback, int64_t low);

  // Range checks for a value already read, with the spec's wording.
  void require_at_least(const std::string& key, double value, double low);
  void require_above(const std::string& key, double value, double low);
  void require_within(const std::string& key, double value, double low, double high);

  // Throws for the first key that was given but never read; `accepted` lists the valid keys.
  void finish(const std::string& accepted) const;

  [[noreturn]] void fail(const std::string& what) const;

  // find_named for this spec's name (or another name read from it), failing with the spec in
  // the message.
  template <typename Entry>
  const Entry& find_entry(const std::vector<Entry>& entries, const std::string& what) const {
    return find_entry(entries, what, name_);
  }
  template <typename Entry>
  const Entry& find_entry(const std::vector<Entry>& entries, const std::string& what, const std::string& name) const {
    try {
      return find_named(entries, name, what);
    } catch (const UsageError& e) {
      fail(e.what());
    }
  }

 private:
  const std::string* raw(const std::string& key);

  std::string text_;
  std::string what_;
  std::string name_;
  std::vector<std::pair<std::string, std::string>> ordered_;  // as given
  std::map<std::string, std::string> values_;
  std::set<std::string> read_;
};

}  // namespace ibn
