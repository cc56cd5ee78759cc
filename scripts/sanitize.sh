#!/usr/bin/env bash
# The sanitizer pass that CI runs after the main tests: builds `ibn` and the unit tests with
# AddressSanitizer + UndefinedBehaviorSanitizer into build-asan/, then runs, under the
# sanitizers, the unit tests (a stated subset: the slow estimator-accuracy and training suites
# are left to the release build) and the bad-input corpus (cases that train run once, the rest
# all). Any sanitizer report fails the run. Prints how long each part took.
#   bash scripts/sanitize.sh [--all]     # --all: every unit test and every corpus case
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
all=0
[ "${1:-}" = "--all" ] && all=1

seconds() { date +%s; }
t0=$(seconds)
# -O1 keeps the build and the run quick enough for CI; -g1 gives file:line in reports.
flags="-O1 -g1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined"
generator=()
if command -v ninja >/dev/null 2>&1 && [ ! -f build-asan/Makefile ]; then generator=(-G Ninja); fi
cmake -S . -B build-asan "${generator[@]}" -DCMAKE_BUILD_TYPE=None -DCMAKE_CXX_FLAGS="$flags" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" >/dev/null
# Only the CPU targets: the CUDA kernels are not linked into a CPU LibTorch build anyway.
cmake --build build-asan -j "$(nproc)" --target ibn_cli ibn_tests
t1=$(seconds)

# LibTorch and OpenBLAS are not instrumented: their allocations are invisible to ASan, and
# leak checking would report their caches, so it is off; every other check stays on.
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=0:halt_on_error=1:detect_odr_violation=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
filter='*'
if [ "$all" -eq 0 ]; then
  # Left to the release build: estimator accuracy on 5000-sample tasks, training to convergence,
  # and the GPU tests (they skip here anyway).
  filter='*:-MiNeural.BoundsOnGaussianAndUniformTasks:Train.Ibsgd12NetworkLearnsDeterministicallyAndStoresActivations:Models.EveryModelLearnsTinyDataWithEachNormalizer:MiKsg.GaussianPairsDenseAndRandomCovariances:MiKsg.UniformNoiseShuffledAndMonotoneTransform:*Cuda*'
fi
status=0
./build-asan/tests/ibn_tests --gtest_filter="$filter" --gtest_brief=1 || status=1
t2=$(seconds)

corpus=(--timeout 120)
[ "$all" -eq 1 ] && corpus+=(--slow)
/usr/bin/python3 tests/bad_inputs.py --ibn build-asan/ibn "${corpus[@]}" || status=1
t3=$(seconds)
echo "sanitize: build $((t1 - t0)) s, unit tests $((t2 - t1)) s (filter $filter), bad-input corpus $((t3 - t2)) s"
exit "$status"
