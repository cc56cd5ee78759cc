#pragma once
// CSV fields as RFC 4180 quotes them (and Python's csv module reads them): a field holding a
// comma, a quote or a newline is quoted, its quotes doubled. Grid values (`list:0,5`), labels
// and estimator specs can hold commas.
#include <string>
#include <vector>

namespace ibn::io {

std::string csv_field(const std::string& text);
// One line into its fields, quotes removed.
std::vector<std::string> csv_fields(const std::string& line);

}  // namespace ibn::io
