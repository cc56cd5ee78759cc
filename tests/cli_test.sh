#!/usr/bin/env bash
# The ibn CLI as a user meets it: exit codes (0 ok, 1 failure, 2 usage), one-line errors,
# --help on every command, .ini configs, and files written whole or not at all.
# Run by CTest with IBN pointing at the binary.
set -u
IBN=${IBN:?set IBN to the ibn binary}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
passes=0

# expect CODE PATTERN -- ARGS...: runs ibn ARGS, checks the exit code and that the combined
# output matches the extended regex PATTERN.
expect() {
  local code=$1 pattern=$2
  shift 3
  local out rc
  out=$("$IBN" "$@" 2>&1)
  rc=$?
  if [ "$rc" -ne "$code" ] || ! grep -Eq -- "$pattern" <<<"$out"; then
    echo "FAIL: ibn $* -> exit $rc (want $code), output lacks /$pattern/:"
    sed 's/^/    /' <<<"$out" | head -20
    failures=$((failures + 1))
  else
    passes=$((passes + 1))
  fi
}

# expect_one_line_error CODE ARGS...: stderr is exactly one line starting with "ibn:".
expect_one_line_error() {
  local code=$1
  shift
  local err rc
  err=$("$IBN" "$@" 2>&1 >/dev/null)
  rc=$?
  if [ "$rc" -ne "$code" ] || [ "$(wc -l <<<"$err")" -ne 1 ] || [[ "$err" != ibn:* ]]; then
    echo "FAIL: ibn $* -> exit $rc (want $code), stderr not one 'ibn:' line:"
    sed 's/^/    /' <<<"$err" | head -20
    failures=$((failures + 1))
  else
    passes=$((passes + 1))
  fi
}

expect 0 "usage: ibn" -- --help
expect 2 "usage: ibn" --
expect 0 "^ibn [0-9]+\.[0-9]+\.[0-9]+ \(commit [0-9a-f]+|unknown\)" -- --version
expect 0 "LibTorch [0-9]+\.[0-9]+.*built with CUDA: (yes|no)" -- --version
expect 2 "unknown command 'frobnicate'; expected one of: norms, contraction, train, analyze, sweep, report, quant, repro, mi, bench" -- frobnicate
expect_one_line_error 2 frobnicate

# ibn norms: the listing names every normalizer with its defaults.
for name in batchnorm layernorm rmsnorm groupnorm ibnorm-s ibnorm-l ibnorm-t ln-tanh dyt normalnorm; do
  expect 0 "^  $name " -- norms
done
expect 0 "dyt +token +dyt +alpha=0\.5 eps=1e-05" -- norms
expect 0 "ln-tanh +token +ibnorm +lambda=1 order=last" -- norms
expect 0 "formula +z = .*Yeo–Johnson.*our choices: held constant in backprop" -- norms --spec normalnorm --shape 64,32
# kappa=K: the resolved lambda is printed, and the measured kappa is near K on Gaussian input.
expect 0 "lambda +[0-9.]+ \(chosen for kappa 0\.5\)" -- norms --spec ibnorm-t:kappa=0.5 --shape 4096,64
expect 0 "kappa +0\.(4[89]|5[01])[0-9]* \(measured\) +0\.500000 \(standard Gaussian" -- norms --spec ibnorm-t:kappa=0.5 --shape 4096,64
expect 0 "ibnorm-t +token +ibnorm +lambda=1 eps=1e-05 affine=true" -- norms
expect 0 "groupnorm +group +standardize +groups=32" -- norms
expect 0 "usage: ibn norms" -- norms --help
expect 0 "kappa +0\.[0-9]+ \(measured\)" -- norms --spec ibnorm-t:lambda=2 --shape 64,33
expect 0 "spec +ibnorm-t:area=batch:lambda=2" -- norms --spec ibnorm-t:lambda=2:area=batch --shape 8,4,5,5
expect 0 "eval mode" -- norms --spec batchnorm --shape 1,6 --mode eval
expect 2 "unknown key 'lamda'" -- norms --spec ibnorm-t:lamda=2 --shape 4,8
expect 2 "lambda=-1 must lie in \\[0, 10000\\]" -- norms --spec ibnorm-t:lambda=-1 --shape 4,8
expect 2 "groups=8 cannot split 12 channels" -- norms --spec groupnorm:groups=8 --shape 4,12
expect 0 "output +mean [+-]0\.000000 +std 1\.0" -- norms --spec layernorm --shape 2,3,4,4
expect 2 "--shape '4,x' is not a list of positive integers" -- norms --spec layernorm --shape 4,x
expect 2 "--spec and --shape go together" -- norms --spec layernorm
expect 2 "unrecognised option '--frob'" -- norms --frob
expect 2 "unknown device 'tpu'" -- norms --spec layernorm --shape 4,4 --device tpu
for args in "norms --spec ibnorm-t:lamda=2 --shape 4,8" "norms --spec groupnorm:groups=8 --shape 4,12" "norms --frob"; do
  # shellcheck disable=SC2086
  expect_one_line_error 2 $args
