#!/usr/bin/env bash
# ibn repro as a user runs it, on a tiny grid (one normalizer, two seeds, 3 epochs) on three
# platforms: t1-fp32, its rerun, and t1-fp64. The report exists; the rerun is bit-identical to
# t1-fp32 and float64 is not, both as repro.md says and as the runs' own files show; every
# spread in repro.csv equals one computed here from the runs' activations.h5 and analysis.h5;
# a second call runs nothing and the same files come out; flagged runs are left out and counted.
# Run by CTest with IBN pointing at the binary.
set -u
IBN=${IBN:?set IBN to the ibn binary}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
passes=0
check() {  # check "what" COMMAND...: passes when the command succeeds
  local what=$1
  shift
  if "$@"; then passes=$((passes + 1)); else echo "FAIL: $what"; failures=$((failures + 1)); fi
}

tiny_ini() {  # tiny_ini REPORT_LINES: the grid with that [report] section
  cat <<INI
[sweep]
name = tiny
out = $work/tiny
[grid]
norm = layernorm
seed = 0 | 1
[train]
epochs = 3
batch = 128
dump-epochs = list:0,3
checkpoint-every = 0
[analyze]
estimator = binning:bins=10
estimator = kde:var=0.1
max-samples = 400
[report]
$1
INI
}
# 3 epochs: runs may be at chance or still moving; the spreads are checked against every run.
tiny_ini "include-flagged = true" >"$work/tiny.ini"
platforms=t1-fp32,t1-fp32-rerun,t1-fp64
out=$work/tiny-platforms  # the default: [sweep] out + -platforms

"$IBN" repro "$work/tiny.ini" --platforms "$platforms" -j 2 >"$work/first.out" 2>&1
status=$?
[ "$status" -eq 0 ] || tail -20 "$work/first.out"
check "ibn repro exits 0 (exit $status)" test "$status" -eq 0
check "repro.md, repro.csv and repro_values.csv are written" test -s "$out/repro.md" -a -s "$out/repro.csv" -a -s "$out/repro_values.csv"
check "it prints the report's path" grep -q "tiny-platforms/repro.md$" "$work/first.out"
check "each platform ran its two points" test "$(ls "$out"/platforms/*/points/*/done | wc -l)" -eq 6
check "repro.md says the rerun reproduced t1-fp32 bit for bit" \
  grep -q "t1-fp32-rerun reproduced t1-fp32 bit for bit: all 2 runs identical" "$out/repro.md"
check "repro.md says float64 is not bit-identical" grep -q "t1-fp64 against t1-fp32: 0 of 2 runs bit-identical" "$out/repro.md"
check "repro.md prints each platform's settings" grep -q "| t1-fp64 | threads = 1, dtype = float64, device = cpu | 1 | float64 | cpu |" "$out/repro.md"

/usr/bin/python3 - "$out" >"$work/spreads.out" 2>&1 <<'PY'
import csv, math, os, sys
import h5py
import numpy as np
import scipy.stats

out = sys.argv[1]
platforms = ["t1-fp32", "t1-fp32-rerun", "t1-fp64"]
spread_platforms = ["t1-fp32", "t1-fp64"]  # the rerun repeats t1-fp32: not a platform of its own
points = sorted(os.listdir(os.path.join(out, "platforms", "t1-fp32", "points")))
points = [p for p in points if not p.startswith(".")]
assert len(points) == 2, points

def run_values(run):
    """Every quantity of one run, read from its own files: (symbol, estimator, layer) -> value."""
    v = {}
    with h5py.File(os.path.join(run, "activations.h5"), "r") as f:
        v[("test_accuracy", "", "")] = float(f["metrics/test_accuracy"][-1])
        v[("test_loss", "", "")] = float(f["metrics/test_loss"][-1])
        kappa_epochs = f["contraction"]
        with h5py.File(os.path.join(run, "analysis.h5"), "r") as a:
            rows = {k: a["rows"][k][...] for k in a["rows"]}
            totals = {k: a["totals"][k][...] for k in a["totals"]}
            estimators = a.attrs["estimators"].split("\n")
            layers = a.attrs["layers"].split(",")
        last = int(rows["epoch"].max())
        for e, spec in enumerate(estimators):
            for l, layer in enumerate(layers):
                at = (rows["epoch"] == last) & (rows["estimator_index"] == e) & (rows["layer_index"] == l)
                assert at.sum() == 1, (run, spec, layer, at.sum())
                v[("I_XT", spec, layer)] = float(rows["I_XT"][at][0])
                v[("I_TY", spec, layer)] = float(rows["I_TY"][at][0])
            at = (totals["epoch"] == last) & (totals["estimator_index"] == e)
            for symbol, column in (("I_TY_chain", "I_TY"), ("I_prev_chain", "I_prev"), ("IB_chain", "IB")):
                v[(symbol, spec, "")] = float(totals[column][at][0])
        for site in kappa_epochs[str(last)]:
            v[("kappa", "", site)] = float(kappa_epochs[str(last)][site][0])
    return v

values = {(p, point): run_values(os.path.join(out, "platforms", p, "points", point)) for p in platforms for point in points}

def pooled(groups):
    groups = [np.asarray(g, dtype=float) for g in groups if len(g) >= 2]
    dof = sum(len(g) - 1 for g in groups)
    if dof == 0:
        return math.nan, 0, 0
    return math.sqrt(sum(((g - g.mean()) ** 2).sum() for g in groups) / dof), len(groups), dof


with open(os.path.join(out, "repro.csv"), newline="") as f:
    table = list(csv.DictReader(f))
