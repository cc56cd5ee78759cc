#pragma once
// Running a helper program (the Python scripts that draw figures and time peers).
#include <string>
#include <vector>

namespace ibn::io {

// Runs argv[0] (searched in PATH when it has no '/') with the arguments as they are, no shell
// between (paths and interpreter names are never parsed as commands), stdout and stderr into
// `log`. Returns the exit status, or -1 when the program could not be started or was killed.
int run_program(const std::vector<std::string>& argv, const std::string& log);

// The last non-empty line of a program's log ("" when there is none): the line that says why
// a helper failed.
std::string last_line(const std::string& log);

// The Python the project's scripts run under: Debian's /usr/bin/python3 when present (it has
// the packages scripts/debian-packages.txt installs), else python3 from PATH.
std::string python3();

}  // namespace ibn::io
