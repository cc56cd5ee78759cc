#!/usr/bin/env bash
# The README's main command: installs what is missing, builds, and runs the main job, the
# default experiment (experiments/default.ini: ibsgd12, layernorm against IBNorm-S/L/T at three
# λ, five seeds, binning and KDE over the representation chain) end to end, ending with the
# path of its report.
# Extra arguments go to `ibn sweep` (e.g. --out DIR, -j 4). A second run skips finished points.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/scripts/setup.sh"
IBN_BUILD_TARGET=ibn_cli bash "$root/scripts/build.sh"  # the tests are not needed here
cd "$root"
"$root/build/ibn" sweep experiments/default.ini -j "$(nproc)" "$@"
