#!/usr/bin/env bash
# ibn sweep / analyze / report as a user runs them, on a tiny grid: shards cover every point
# once, a killed sweep resumes (finished points skipped, the killed one redone from scratch),
# a failed point is recorded while the others go on, the report holds every figure and the
# analysis files' numbers, and the notebook executes on the same sweep.
# Run by CTest with IBN pointing at the binary and REPO at the source tree.
set -u
IBN=${IBN:?set IBN to the ibn binary}
REPO=${REPO:?set REPO to the source tree}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
passes=0
check() {  # check "what" COMMAND...: passes when the command succeeds
  local what=$1
  shift
  if "$@"; then passes=$((passes + 1)); else echo "FAIL: $what"; failures=$((failures + 1)); fi
}

cat >"$work/tiny.ini" <<'INI'
[sweep]
name = tiny
[grid]
norm = layernorm | ibnorm-t
lambda = 0.5 | 1
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
# 3 epochs: runs may still be at chance; the tables are checked against every run
include-flagged = true
INI

# Shards: each point runs in exactly one shard; the shard that finishes the grid writes the report.
for i in 0 1 2; do "$IBN" sweep "$work/tiny.ini" --out "$work/s" --shard "$i/3" >"$work/shard$i.out" 2>&1; done
check "every point done exactly once across the shards" \
  test "$(cat "$work"/shard*.out | grep -E '^\[[0-9]+/[0-9]+\] .* done' | awk '{print $2}' | sort | uniq -c | awk '$1 == 1' | wc -l)" -eq 6
check "the first shards wait for the others before the report" grep -q "of 6 points done; the report waits" "$work/shard0.out"
check "the last shard writes the report" grep -q "s/report/report.md$" "$work/shard2.out"
check "status lists six finished points" bash -c "'$IBN' sweep '$work/tiny.ini' --out '$work/s' --status | grep -q '^6 done, 0 failed, 0 pending'"

# The report: every figure in PNG and PDF, the LaTeX table, and numbers equal to the runs' own.
for f in curves info_plane_0_binning info_plane_1_kde mi_xt_vs_epoch_0_binning mi_ty_vs_epoch_1_kde ib_vs_beta_0_binning ib_vs_beta_1_kde ib_vs_lambda accuracy_vs_lambda contraction_vs_lambda; do
  check "figure $f.png and $f.pdf exist and are not empty" test -s "$work/s/report/$f.png" -a -s "$work/s/report/$f.pdf"
done
check "report.md and table_comparison.tex exist" test -s "$work/s/report/report.md" -a -s "$work/s/report/table_comparison.tex"
/usr/bin/python3 - "$work/s" >"$work/tables.out" 2>&1 <<'PY'
import csv, glob, os, sys
import h5py
sweep = sys.argv[1]
def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
table = {r["label"]: r for r in rows(os.path.join(sweep, "report/data/table_comparison.csv"))}
assert set(table) == {"layernorm", "ibnorm-t λ=0.5", "ibnorm-t λ=1"}, table.keys()
for label, point_prefix in (("layernorm", "layernorm_"), ("ibnorm-t λ=0.5", "ibnorm-t_lambda0.5_"), ("ibnorm-t λ=1", "ibnorm-t_lambda1_")):
    points = sorted(glob.glob(os.path.join(sweep, "points", point_prefix + "seed*")))
    assert len(points) == 2, points
    acc = [float(rows(os.path.join(p, "metrics.csv"))[-1]["test_accuracy"]) for p in points]
    assert abs(float(table[label]["acc_mean"]) - sum(acc) / 2) < 1e-6, (label, acc)
    totals = []
    for p in points:
        with h5py.File(os.path.join(p, "analysis.h5"), "r") as f:
            r = {k: f["rows"][k][...] for k in f["rows"]}
            assert f.attrs["chain"] == "fc1,fc2,fc3,fc4,fc5,logits", f.attrs["chain"]
        last = r["epoch"].max()
        chosen = (r["epoch"] == last) & (r["estimator_index"] == 0) & (r["in_chain"] == 1)
        assert chosen.sum() == 6, chosen.sum()  # one per block and the logits
        totals.append(float(r["IB"][chosen].sum()))
    assert abs(float(table[label]["IB_0_mean"]) - sum(totals) / 2) < 1e-5, (label, totals, table[label])
    assert f"{sum(acc) / 2:.4f}" in open(os.path.join(sweep, "report/table_comparison.tex")).read()
    assert int(table[label]["runs"]) == 2