keys = {(r["quantity"], r["estimator"], r["layer"]) for r in table}
assert keys == set(values[("t1-fp32", points[0])]), sorted(keys ^ set(values[("t1-fp32", points[0])]))
fp64_identical = 0
for r in table:
    key = (r["quantity"], r["estimator"], r["layer"])
    by_point = [[values[(p, point)][key] for p in spread_platforms] for point in points]
    by_seed = [[values[(p, point)][key] for point in points] for p in spread_platforms]  # one setting
    platform_sd, platform_points, platform_dof = pooled(by_point)
    seed_sd, seed_groups, seed_dof = pooled(by_seed)
    mean = np.mean([x for g in by_point for x in g])
    for name, ours, theirs in (("platform_sd", platform_sd, r["platform_sd"]), ("seed_sd", seed_sd, r["seed_sd"]),
                               ("mean", mean, r["mean"])):
        assert math.isclose(ours, float(theirs), rel_tol=1e-9, abs_tol=1e-12 * abs(mean)), (key, name, ours, theirs)
    assert int(r["platform_points"]) == platform_points == 2 and int(r["seed_groups"]) == seed_groups == 2, (key, r)
    rounding = max(platform_sd, seed_sd) <= 1e-12 * abs(mean)  # the last bits of double sums, not runs that differ
    low = high = math.nan
    if platform_dof == 0 or not (seed_sd > 0) or rounding:
        assert r["ratio_low"] == "nan" and r["ratio_high"] == "nan", (key, r["ratio_low"], r["ratio_high"])
    if seed_sd > 0 and not rounding:
        ratio = platform_sd / seed_sd
        assert math.isclose(ratio, float(r["ratio"]), rel_tol=1e-9), (key, r["ratio"])
        if platform_dof > 0:  # the 95 % interval of the SD ratio from scipy's F quantiles
            low = math.sqrt(ratio ** 2 / scipy.stats.f.ppf(0.975, platform_dof, seed_dof))
            high = math.sqrt(ratio ** 2 / scipy.stats.f.ppf(0.025, platform_dof, seed_dof))
            assert math.isclose(low, float(r["ratio_low"]), rel_tol=1e-6), (key, low, r["ratio_low"])
            assert math.isclose(high, float(r["ratio_high"]), rel_tol=1e-6), (key, high, r["ratio_high"])
    else:
        assert r["ratio"] == "nan", (key, r["ratio"])
    if rounding:
        larger = "rounding"
    elif platform_sd == 0:
        larger = "seeds"
    elif seed_sd == 0:
        larger = "platforms"
    else:
        larger = "platforms" if low > 1 else "seeds" if high < 1 else "neither"
    assert r["larger"] == larger, (key, r["larger"], larger)
    # The rerun, bit for bit in the runs' own files, and marked so; float64 marked only where it is.
    assert all(values[("t1-fp32", p)][key] == values[("t1-fp32-rerun", p)][key] for p in points), key
    same64 = all(values[("t1-fp32", p)][key] == values[("t1-fp64", p)][key] for p in points)
    fp64_identical += same64
    groups = r["bit_identical"].split(";")
    expected = "t1-fp32=t1-fp32-rerun=t1-fp64" if same64 else "t1-fp32=t1-fp32-rerun"
    assert expected in groups, (key, r["bit_identical"], expected)
# Binned MI can come out the same in float64 (it counts bins); the continuous quantities cannot.
for quantity, estimator in (("test_loss", ""), ("I_TY_chain", "kde")):
    row = next(r for r in table if r["quantity"] == quantity and r["estimator"].startswith(estimator))
    key = (row["quantity"], row["estimator"], row["layer"])
    assert "t1-fp64" not in row["bit_identical"], row
    assert values[("t1-fp32", points[0])][key] != values[("t1-fp64", points[0])][key], key
print(len(table), "quantities checked;", fp64_identical, "identical in float64 and float32")
PY
status=$?
[ "$status" -eq 0 ] || cat "$work/spreads.out"
check "repro.csv's spreads and identity marks equal those of the runs' own files" test "$status" -eq 0

# A second call runs nothing and writes the same numbers.
cp "$out/repro.csv" "$work/first.csv"
"$IBN" repro "$work/tiny.ini" --platforms "$platforms" -j 2 >"$work/second.out" 2>&1
check "the second call runs nothing (every platform: 2 done before, 0 to run)" \
  test "$(grep -c "2 done before, 0 to run" "$work/second.out")" -eq 3
check "the second call writes the same repro.csv" cmp -s "$work/first.csv" "$out/repro.csv"

# Flagged runs are left out and counted: at converged-tolerance 0 every run is unconverged.
tiny_ini "converged-tolerance = 0" >"$work/tiny.ini"
"$IBN" repro "$work/tiny.ini" --platforms "$platforms" -j 2 >"$work/flagged.out" 2>&1
check "flagged runs: the report is still written (exit $?)" grep -q "tiny-platforms/repro.md$" "$work/flagged.out"
check "flagged runs are counted" grep -q "0 runs did not finish and 6 were flagged; they are left out of the spreads" "$out/repro.md"
check "flagged runs are listed" test "$(grep -c "flagged .*unconverged" "$out/repro.md")" -eq 6
check "flagged runs enter no spread" \
  /usr/bin/python3 -c "import csv,sys; rows=list(csv.DictReader(open(sys.argv[1]))); sys.exit(any(r['platform_points'] != '0' or r['values'] != '0' for r in rows))" \
  "$out/repro.csv"

echo "$passes passed, $failures failed"
[ "$failures" -eq 0 ]
