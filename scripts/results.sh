#!/usr/bin/env bash
# Regenerates results/ (the committed report of experiments/default.ini): runs the main job if
# its sweep is not finished, then copies report.md, the figures, tables and CSV files.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
sweep=${1:-runs/default}
bash "$root/scripts/main.sh" --out "$sweep"
rm -rf "$root/results/default"
mkdir -p "$root/results/default"
cp -r "$sweep/report/." "$root/results/default/"
rm -f "$root/results/default/data/plot.log"
echo "$root/results/default/report.md"
