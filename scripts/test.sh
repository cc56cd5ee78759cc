#!/usr/bin/env bash
# The README's test command: installs what is missing, builds, and runs every test with CTest.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/scripts/setup.sh"
bash "$root/scripts/build.sh"
start=$(date +%s)
(cd "$root/build" && ctest --output-on-failure -j "$(nproc)")
echo "test: ctest took $(($(date +%s) - start)) s"
# The same code under AddressSanitizer and UndefinedBehaviorSanitizer (its own build directory).
bash "$root/scripts/sanitize.sh"
