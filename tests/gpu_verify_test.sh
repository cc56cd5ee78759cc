#!/usr/bin/env bash
# scripts/gpu-verify.sh and scripts/gpu_summary.py on a machine without a GPU: the plan, the
# refusals, the CPU-side steps (the training commands, run with device=cpu on this build, and
# the summary), and the summary's ratios and verdicts on inputs whose answers are known.
# Env: IBN (the ibn binary), REPO (the source tree).
set -uo pipefail
: "${IBN:?}" "${REPO:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export TMPDIR=$tmp  # the script's temporary run directories too

failures=0
check() {  # check DESCRIPTION COMMAND...
  local what=$1
  shift
  if "$@"; then echo "ok   $what"; else echo "FAIL $what"; failures=$((failures + 1)); fi
}
script=$REPO/scripts/gpu-verify.sh

# The plan: every step's command, nothing written, no GPU needed.
plan=$(bash "$script" --dry-run --out "$tmp/plan")
check "dry run exits 0" test $? -eq 0
check "dry run lists 13 commands" test "$(grep -c '^\[' <<<"$plan")" -eq 13
for step in build tests-kernels tests-libtorch sanitizer-memcheck sanitizer-racecheck sanitizer-synccheck bench-norm bench-mi \
            anchors train-gpt-aten train-gpt-fused train-resnet-fused summary; do
  check "dry run names $step" grep -q "^\[$step\]" <<<"$plan"
done
check "dry run writes nothing" test ! -e "$tmp/plan"

# Refusals: one line, exit 2, nothing written.
nogpu=$(PATH=/usr/bin:/bin bash "$script" --out "$tmp/nogpu" 2>&1)
check "no GPU: exit 2" test $? -eq 2
check "no GPU: one line naming nvidia-smi" test "$(wc -l <<<"$nogpu")" -eq 1 -a -n "$(grep nvidia-smi <<<"$nogpu")"
check "no GPU: nothing written" test ! -e "$tmp/nogpu"
bash "$script" --steps build,bogus >/dev/null 2>&1
check "unknown step: exit 2" test $? -eq 2
bash "$script" --frobnicate >/dev/null 2>&1
check "unknown argument: exit 2" test $? -eq 2

# The CPU-side steps for real: a stand-in nvidia-smi, this build, device=cpu.
mkdir -p "$tmp/bin"
printf '#!/bin/sh\necho "GPU 0: stand-in, 1"\n' >"$tmp/bin/nvidia-smi"
chmod +x "$tmp/bin/nvidia-smi"
PATH="$tmp/bin:$PATH" IBN_GPU_VERIFY_BUILD=$(dirname "$IBN") IBN_GPU_VERIFY_DEVICE=cpu IBN_GPU_VERIFY_SMALL=1 \
  bash "$script" --steps train,summary --out "$tmp/run" >"$tmp/run.log" 2>&1
check "train and summary steps pass on the CPU" test $? -eq 0
check "three training steps recorded, all exit 0" test "$(awk -F'\t' '/^train-/ && $2 == 0' "$tmp/run/steps.tsv" | wc -l)" -eq 3
check "summary says all passed" grep -q "3 steps, all passed" "$tmp/run/gpu-verify.md"
check "summary says the benchmarks did not run" grep -q "Not run: no bench-norm.csv" "$tmp/run/gpu-verify.md"
check "the training runs' temporary directory is removed" test -z "$(ls -d "$tmp"/gpu-verify-runs.* 2>/dev/null)"

# The summary's arithmetic, on a real `ibn bench norm --csv` (traffic only, from this CPU build)
# with timings filled in, and anchors whose ratios are known.
"$IBN" bench norm --shape 32768x4096 --dtype bf16 --norms "layernorm;ibnorm-t:lambda=1" --csv "$tmp/norm.csv" >/dev/null
check "ibn bench norm --csv without a GPU" test -s "$tmp/norm.csv"
/usr/bin/python3 - "$tmp" <<'PY'
import csv, json, sys
tmp = sys.argv[1]
rows = list(csv.DictReader(open(f"{tmp}/norm.csv")))
times = {"layernorm": (0.25, 0.9), "ibnorm-t:lambda=1": (0.28, 1.2)}
for r in rows:
    r["layer_norm_fwd_ms"], r["layer_norm_fwdbwd_ms"] = "0.26", "1.0"
    r["fused_fwd_ms"], r["fused_fwdbwd_ms"] = map(str, times[r["norm"]])
    r["aten_fwd_ms"], r["aten_fwdbwd_ms"], r["copy_ms"] = "0.7", "2.4", "0.2"
with open(f"{tmp}/norm.csv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0].keys())); w.writeheader(); w.writerows(rows)
json.dump({"bfloat16_32768x4096": {"ln_fwd_ms": 0.2, "ln_fwdbwd_ms": 0.9, "ibnT_compiled_fwd_ms": 0.56,
                                   "ibnT_compiled_fwdbwd_ms": 2.4}, "kde_10000x256_ms": 20.0}, open(f"{tmp}/anchors.json", "w"))
open(f"{tmp}/mi.csv", "w").write('estimator,device,n,d,seconds\n"kde entropy H(T), one bound (var=0.1)",cuda:0,10000,256,0.01\n')
open(f"{tmp}/steps.tsv", "w").write("build\t0\t100\tcmake\ntests-kernels\t1\t5\tibn_cuda_kernel_tests\n")
PY
/usr/bin/python3 "$REPO/scripts/gpu_summary.py" --steps "$tmp/steps.tsv" --bench-norm "$tmp/norm.csv" --bench-mi "$tmp/mi.csv" \
  --anchors "$tmp/anchors.json" --gpu "stand-in" --out "$tmp/summary.md"
check "summary written" test -s "$tmp/summary.md"
summary=$(cat "$tmp/summary.md")
check "failed step named" grep -q "1 failed: tests-kernels" <<<"$summary"
check "forward target met (0.28 ≤ 0.30)" grep -q "forward ≤ 0.3 ms: met (0.280" <<<"$summary"
check "forward+backward target missed (1.2 > 1.05)" grep -q "forward + backward ≤ 1.05 ms: MISSED (1.200" <<<"$summary"
check "worst ratio to LayerNorm 1.2/1.0" grep -q "worst of 2 timings): MISSED (1.200" <<<"$summary"
# ibnorm-t row: × LN fwd 0.28/0.26 = 1.08, × ATen 0.28/0.7 = 0.40, × PyTorch 0.28/0.56 = 0.50 and 1.2/2.4 = 0.50.
check "ibnorm-t ratios" grep -q "| ibnorm-t:lambda=1 | BFloat16 | 32768x4096 | 0.280 | 1.200 | 1.08 | 1.20 | 0.40 | 0.50 | 0.50 | 0.50 |" <<<"$summary"
# layernorm row: × PyTorch 0.25/0.2 = 1.25, 0.9/0.9 = 1.00.
check "layernorm ratios to F.layer_norm" grep -q "| layernorm | BFloat16 | 32768x4096 | 0.250 | 0.900 | 0.96 | 0.90 | 0.36 | 0.38 | 1.25 | 1.00 |" <<<"$summary"
check "KDE against its anchor: 0.01 s / 0.02 s" grep -q "| 10000 | 256 | 0.0100 | 0.0200 | 0.50 |" <<<"$summary"
echo "gpu_verify_test: $failures failure(s)"
[ "$failures" -eq 0 ]
