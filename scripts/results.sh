#!/usr/bin/env bash
# Regenerates a committed report under results/: runs an experiment's sweep if it is not
# finished (a second run skips finished points), then copies its report: report.md, the
# figures, tables and CSV files.
#
#   bash scripts/results.sh                                   # the main job -> results/default
#   bash scripts/results.sh experiments/cpu-text-gpt.ini      # -> results/cpu-text-gpt
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
experiment=$(realpath "${1:-$root/experiments/default.ini}")  # before the cd: relative to where it was given
cd "$root"
name=$(basename "$experiment" .ini)
sweep=runs/$name
if [ "$name" = default ]; then
  bash "$root/scripts/main.sh" --out "$sweep"
else
  bash "$root/scripts/setup.sh"
  IBN_BUILD_TARGET=ibn_cli bash "$root/scripts/build.sh"
  "$root/build/ibn" sweep "$experiment" -j "$(nproc)" --out "$sweep"
fi
# Written beside the old copy, then swapped in: a failure leaves the committed one whole.
trap 'rm -rf "$root/results/.$name.new"' EXIT
rm -rf "$root/results/.$name.new"
mkdir -p "$root/results/.$name.new"
cp -r "$sweep/report/." "$root/results/.$name.new/"
rm -f "$root/results/.$name.new/data/plot.log"
rm -rf "$root/results/$name"
mv "$root/results/.$name.new" "$root/results/$name"
echo "$root/results/$name/report.md"
