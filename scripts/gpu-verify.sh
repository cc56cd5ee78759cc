#!/usr/bin/env bash
# Everything the GPU side needs checked, in one call on a machine with an NVIDIA GPU, the CUDA
# toolkit and PyTorch (the device machine, after ../shared/gpu/prepare, or any such machine):
#   build       configure and build into build-gpu/ against PyTorch's CUDA LibTorch
#   tests       every CUDA test: the kernels on raw device arrays, and the LibTorch GPU tests
#   sanitizers  compute-sanitizer memcheck, racecheck and synccheck on a small launch set
#   bench       ibn bench norm, ibn bench mi --device cuda, and anchors.py (PyTorch doing the
#               same work) in the same call, for the ratios
#   train       a few CUDA steps of the GPT and ResNet experiments, on the ATen and fused paths
#   summary     one Markdown file with every step's result and the ratios (scripts/gpu_summary.py)
# Steps go on after one fails; the exit status is 1 if any failed.
#
#   bash scripts/gpu-verify.sh [--out DIR] [--steps build,tests,...] [--dry-run]
#
# DIR (default $OUT, else gpu-verify/) receives gpu-verify.md, steps.log (every step's output),
# steps.tsv, bench-norm.csv, bench-mi.csv and anchors.json: six files, as the device tool brings
# back. --dry-run prints the commands and runs nothing (no GPU needed).
# Data: Debian's Fashion-MNIST and fortunes where installed; on the device machine, which has
# neither, carry Fashion-MNIST in .gpu/data (mkdir -p .gpu/data && cp -r
# /usr/share/datasets/fashion-mnist .gpu/data/, about 30 MB) and the GPT run reads README.md.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

die() { echo "gpu-verify: $*" >&2; exit 2; }

out=${OUT:-gpu-verify}
only=""
dry_run=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || die "--out needs a directory"; out=$2; shift 2 ;;
    --steps) [ $# -ge 2 ] || die "--steps needs a list, e.g. build,tests"; only=$2; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (expected --out DIR, --steps LIST or --dry-run)" ;;
  esac
done
all_steps="build tests sanitizers bench train summary"
IFS=, read -r -a listed <<<"$only"
for step in "${listed[@]}"; do
  case " $all_steps " in *" $step "*) ;; *) die "unknown step '$step' in --steps (expected: ${all_steps// /, })" ;; esac