report = open(os.path.join(sweep, "report/report.md")).read()
for needle in ("p (paired t)", "p Holm", "ψ(z) = tanh(λz)/λ", "β = 1", "untuned", "is infinite"):
    assert needle in report, needle
PY
status=$?
[ "$status" -eq 0 ] || cat "$work/tables.out"
check "the tables hold the numbers of the analysis and metrics files" test "$status" -eq 0

# [tune] and kappa: every setting gets the same tuning runs on a validation split; the grid's
# points run at the rate with the lowest mean final validation loss; the report states the
# budget, the choices and the generalization gap. A rate with a failed tuning run is never
# chosen, and grid points that ran at a rate tuning no longer chooses run again.
cat >"$work/tuned.ini" <<'INI'
[grid]
norm = layernorm | ibnorm-t
kappa = 0.5
seed = 0 | 1
[train]
data = ibsgd12:split_seed=0
epochs = 3
batch = 128
dump-epochs = list:0,3
checkpoint-every = 0
[tune]
lr = 0.003 | 0.03
seeds = 2
validation = 0.2
epochs = 2
[analyze]
estimator = binning:bins=10
max-samples = 400
[report]
include-flagged = true
figures = false
INI
"$IBN" sweep "$work/tuned.ini" --out "$work/t" -j 2 >"$work/tuned.out" 2>&1
check "the tuned sweep ran (exit $?)" grep -q "t/report/report.md$" "$work/tuned.out"
check "eight tuning points ran before the grid" test "$(ls "$work"/t/tune/*/done | wc -l)" -eq 8
tuning_check() {  # tuning_check FAILED_DIR: the choices agree with the tuning runs' own metrics
  /usr/bin/python3 - "$work/t" "${1:-}" <<'PY'
import csv, glob, os, sys
sweep, failed = sys.argv[1], sys.argv[2]
def last(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))[-1]
def config_lr(run):
    return [l.split("=", 1)[1].strip() for l in open(os.path.join(run, "config.ini")) if l.startswith("lr =")][0]
table = {r["label"]: r for r in csv.DictReader(open(os.path.join(sweep, "report/data/table_comparison.csv"), newline=""))}
report = open(os.path.join(sweep, "report/report.md")).read()
assert "## Tuning" in report and "2 learning rates (0.003, 0.03) × 2 tuning seeds (seeds 1000–1001) × 2 epochs" in report, report
for setting, label in (("layernorm", "layernorm"), ("ibnorm-t_kappa0.5", "ibnorm-t κ=0.5")):
    means = {}
    for rate in ("0.003", "0.03"):
        runs = sorted(glob.glob(os.path.join(sweep, "tune", f"{setting}_lr{rate}_seed100*")))
        assert len(runs) == 2, runs
        for run in runs:
            assert config_lr(run) == rate and "validation = 0.2" in open(os.path.join(run, "config.ini")).read()
        if any(os.path.exists(os.path.join(r, "failed")) for r in runs):
            continue
        means[rate] = sum(float(last(os.path.join(r, "metrics.csv"))["test_loss"]) for r in runs) / 2
    chosen = min(means, key=means.get)
    points = sorted(glob.glob(os.path.join(sweep, "points", setting + "_seed*")))
    assert len(points) == 2, points
    assert [config_lr(p) for p in points] == [chosen] * 2, (setting, chosen, [config_lr(p) for p in points])
    assert table[label]["lr"] == chosen and table[label]["tuned"] == "tuned", table[label]
    gaps = [float(last(os.path.join(p, "metrics.csv"))["train_accuracy"]) - float(last(os.path.join(p, "metrics.csv"))["test_accuracy"]) for p in points]
    assert abs(float(table[label]["gap_acc_mean"]) - sum(gaps) / 2) < 1e-6, (gaps, table[label]["gap_acc_mean"])
    assert f"| {label} | 2 | {chosen} (tuned) |" in report, label
if failed:
    assert "(1 of 2 diverged)" in report, report
