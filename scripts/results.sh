#!/usr/bin/env bash
# Regenerates a committed report under results/: runs an experiment's sweep if it is not
# finished (a second run skips finished points), then copies its report: report.md, the
# figures, tables and CSV files. With --repro, runs `ibn repro` on the experiment instead (a
# second run skips what is finished there too) and copies repro.md, its CSV files and each
# platform's experiment file.
#
#   bash scripts/results.sh                                   # the main job -> results/default
#   bash scripts/results.sh experiments/cpu-text-gpt.ini      # -> results/cpu-text-gpt
#   bash scripts/results.sh --repro experiments/repro.ini     # -> results/repro
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
repro=false
if [ "${1:-}" = --repro ]; then
  repro=true
  shift
fi
experiment=$(realpath "${1:-$root/experiments/default.ini}")  # before the cd: relative to where it was given
cd "$root"
name=$(basename "$experiment" .ini)
if [ "$repro" = true ]; then
  out=runs/$name-platforms
  bash "$root/scripts/setup.sh"
  IBN_BUILD_TARGET=ibn_cli bash "$root/scripts/build.sh"
  # Named relative to the checkout: the report and the platforms' files print the name.
  "$root/build/ibn" repro "$(realpath --relative-to="$root" "$experiment")" -j "$(nproc)" --out "$out"
  report=$out
  keep=(repro.md repro.csv repro_values.csv 'platforms/*.ini')
else
  out=runs/$name
  if [ "$name" = default ]; then
    bash "$root/scripts/main.sh" --out "$out"
  else
    bash "$root/scripts/setup.sh"
    IBN_BUILD_TARGET=ibn_cli bash "$root/scripts/build.sh"
    "$root/build/ibn" sweep "$experiment" -j "$(nproc)" --out "$out"
  fi
  report=$out/report
  keep=(.)
fi
# Written beside the old copy, then swapped in: a failure leaves the committed one whole.
trap 'rm -rf "$root/results/.$name.new"' EXIT
rm -rf "$root/results/.$name.new"
mkdir -p "$root/results/.$name.new"
# keep holds globs (platforms/*.ini), expanded in the report's directory.
(cd "$report" && shopt -s failglob && cp -r --parents ${keep[@]} "$root/results/.$name.new/")
rm -f "$root/results/.$name.new/data/plot.log"
rm -rf "$root/results/$name"
mv "$root/results/.$name.new" "$root/results/$name"
echo "$root/results/$name/$([ "$repro" = true ] && echo repro.md || echo report.md)"