done

# --config: .ini keys at the top and in the command's section apply; the command line wins;
# other commands' sections are left alone; unknown keys are errors.
cat >"$work/norms.ini" <<'INI'
seed = 3
[norms]
spec = ibnorm-l:lambda=0.5
shape = 16,12
[train]
epochs = 10
INI
expect 0 "spec +ibnorm-l:area=token:lambda=0.5" -- norms --config "$work/norms.ini"
expect 0 "seed 3" -- norms --config "$work/norms.ini"
expect 0 "spec +ibnorm-s:area=token:lambda=0.5" -- norms --config "$work/norms.ini" --spec ibnorm-s:lambda=0.5
printf '[norms]\nspek = layernorm\n' >"$work/bad.ini"
expect 2 "config file '.*bad.ini': unknown option 'norms.spek'" -- norms --config "$work/bad.ini"
expect 2 "config file '.*missing.ini' does not exist" -- norms --config "$work/missing.ini"

# ibn contraction: the table, CSV written whole, an unwritable path fails and leaves nothing.
expect 0 "ibnorm-t +token +2 +0\.1[0-9]+ +0\.15" -- contraction --shape 512,64
expect 0 "wrote $work/k.csv" -- contraction --shape 64,16 --lambdas 0,1 --norms layernorm,ibnorm-t --csv "$work/k.csv"
if [ "$(wc -l <"$work/k.csv")" -ne 4 ] || ! grep -q '^ibnorm-t:area=token:lambda=1:' "$work/k.csv"; then
  echo "FAIL: contraction CSV has the wrong rows:"; cat "$work/k.csv"; failures=$((failures + 1))
else
  passes=$((passes + 1))