done
wanted() { [ -z "$only" ] || [[ ",$only," == *",$1,"* ]]; }
case "$out" in /*) ;; *) out=$PWD/$out ;; esac  # relative to where the script was called from
cd "$root"

# IBN_GPU_VERIFY_BUILD, IBN_GPU_VERIFY_DEVICE and IBN_GPU_VERIFY_SMALL=1 (tiny data, 2 steps)
# exist for tests/gpu_verify_test.sh, which runs the CPU-side steps (train, summary) on a CPU
# build with device=cpu.
build=${IBN_GPU_VERIFY_BUILD:-build-gpu}
device=${IBN_GPU_VERIFY_DEVICE:-cuda}
if [ "${IBN_GPU_VERIFY_SMALL:-0}" = 1 ]; then
  train_steps=2 text_bytes=20000 fashion_n=train_n=256:test_n=128
else
  train_steps=20 text_bytes=4000000 fashion_n=train_n=4096:test_n=1024
fi
ibn=$build/ibn
anchors=.gpu/anchors.py
[ -f "$anchors" ] || anchors=${IBN_ANCHORS:-../shared/gpu/anchors.py}
sanitizer=${COMPUTE_SANITIZER:-$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)}
small_launch_set="--gtest_filter=CudaKernels.SanitizerLaunchSet"

if [ "$dry_run" -eq 0 ]; then
  command -v nvidia-smi >/dev/null 2>&1 || die "no NVIDIA GPU here: nvidia-smi was not found (--dry-run shows the plan)"
  nvidia-smi -L >/dev/null 2>&1 || die "no NVIDIA GPU here: nvidia-smi found no device (--dry-run shows the plan)"
  mkdir -p "$out" || die "cannot create the output directory '$out'"
  runs=$(mktemp -d "${TMPDIR:-/tmp}/gpu-verify-runs.XXXXXX") || die "cannot create a temporary directory"
  trap 'rm -rf "$runs"' EXIT  # the training runs' directories, whatever ends the script
  : >"$out/steps.tsv"
  : >"$out/steps.log"
fi

# run NAME COMMAND...: runs (or, dry, prints) one command of a step under a time limit,
# appending the end of its output to steps.log and its exit status and seconds to steps.tsv,
# then rewrites the summary, so that a run cut short still leaves one. After a failed build,
# the steps that need its binaries are recorded as skipped (status 125) instead of running
# whatever older binaries build-gpu/ holds.
failures=0
build_failed=0
step_limit=${IBN_GPU_VERIFY_STEP_TIMEOUT:-900}
run() {
  local name=$1
  shift
  if [ "$dry_run" -eq 1 ]; then
    echo "[$name] $*"
    return 0
  fi
  if [ "$build_failed" -eq 1 ] && [ "$name" != summary ]; then
    printf '%s\t125\t0\t%s\n' "$name" "skipped: the build failed" >>"$out/steps.tsv"
    return 0
  fi
  echo "== $name: $*" | tee -a "$out/steps.log"
  local start status log
  log=$(mktemp)
  start=$(date +%s)
  if declare -F "$1" >/dev/null; then
    "$@" >"$log" 2>&1
  else
    timeout "$step_limit" "$@" >"$log" 2>&1
  fi
  status=$?
  tail -n 400 "$log" >>"$out/steps.log"  # the end of each step: the file must stay small enough to come back
  rm -f "$log"
  printf '%s\t%d\t%d\t%s\n' "$name" "$status" "$(($(date +%s) - start))" "$*" >>"$out/steps.tsv"
  if [ "$status" -ne 0 ]; then
    failures=$((failures + 1))
    echo "   $name failed (exit $status); see steps.log" | tee -a "$out/steps.log"
    [ "$name" = build ] && build_failed=1
  fi
  [ "$name" = summary ] || write_summary >/dev/null 2>&1
  return 0
}

gpu_name=GPU
write_summary() {
  python3 scripts/gpu_summary.py --steps "$out/steps.tsv" --bench-norm "$out/bench-norm.csv" \
    --bench-mi "$out/bench-mi.csv" --anchors "$out/anchors.json" --gpu "$gpu_name" \
    --commit "$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)" --out "$out/gpu-verify.md"
}
[ "$dry_run" -eq 1 ] || gpu_name=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1)
# The GPU tests fail instead of skipping when they find no device.
export IBN_REQUIRE_GPU=1

configure_and_build() {
  if [ -f .gpu/build ]; then
    bash .gpu/build  # the device machine's setup (../shared/gpu/prepare): carried Boost, PyTorch's LibTorch
  else
    local prefix
    prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)') || return 1
    cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" ${IBN_CMAKE_ARGS:-} &&
      cmake --build "$build" -j "$(nproc)"
  fi
}

if wanted build; then run build configure_and_build; fi
if wanted tests; then
  run tests-kernels "$build/tests/ibn_cuda_kernel_tests"
  run tests-libtorch "$build/tests/ibn_tests" "--gtest_filter=*Cuda*:*CUDA*"
fi
if wanted sanitizers; then
  for tool in memcheck racecheck synccheck; do
    run "sanitizer-$tool" "$sanitizer" --tool "$tool" --error-exitcode 1 --print-limit 20 \
      "$build/tests/ibn_cuda_kernel_tests" "$small_launch_set"
  done
fi
if wanted bench; then
  run bench-norm "$ibn" bench norm --csv "$out/bench-norm.csv"
  run bench-mi "$ibn" bench mi --device cuda --n 10000,20000,60000 --d 64,256,1024 --estimator binning --estimator kde \
    --csv "$out/bench-mi.csv"
  run anchors env OUT="$out" python3 "$anchors"
fi
if wanted train; then
  [ "$dry_run" -eq 0 ] || runs=RUNS  # a temporary directory when it runs
  text=/usr/share/games/fortunes
  [ -d "$text" ] || text=README.md
  fashion=/usr/share/datasets/fashion-mnist
  [ -d .gpu/data/fashion-mnist ] && fashion=.gpu/data/fashion-mnist
  short=(--device "$device" --epochs 1 --steps-per-epoch "$train_steps" --dump-epochs none --checkpoint-every 0 --quiet)
  gpt=(train --config experiments/text-gpt.ini --data "text:context=128:path=$text:max_bytes=$text_bytes"
       --norm ibnorm-t:lambda=1 "${short[@]}")
  run train-gpt-aten env IBN_FUSED_NORM=0 "$ibn" "${gpt[@]}" --out "$runs/gpt-aten"
  run train-gpt-fused env IBN_FUSED_NORM=1 "$ibn" "${gpt[@]}" --out "$runs/gpt-fused"
  run train-resnet-fused env IBN_FUSED_NORM=1 "$ibn" train --config experiments/fashion-resnet.ini \
    --data "fashion-mnist:dir=$fashion:$fashion_n" --norm ibnorm-t:lambda=1:area=batch "${short[@]}" \
    --out "$runs/resnet-fused"
fi
if wanted summary; then run summary write_summary; fi
[ "$dry_run" -eq 1 ] && exit 0
echo "gpu-verify: $failures step(s) failed; summary in $out/gpu-verify.md"
[ "$failures" -eq 0 ]