print("chosen rates match the tuning runs")
PY
}
check "the chosen rates, the grid's rates and the gap agree with the runs" tuning_check
cp "$work/t/report/report.md" "$work/tuned-report.md"
"$IBN" report "$work/t" --no-figures >/dev/null 2>&1
check "ibn report reads the same tuning from the sweep directory" \
  diff <(sed -n '/^## Tuning/,/^## Comparisons/p' "$work/tuned-report.md") <(sed -n '/^## Tuning/,/^## Comparisons/p' "$work/t/report/report.md")
chosen=$(sed -n 's/^lr = //p' "$work/t/points/layernorm_seed0/config.ini")
failed_dir=$(ls -d "$work/t/tune/layernorm_lr${chosen}_seed1000")
rm "$failed_dir/done" && echo "train: ibn: error: the training loss became NaN" >"$failed_dir/failed"
"$IBN" sweep "$work/tuned.ini" --out "$work/t" -j 2 >"$work/retuned.out" 2>&1
check "a failed tuning run is a result, not retried" test -e "$failed_dir/failed" -a ! -e "$failed_dir/done"
check "grid points that ran at the old rate run again" grep -q "layernorm_seed0 ran at lr $chosen but tuning now chooses" "$work/retuned.out"
check "and the other points are kept" grep -q "4 points, 2 done before, 2 to run" "$work/retuned.out"
check "the rate with a diverged run is not chosen, and the report says it diverged" tuning_check "$failed_dir"
# A tuning run that failed for another reason (killed, disk full) is a fault: retried.
other_dir=$(ls -d "$work"/t/tune/ibnorm-t_kappa0.5_lr*_seed1001 | head -1)
rm "$other_dir/done" && echo "train: killed by signal 9" >"$other_dir/failed"
"$IBN" sweep "$work/tuned.ini" --out "$work/t" -j 2 --no-report >"$work/retried.out" 2>&1
check "a tuning run that failed other than by diverging is retried" test -e "$other_dir/done" -a ! -e "$other_dir/failed"
check "and only it ran" grep -q "tuning: 8 points (2 rates x 2 seeds per setting), 1 to run" "$work/retried.out"

# Two shards started together share the tuning (each point run once, under its lock), both
# wait for it, choose the same rates, and split the grid.
"$IBN" sweep "$work/tuned.ini" --out "$work/t2" --shard 0/2 >"$work/tshard0.out" 2>&1 &
first=$!
"$IBN" sweep "$work/tuned.ini" --out "$work/t2" --shard 1/2 >"$work/tshard1.out" 2>&1
second_code=$?
wait "$first"
first_code=$?
check "both tuned shards exit 0 (got $first_code, $second_code)" test "$first_code" -eq 0 -a "$second_code" -eq 0
check "every tuning point ran exactly once across the shards" \
  test "$(cat "$work"/tshard*.out | grep -E '^\[[0-9]+/[0-9]+\] tune/.* done' | awk '{print $2}' | sort | uniq -c | awk '$1 == 1' | wc -l)" -eq 8
check "the shards chose the same rates" diff <(grep '^tuned:' "$work/tshard0.out") <(grep '^tuned:' "$work/tshard1.out")
check "every grid point is done" test "$(ls "$work"/t2/points/*/done | wc -l)" -eq 4

# The notebook draws the same figures from the same files.
check "notebooks/ibn_report.ipynb executes on the sweep" bash -c "cd '$REPO/notebooks' && IBN_SWEEP='$work/s' IBN_REPO='$REPO' \
  /usr/bin/python3 -m nbconvert --to notebook --execute --output '$work/executed.ipynb' ibn_report.ipynb >'$work/nb.log' 2>&1 \
  && test \$(grep -c image/png '$work/executed.ipynb') -ge 5 || { tail -5 '$work/nb.log'; false; }"

# A sweep killed (SIGKILL, the whole process group) in the middle of a point: the next run
# skips the finished points and redoes the killed one from scratch.
setsid "$IBN" sweep "$work/tiny.ini" --out "$work/k" -j 1 --no-report >"$work/killed.out" 2>&1 &
leader=$!
for _ in $(seq 1 600); do
  [ "$(ls "$work"/k/points/*/done 2>/dev/null | wc -l)" -ge 2 ] && [ "$(ls -d "$work"/k/points/*/ 2>/dev/null | wc -l)" -ge 3 ] && break
  sleep 0.1