fi
expect 1 "cannot write '$work/nodir/k.csv'" -- contraction --shape 64,16 --csv "$work/nodir/k.csv"
expect 2 "--lambdas '0,x': 'x' is not a number" -- contraction --lambdas 0,x
if ls "$work"/nodir* "$work"/*.tmp.* >/dev/null 2>&1; then
  echo "FAIL: a failed write left files behind"; failures=$((failures + 1))
else
  passes=$((passes + 1))
fi

# ibn mi: tasks with known truth, HDF5 inputs written by h5py, JSON/CSV out, and the errors.
expect 0 "ksg:k=3.* +0\.5[0-9]+ +- +- +0\.5108 " -- mi --task gaussian:rho=0.8 --n 2000 --estimator ksg
expect 0 "I\(A;B\) in bits" -- mi --task gaussian:rho=0.8 --n 500 --estimator ksg --units bits
expect 0 "kde:var=0.1:mode=channel +[0-9.]+ +[0-9.]+ +[0-9.]+" -- mi --task uniform-noise:eps=1 --n 500 --estimator kde
expect 0 "Estimators:" -- mi --help
expect 0 "ksg +Kraskov" -- mi --help
/usr/bin/python3 - "$work/data.h5" <<'PY'
import sys, h5py, numpy as np
rng = np.random.default_rng(0)
labels = rng.integers(0, 3, 600).astype(np.int8)
t = (rng.normal(size=(600, 4)) + labels[:, None] * 2).astype(np.float16)
with h5py.File(sys.argv[1], "w") as f:
    f["/data/labels"] = labels
    f["/epochs/3/fc1"] = t
    f["/short"] = t[:599]
    bad = t.astype(np.float32); bad[5, 1] = np.nan
    f["/bad"] = bad
    f["/empty"] = np.zeros((0, 4), np.float32)
PY
expect 0 "^/data/labels$" -- mi --input "$work/data.h5" --list
expect 0 "A continuous, B discrete" -- mi --input "$work/data.h5" --a /epochs/3/fc1 --b /data/labels --estimator ksg --out "$work/r.json"
if /usr/bin/python3 -c "import json,sys; r=json.load(open(sys.argv[1])); assert r['samples']==600 and r['units']=='nats'; e=r['results'][0]; assert e['estimator'].startswith('ksg:') and 0.5 < e['estimate'] < 1.2, e" "$work/r.json"; then
  passes=$((passes + 1))
else
  echo "FAIL: ibn mi --out JSON is not what was printed"; failures=$((failures + 1))
fi
expect 0 "wrote .*r.csv" -- mi --input "$work/data.h5" --a /epochs/3/fc1 --b /data/labels --estimator binning:bins=5 --out "$work/r.csv"
if grep -q '^"binning:bins=5",nats,[0-9.]*,,,,,[0-9.]*,600$' "$work/r.csv"; then
  passes=$((passes + 1))
else
  echo "FAIL: ibn mi --out CSV:"; cat "$work/r.csv"; failures=$((failures + 1))
fi
expect 2 "no such file '$work/none.h5'" -- mi --input "$work/none.h5" --a /x --b /y
expect 2 "no dataset '/data/label' in '.*data.h5' \(datasets: /bad, /data/labels" -- mi --input "$work/data.h5" --a /epochs/3/fc1 --b /data/label
expect 1 "A has 600 samples and B has 599" -- mi --input "$work/data.h5" --a /epochs/3/fc1 --b /short --out "$work/x.json"
expect 1 "A holds 1 NaN or infinite value" -- mi --input "$work/data.h5" --a /bad --b /data/labels --out "$work/x.json"
expect 1 "A is empty" -- mi --input "$work/data.h5" --a /empty --b /data/labels --out "$work/x.json"
expect 2 "unknown estimator 'kraskov'" -- mi --task gaussian --estimator kraskov --out "$work/x.json"
expect 2 "unknown key 'sigma'; kde accepts" -- mi --task gaussian --estimator kde:sigma=1
expect 2 "give either --input" -- mi --estimator ksg
expect 2 "--out '.*x.txt' must end in .json or .csv" -- mi --task gaussian --out "$work/x.txt"
expect_one_line_error 1 mi --input "$work/data.h5" --a /bad --b /data/labels
expect_one_line_error 2 mi --input "$work/data.h5" --a /nope --b /data/labels
if ls "$work"/x.* >/dev/null 2>&1; then
  echo "FAIL: a failed ibn mi wrote its --out file"; failures=$((failures + 1))
else
  passes=$((passes + 1))
fi

# ibn train: a short run writes config, metrics and an activation store that h5py and ibn mi read.
expect 0 "ibsgd12 +Shwartz-Ziv" -- train --help
expect 0 "done: train acc 0\.[0-9]+, test acc" -- train --out "$work/run" --epochs 3 --norm ibnorm-l:lambda=0.5 --dump-epochs all --progress lines
if /usr/bin/python3 -c "
import sys, h5py
f = h5py.File(sys.argv[1], 'r')
assert f.attrs['complete'] == 1 and f.attrs['norm'] == 'ibnorm-l:lambda=0.5', dict(f.attrs)
assert sorted(f['epochs'].keys(), key=int) == ['0', '1', '2', '3'], list(f['epochs'])
assert f['epochs/3/fc1'].shape == (4096, 10) and f['data/labels'].shape == (4096,)
assert list(f['metrics/epoch'][...]) == [0, 1, 2, 3]
" "$work/run/activations.h5"; then
  passes=$((passes + 1))
else
  echo "FAIL: h5py cannot read the activation store as documented"; failures=$((failures + 1))
fi
# A model whose every normalizer writes FP8 (issue 17) trains, and says so in its spec.
expect 0 "done: train acc 0\.[0-9]+, test acc" -- train --out "$work/run_fp8" --epochs 2 --norm ibnorm-t:lambda=1:fp8=e4m3:scaling=row --progress lines
if ! grep -q "fp8=e4m3:scaling=row" "$work/run_fp8/config.ini"; then
  echo "FAIL: the FP8 run's config lacks its fp8 keys:"; cat "$work/run_fp8/config.ini"; failures=$((failures + 1))
fi
expect 0 "done: .* after 1 epochs; 2 epochs dumped" -- train --out "$work/run_half" --epochs 1 --dump-epochs all --dump-dtype float16 --quiet
if /usr/bin/python3 -c "
import sys, h5py, numpy as np
half, full = h5py.File(sys.argv[1] + '/activations.h5', 'r'), h5py.File(sys.argv[2] + '/activations.h5', 'r')
a, b = half['epochs/1/fc1'], full['epochs/1/fc1']
assert a.dtype == np.float16 and b.dtype == np.float32, (a.dtype, b.dtype)
" "$work/run_half" "$work/run"; then passes=$((passes + 1)); else echo "FAIL: --dump-dtype float16 should store h5py float16"; failures=$((failures + 1)); fi
expect 2 "--dump-dtype 'bfloat16' must be one of: float32, float16" -- train --out "$work/run_bf" --dump-dtype bfloat16
expect 0 "A discrete, B continuous" -- mi --input "$work/run/activations.h5" --a /data/inputs --b /epochs/3/fc2 --discrete a --estimator binning
printf 'epochs = 2\n[train]\nnorm = rmsnorm\ndump-epochs = none\n' >"$work/train.ini"
expect 0 "done: .* after 2 epochs; 0 epochs dumped" -- train --config "$work/train.ini" --out "$work/run2" --quiet
expect 2 "unknown normalizer 'fancynorm'" -- train --out "$work/run3" --norm fancynorm
expect 2 "--out RUN_DIR is required" -- train --epochs 1
if [ -e "$work/run3" ]; then echo "FAIL: a rejected ibn train created its run directory"; failures=$((failures + 1)); else passes=$((passes + 1)); fi

# A run killed with SIGKILL leaves its last checkpoint and no activation store; --resume then
# ends exactly as the uninterrupted run (every metric but wall time, every stored array). With
# BatchNorm the stored activations and test metrics are in evaluation mode, so they hold only if
# the checkpoint carried the running statistics too.
kill_and_resume() {  # kill_and_resume NAME NORM DUMP_EPOCHS
  local name=$1 norm=$2 dumps=$3
  local run_args=(train --epochs 200 --norm "$norm" --checkpoint-every 1 --dump-epochs "$dumps" --progress quiet)
  "$IBN" "${run_args[@]}" --out "$work/whole-$name" >/dev/null
  "$IBN" "${run_args[@]}" --out "$work/$name" >/dev/null 2>&1 &
  local victim=$!
  for _ in $(seq 1 600); do [ -e "$work/$name/checkpoint.pt" ] && break; sleep 0.05; done
  kill -9 "$victim" 2>/dev/null
  wait "$victim" 2>/dev/null
  if [ ! -e "$work/$name/checkpoint.pt" ] || [ -e "$work/$name/activations.h5" ] || [ -e "$work/$name/metrics.csv" ]; then
    echo "FAIL: the killed run ($norm) should leave a checkpoint and no finished files:"; ls "$work/$name"; failures=$((failures + 1))
  else
    passes=$((passes + 1))
  fi
  # What was written before the kill is whole: every part file opens, and ibn says how to resume.
  if /usr/bin/python3 -c "
import sys, glob, h5py
parts = glob.glob(sys.argv[1] + '/activations.parts/epoch-*.h5')
for p in parts:
    with h5py.File(p, 'r') as f: assert len(f['epochs']) == 1
" "$work/$name"; then passes=$((passes + 1)); else echo "FAIL: a part file of the killed run ($norm) is broken"; failures=$((failures + 1)); fi
  expect 1 "$name: incomplete, trained to epoch [0-9]+ of 200; resume with: ibn train --resume .*$name" -- train --status "$work/$name"
  expect 0 "resuming .*$name after epoch [0-9]+" -- train --resume "$work/$name" --progress lines
  expect 0 "$name: complete \(200 epochs\)" -- train --status "$work/$name"
  if diff <(cut -d, -f1-6 "$work/whole-$name/metrics.csv") <(cut -d, -f1-6 "$work/$name/metrics.csv") >/dev/null &&
     /usr/bin/python3 -c "
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1], 'r'), h5py.File(sys.argv[2], 'r')
names = []
a.visit(lambda k: names.append(k) if isinstance(a[k], h5py.Dataset) and not k.endswith('seconds') else None)
assert len(names) > 50 and all(np.array_equal(a[k][...], b[k][...]) for k in names)
" "$work/whole-$name/activations.h5" "$work/$name/activations.h5"; then
    passes=$((passes + 1))
  else
    echo "FAIL: the resumed run ($norm) differs from the uninterrupted one"; failures=$((failures + 1))
  fi
}
kill_and_resume killed ibnorm-t:lambda=1 every:20
# Early dumps too: the running statistics of a resumed BatchNorm would differ most there.
kill_and_resume killed-bn batchnorm list:0,1,2,3,5,8,13,21,34,55,89,144,200
expect 2 "'.*nowhere' is not a run directory \(no config.ini\)" -- train --status "$work/nowhere"
expect 2 "--resume '.*nowhere': no config.ini there" -- train --resume "$work/nowhere"

# A full disk (here a file-size limit, which fails writes the same way) stops training with a
# one-line error and the state checkpointed; once there is room, --resume finishes the run with
# the same arrays as an uninterrupted one.
full_args=(train --epochs 12 --dump-epochs list:0,5,12 --checkpoint-every 5 --progress quiet)
"$IBN" "${full_args[@]}" --out "$work/roomy" >/dev/null
(ulimit -f 100; trap '' XFSZ; exec "$IBN" "${full_args[@]}" --out "$work/full") >"$work/full.out" 2>&1
code=$?
if [ "$code" -eq 1 ] && [ "$(wc -l <"$work/full.out")" -eq 1 ] &&
   grep -q "cannot write '.*full/activations.parts/epoch-0.h5': File too large; training state checkpointed at epoch 0; resume with: ibn train --resume" "$work/full.out"; then
  passes=$((passes + 1))
else
  echo "FAIL: a full disk should give one clear line and exit 1 (got $code):"; cat "$work/full.out"; failures=$((failures + 1))
fi
expect 1 "full: incomplete, trained to epoch 0 of 12" -- train --status "$work/full"
expect 0 "done: .* after 12 epochs; 3 epochs dumped" -- train --resume "$work/full" --quiet
same_dumps() {  # same_dumps A.h5 B.h5: the same epochs 0, 5, 12 with equal arrays
  /usr/bin/python3 -c "
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1], 'r'), h5py.File(sys.argv[2], 'r')
assert sorted(a['epochs']) == sorted(b['epochs']) == ['0', '12', '5']
for e in a['epochs']:
    for l in a['epochs'][e]: assert np.array_equal(a['epochs'][e][l][...], b['epochs'][e][l][...]), (e, l)
" "$1" "$2"
}
if same_dumps "$work/roomy/activations.h5" "$work/full/activations.h5"; then
  passes=$((passes + 1))
else
  echo "FAIL: the run resumed after a full disk differs from the uninterrupted one"; failures=$((failures + 1))
fi
# The final gather is written straight to disk (no copy in memory), so it too can meet a full
# disk: with a limit that each part file fits under and the whole store does not, the run
# stops with one line and no temporary, keeps its parts, and a resume only gathers them.
store_kib=$(( $(stat -c %s "$work/roomy/activations.h5") / 1024 ))
(ulimit -f $(( store_kib * 2 / 3 )); trap '' XFSZ; exec "$IBN" "${full_args[@]}" --out "$work/gather") >"$work/gather.out" 2>&1
code=$?
if [ "$code" -eq 1 ] && [ "$(wc -l <"$work/gather.out")" -eq 1 ] &&
   grep -q "cannot write '.*gather/activations.h5': File too large; every epoch is trained and dumped: once the cause is fixed (room on the disk), finish the run with: ibn train --resume" "$work/gather.out" &&
   [ -z "$(find "$work/gather" -name '*.ibn-tmp-*')" ] && [ "$(ls "$work/gather/activations.parts" | wc -l)" -eq 3 ]; then
  passes=$((passes + 1))
else
  echo "FAIL: a store too large for the disk should give one clear line, exit 1, keep the parts and leave no temporary (got $code):"
  cat "$work/gather.out"; ls -la "$work/gather" "$work/gather/activations.parts"; failures=$((failures + 1))
fi
expect 1 "gather: incomplete, trained to epoch 12 of 12" -- train --status "$work/gather"
expect 0 "done: .* after 12 epochs; 3 epochs dumped" -- train --resume "$work/gather" --quiet
if same_dumps "$work/roomy/activations.h5" "$work/gather/activations.h5"; then
  passes=$((passes + 1))
else
  echo "FAIL: the store gathered on resume differs from the uninterrupted run's"; failures=$((failures + 1))
fi
expect 1 "cannot create the run directory '.*roomy/metrics.csv': Not a directory" -- train --out "$work/roomy/metrics.csv" --epochs 1
expect_one_line_error 1 train --out /proc/ibn-run --epochs 1

# ibn bench: runs and prints one line per estimator and size; unknown targets are usage errors.
expect 0 "ksg:k=3.* +300 +4 +[0-9.]+$" -- bench mi --n 300 --d 4 --runs 1 --device cpu --estimator ksg
expect 0 "kde entropy H\(T\), one bound \(var=0.1\) +300 +4 " -- bench mi --n 300 --d 4 --runs 1 --device cpu --estimator ksg
# --peer: ibn beside NPEET / scikit-learn / numpy on the same data; each case gets a line whether
# or not a peer is installed, and a missing peer or a broken peer script is named, not fatal.
expect 0 "ksg 4\+4 N=300 +[0-9.]+ +[0-9.]+ +(npeet|sklearn) +(missing|cannot|[0-9.]+ +[0-9.]+ +[0-9.]+x)" -- bench mi --peer --n 300 --d 4 --runs 1
expect 0 "kde H\(T\) d=4 N=300 +[0-9.]+ +[0-9.]+ +numpy +[0-9.]+ +[0-9.]+ +[0-9.]+x" -- bench mi --peer --n 300 --d 4 --runs 1
# bench train --peer: each model beside its Python twin, the ratio, and the twin's shape checked.
expect 0 "mlp:widths=10-7-5-4-3:act=tanh +ibsgd12 +[0-9.]+ +[0-9]+ +([0-9.]+ +[0-9.]+x|- +-)" -- bench train --device cpu --models mlp --peer --steps 2 --rounds 1
echo 'print("mlp steps/s 100.0 params 7")' > "$work/wrong_twin.py"
IBN_TRAIN_PEER_SCRIPT="$work/wrong_twin.py" expect 0 "not comparable: the twin has 7 parameters, ibn's model 352" -- bench train --device cpu --models mlp --peer --steps 2 --rounds 1
printf 'import sys\nprint("UserWarning: something", file=sys.stderr, flush=True)\nprint("mlp steps/s 100.0 params 352")\n' > "$work/noisy_twin.py"
IBN_TRAIN_PEER_SCRIPT="$work/noisy_twin.py" expect 0 "ibsgd12 +[0-9.]+ +[0-9]+ +100\.0 +[0-9.]+x$" -- bench train --device cpu --models mlp --peer --steps 2 --rounds 1
IBN_TRAIN_PEER_SCRIPT="$work/no-such-script.py" expect 0 "PyTorch from Python: not timed: .*no-such-script" -- bench train --device cpu --models mlp --peer --steps 2 --rounds 1
peer_out=$(IBN_PEER_SCRIPT="$work/no-such-script.py" "$IBN" bench mi --peer --n 300 --d 4 --runs 1 2>&1); peer_rc=$?
if [ $peer_rc -eq 0 ] && grep -q "the peers were not timed" <<<"$peer_out" && grep -Eq "ksg mixed 1\+labels N=300 +[0-9.]+ +[0-9.]+ +\(peers not timed\)" <<<"$peer_out"; then
  passes=$((passes + 1))
else
  echo "FAIL: bench mi --peer without its script -> exit $peer_rc:"; sed 's/^/    /' <<<"$peer_out" | head; failures=$((failures + 1))
fi
# The heavy-tail task and the transforms.
expect 0 "ksg:.*:transform=normal +0\.[0-9]+ +- +- +0\.4319 " -- mi --task student-t:dx=2,dy=2,rho=0,df=1 --n 2000 --estimator ksg:transform=normal
expect 0 "normal +per-coordinate normal scores" -- mi --help
expect 2 "unknown transform 'log'; expected one of: none, rank, normal" -- mi --task gaussian --n 100 --estimator ksg:transform=log
expect 2 "unknown benchmark 'disk'; expected one of: mi, train, norm" -- bench disk
expect 2 "--shape '12' must be ROWSxD" -- bench norm --shape 12
expect 2 "--multiprocessors must be between 1 and 100000" -- bench norm --multiprocessors 0
if "$IBN" --version | grep -q "CUDA device: none"; then
  # Without a GPU: the traffic table (what the design moves per element), then the timings skipped.
  expect 0 "ibnorm-t:lambda=1 +BFloat16 +32768x4096 block/row, registers +4\.13 +4 +6\.39 +6" -- bench norm --dtype bf16
  expect 0 "Timings skipped" -- bench norm --shape 100x33 --dtype fp32
  expect 0 "wrote .*norm\.csv" -- bench norm --shape 100x33 --csv "$work/norm.csv"
  if ! grep -q '^"layernorm",BFloat16,100,33,"warp/row, registers",132,' "$work/norm.csv"; then
    echo "FAIL: bench norm --csv lacks the layernorm bf16 100x33 row"; failures=$((failures + 1))
  fi
fi
expect 0 "usage: ibn bench train" -- bench train --help

echo "cli: $passes passed, $failures failed"
[ "$failures" -eq 0 ]
