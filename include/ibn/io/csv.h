#pragma once
// CSV fields as RFC 4180 quotes them (and Python's csv module reads them): a field holding a
// comma, a quote or a newline is quoted, its quotes doubled. Grid values (`list:0,5`), labels
// and estimator specs can hold commas.
#include <cstdint>
#include <string>
#include <vector>

namespace ibn::io {

std::string csv_field(const std::string& text);
// One line into its fields, quotes removed.
std::vector<std::string> csv_fields(const std::string& line);

// A field read back as a number; ibn::DataError naming `where` (a file and line, or a file and
// key) when it is not one. "nan" reads as NaN.
double csv_number(const std::string& field, const std::string& where);
int64_t csv_integer(const std::string& field, const std::string& where);

}  // namespace ibn::io