done
kill -9 -- -"$leader" 2>/dev/null
wait "$leader" 2>/dev/null
finished_before=$(ls "$work"/k/points/*/done 2>/dev/null | wc -l)
check "the killed sweep left finished and unfinished points ($finished_before done)" test "$finished_before" -ge 2 -a "$finished_before" -lt 6
"$IBN" sweep "$work/tiny.ini" --out "$work/k" -j 2 --no-report >"$work/resumed.out" 2>&1
check "the resumed sweep skipped the finished points" grep -q "6 points, $finished_before done before, $((6 - finished_before)) to run" "$work/resumed.out"
check "after resuming every point is done" test "$(ls "$work"/k/points/*/done | wc -l)" -eq 6
check "each point trained once in its final directory" \
  test "$(grep -l '^done: ' "$work"/k/points/*/log.txt | wc -l)" -eq 6 -a "$(cat "$work"/k/points/*/log.txt | grep -c '^done: ')" -eq 6

# Killing only the sweep process (SIGKILL, no chance to clean up) takes its running child with
# it, and while a child runs its point is locked: a second sweep leaves that point alone.
printf '[grid]\nseed = 0 | 1\n[train]\nepochs = 2000\nbatch = 64\ndump-epochs = list:2000\n[analyze]\nestimator = binning\n' >"$work/long.ini"
"$IBN" sweep "$work/long.ini" --out "$work/l" -j 1 --no-report >"$work/long.out" 2>&1 &
sweep_pid=$!
children() { pgrep -f -- "--out $work/l/points/" ; }
for _ in $(seq 1 200); do children >/dev/null && break; sleep 0.1; done
check "the sweep's point is training" test -n "$(children)"
"$IBN" sweep "$work/long.ini" --out "$work/l" -j 1 --no-report --shard 0/2 >"$work/second.out" 2>&1
code=$?
check "a second sweep leaves the locked point to its owner" grep -q "seed0 is being run by another process" "$work/second.out"
check "and exits 1, saying so (got $code)" bash -c "[ $code -eq 1 ] && grep -q '^ibn: error: 1 of 1 points were left to another process' '$work/second.out'"
kill -9 "$sweep_pid"
wait "$sweep_pid" 2>/dev/null
for _ in $(seq 1 50); do children >/dev/null || break; sleep 0.1; done
check "no child outlives the killed sweep" test -z "$(children)"
pkill -9 -f -- "--out $work/l/points/" 2>/dev/null

# A failed point is recorded with its error; the others finish; the sweep exits 1. (Options
# are checked before any point runs, so the failure is one only a run can find: KSG's k above
# the number of samples this point stores.)
printf '[grid]\ndump-samples = subset:400 | subset:50\n[train]\nepochs = 1\ndump-epochs = list:1\n[analyze]\nestimator = ksg:k=100\n' >"$work/failing.ini"
"$IBN" sweep "$work/failing.ini" --out "$work/f" --no-report >"$work/failing.out" 2>"$work/failing.err"
code=$?
check "a sweep with a failed point exits 1 (got $code)" test "$code" -eq 1
check "the failure names the point and the error" \
  grep -q "dump-samplessubset-50 FAILED: analyze: ibn: error: ksg:k=100 needs more than k samples, and there are 50" "$work/failing.out"
check "the sweep's own error is one line on stderr" grep -q "^ibn: error: 1 of 2 points failed" "$work/failing.err"
check "status shows the failed point's error" bash -c "'$IBN' sweep '$work/failing.ini' --out '$work/f' --status | grep -q 'dump-samplessubset-50 .* failed: analyze: ibn: error: ksg:k=100'"
check "the other point finished" test -e "$work/f/points/dump-samplessubset-400/done"

# A bad option of any point stops the sweep before anything runs or is written (exit 2).
printf '[grid]\nbatch = 64 | 0\n[train]\nepochs = 1\n[analyze]\nestimator = binning\n' >"$work/bad.ini"
"$IBN" sweep "$work/bad.ini" --out "$work/b" >"$work/bad.out" 2>&1
code=$?
check "a sweep with a bad grid value exits 2 (got $code)" test "$code" -eq 2
check "the error names the point and the option" grep -q "point batch0 .*--batch 0 must lie in" "$work/bad.out"
check "nothing was written" test ! -e "$work/b"

echo "sweep: $passes passed, $failures failed"
[ "$failures" -eq 0 ]
