#!/usr/bin/env bash
# The README's main command: installs what is missing, builds, and runs the main job.
# Until the training and report pipeline lands, the main job prints the variance-contraction
# table (SPEC section 3) of every normalizer on Gaussian input.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/scripts/setup.sh"
bash "$root/scripts/build.sh"
"$root/build/ibn" contraction "$@"
