#pragma once
// The tables reports write (internal to src/report/): Markdown for report.md and repro.md, CSV
// lines for their data files.
#include <string>
#include <vector>

namespace ibn::report {

// A Markdown table from a header and rows of cells; every column after the first right-aligned.
std::string markdown_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows);

// One CSV line (with its newline), each cell quoted where it needs to be.
std::string csv_line(const std::vector<std::string>& cells);

}  // namespace ibn::report
