#!/usr/bin/env bash
# Data-parallel `ibn train` over loopback (Gloo), as users launch it: --nproc 2, and two processes
# given torchrun's variables by hand. Checks that a 2-process run ends where the 1-process run
# does (float64: to rounding; float32: to reduction-order tolerance after a few steps), that
# --sync-bn is what makes BatchNorm runs agree, that a rank killed mid-run stops the other with
# a message and leaves a checkpoint that resumes to the uninterrupted result, and the one-line
# errors of bad environments. Every process runs under `timeout`: a hang fails the test.
# Run by CTest with IBN pointing at the binary.
set -u
IBN=${IBN:?set IBN to the ibn binary}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
failures=0
passes=0
limit=300  # seconds any one command may take

fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}
pass() { passes=$((passes + 1)); }

# compare A B TOL [KEYS...]: the stores agree to TOL (tests/compare_stores.py)
compare() {
  local a=$1 b=$2 tol=$3
  shift 3
  local out
  if out=$(/usr/bin/python3 "$here/compare_stores.py" "$a" "$b" --tolerance "$tol" "$@" 2>&1); then
    pass
  else
    fail "stores $a and $b differ beyond $tol: $out"
  fi
}

# differ A B TOL [KEYS...]: the stores (or checkpoints) differ by more than TOL somewhere.
differ() {
  local a=$1 b=$2 tol=$3
  shift 3
  if /usr/bin/python3 "$here/compare_stores.py" "$a" "$b" --tolerance "$tol" "$@" >/dev/null 2>&1; then
    fail "$a and $b agree to $tol, expected a difference"
  else
    pass
  fi
}

# A TCP port on 127.0.0.1 that was free a moment ago.
free_port() { /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

cd "$work" || exit 1
base=(--data ibsgd12 --model mlp --batch 64 --threads 1 --progress quiet)

# --- Equivalence ------------------------------------------------------------------------------
# float64, BatchNorm with synchronized statistics, 4 epochs (256 Adam steps): to rounding.
bn64=("${base[@]}" --norm batchnorm --epochs 4 --dtype float64 --dump-epochs all)
timeout $limit "$IBN" train "${bn64[@]}" --out one-bn >/dev/null || fail "1-process float64 batchnorm run"
timeout $limit "$IBN" train "${bn64[@]}" --sync-bn --nproc 2 --out two-bn >/dev/null || fail "2-process float64 batchnorm run"
# Metrics in float64 to 1e-9; stored activations are float32 (1e-6 of their scale). κ of a
# batch-area layer is measured per rank's share of the dump (its own batch statistics), so
# only the per-sample quantities are compared for it.
compare one-bn/activations.h5 two-bn/activations.h5 1e-6 --only epochs
compare one-bn/activations.h5 two-bn/activations.h5 1e-9 --only metrics
# The weights, running statistics and Adam's moments themselves, from the final checkpoints.
compare one-bn/checkpoint.pt two-bn/checkpoint.pt 1e-8
# Without --sync-bn each rank normalizes by its own half of the batch: another run.
timeout $limit "$IBN" train "${bn64[@]}" --nproc 2 --out two-bn-local >/dev/null || fail "2-process unsynchronized run"
differ one-bn/activations.h5 two-bn-local/activations.h5 1e-3 --only epochs
differ one-bn/checkpoint.pt two-bn-local/checkpoint.pt 1e-3

# float64, IBNorm-T per sample (token area), plain SGD: to 1e-12, κ included. (Adam divides by
# √v, which lifts the last bits of small gradient components: its runs drift apart from
# rounding by about 100x per epoch here, which is why the Adam checks above stop at 4 epochs.)
ib64=("${base[@]}" --norm ibnorm-t:lambda=1.5 --epochs 3 --dtype float64 --dump-epochs all --optimizer sgd --lr 0.05)
timeout $limit "$IBN" train "${ib64[@]}" --out one-ib >/dev/null || fail "1-process float64 ibnorm run"
timeout $limit "$IBN" train "${ib64[@]}" --nproc 2 --out two-ib >/dev/null || fail "2-process float64 ibnorm run"
compare one-ib/activations.h5 two-ib/activations.h5 1e-12 --only metrics contraction
compare one-ib/checkpoint.pt two-ib/checkpoint.pt 1e-12
compare one-ib/activations.h5 two-ib/activations.h5 1e-6 --only epochs

# float32, default dtype, a few steps: the order of the gradient sums differs, nothing else.
f32=("${base[@]}" --norm layernorm --epochs 2 --steps-per-epoch 4 --dump-epochs all)
timeout $limit "$IBN" train "${f32[@]}" --out one-32 >/dev/null || fail "1-process float32 run"
timeout $limit "$IBN" train "${f32[@]}" --nproc 2 --out two-32 >/dev/null || fail "2-process float32 run"
compare one-32/activations.h5 two-32/activations.h5 1e-4
compare one-32/checkpoint.pt two-32/checkpoint.pt 1e-4
/usr/bin/python3 - two-32/activations.h5 <<'EOF' && pass || fail "two-32's store does not record world_size 2 and gloo"
import sys, h5py
f = h5py.File(sys.argv[1])
sys.exit(0 if f.attrs["world_size"] == 2 and f.attrs["process_group"] == "gloo" else 1)
EOF

# --- A rank killed mid-run, then resumed ------------------------------------------------------
# Epochs of 16 random batches keep the 2-process runs short (synchronized statistics cost a
# collective each) and leave the killed run 27 epochs after its first checkpoint.
kill_run=("${base[@]}" --norm batchnorm --sync-bn --epochs 30 --steps-per-epoch 16 --dtype float64 --checkpoint-every 3
          --dump-epochs every:3)
timeout $limit "$IBN" train "${kill_run[@]}" --nproc 2 --out killed >killed.log 2>&1 &
launcher=$!
for _ in $(seq 600); do [ -f killed/checkpoint.pt ] && break; sleep 0.05; done
# $launcher is `timeout`; its child is the --nproc launcher, whose children are the ranks.
ranks=$(pgrep -P "$(pgrep -P "$launcher" | head -1)")
victim=""
for pid in $ranks; do
  if tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx RANK=1; then victim=$pid; fi
done
if [ -z "$victim" ]; then
  fail "could not find rank 1 of the killed run (ranks: $ranks)"
else
  kill -9 "$victim"
  start=$(date +%s)
  wait "$launcher"
  rc=$?
  took=$(($(date +%s) - start))
  if [ "$rc" -eq 1 ] && [ "$took" -lt 30 ] && grep -q "rank 1 was killed by signal 9" killed.log &&
     grep -q "resume with: ibn train --resume killed" killed.log; then
    pass
  else
    fail "killed run: exit $rc after ${took}s (want 1, < 30 s) with the launcher's and rank 0's messages:"
    sed 's/^/    /' killed.log
  fi
  if "$IBN" train --status killed >/dev/null; then fail "a killed run reads as complete"; else pass; fi
  timeout $limit "$IBN" train --resume killed --nproc 2 --progress quiet >/dev/null || fail "resuming the killed run"
  timeout $limit "$IBN" train "${kill_run[@]}" --out unbroken >/dev/null || fail "the uninterrupted 1-process run"
  compare unbroken/activations.h5 killed/activations.h5 1e-9 --only metrics
  compare unbroken/activations.h5 killed/activations.h5 1e-6 --only epochs
  compare unbroken/checkpoint.pt killed/checkpoint.pt 1e-7

  # Another world size: a finished 1-process run of 6 epochs, grown to 30 epochs (allowed with a
  # constant schedule and the same dumps up to its checkpoint: none here, so no part files are
  # needed) and resumed by 2 processes. Dumps do not touch training, so the metrics and the
  # final state are the dumping run's.
  crossed_run=("${base[@]}" --norm batchnorm --sync-bn --steps-per-epoch 16 --dtype float64 --checkpoint-every 3
               --dump-epochs none)
  timeout $limit "$IBN" train "${crossed_run[@]}" --epochs 6 --out crossed >/dev/null 2>&1 || fail "the 6-epoch 1-process run"
  sed -i 's/^epochs = 6$/epochs = 30/' crossed/config.ini
  timeout $limit "$IBN" train --resume crossed --nproc 2 --progress quiet >/dev/null || fail "resuming a 1-process run with 2"
  compare unbroken/activations.h5 crossed/activations.h5 1e-9 --only metrics
  compare unbroken/checkpoint.pt crossed/checkpoint.pt 1e-7
fi

# The launcher itself: SIGINT reaches the workers and the launcher dies of it (a calling script
# stops too); SIGKILL of the launcher (an OOM kill) takes the workers with it.
/usr/bin/python3 - "$IBN" "${base[@]}" --norm layernorm --epochs 400 --dump-epochs none --out interrupted <<'EOF2' && pass || fail "SIGINT to ibn train --nproc 2"
import os, signal, subprocess, sys, time
p = subprocess.Popen([sys.argv[1], "train", *sys.argv[2:], "--nproc", "2"], stderr=subprocess.DEVNULL)
deadline = time.time() + 60
while not os.path.exists("interrupted/config.ini") and time.time() < deadline:
    time.sleep(0.05)
time.sleep(0.5)
workers = [int(w) for w in subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True).stdout.split()]
p.send_signal(signal.SIGINT)
rc = p.wait(timeout=30)
time.sleep(0.2)
alive = [w for w in workers if os.path.exists(f"/proc/{w}") and open(f"/proc/{w}/stat").read().split()[2] != "Z"]
print("launcher", rc, "workers", workers, "alive", alive, file=sys.stderr)
sys.exit(0 if rc == -signal.SIGINT and len(workers) == 2 and not alive else 1)
EOF2
timeout $limit "$IBN" train "${base[@]}" --norm layernorm --epochs 400 --dump-epochs none --nproc 2 --out orphaned >/dev/null 2>&1 &
outer=$!
for _ in $(seq 600); do [ -f orphaned/config.ini ] && break; sleep 0.05; done
sleep 0.5
launcher_pid=$(pgrep -P "$outer")
orphans=$(pgrep -P "$launcher_pid")
kill -9 "$launcher_pid"
{ wait "$outer"; } 2>/dev/null
sleep 3
left=""
for pid in $orphans; do [ -d "/proc/$pid" ] && left="$left $pid"; done
if [ -z "$left" ] && [ "$(wc -w <<<"$orphans")" -eq 2 ]; then pass; else fail "workers ($orphans) outlived a SIGKILLed launcher:$left"; kill -9 $left 2>/dev/null; fi

# The same with torchrun's variables set by hand (no --nproc launcher): rank 0 sees rank 1 go.
port=$(free_port)
manual=("${base[@]}" --norm layernorm --epochs 400 --checkpoint-every 1 --dump-epochs none --dist-timeout 60)
WORLD_SIZE=2 RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port timeout $limit "$IBN" train "${manual[@]}" --out manual >rank0.log 2>&1 &
rank0=$!
WORLD_SIZE=2 RANK=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port timeout $limit "$IBN" train "${manual[@]}" --out manual >rank1.log 2>&1 &
rank1=$!
for _ in $(seq 600); do [ -f manual/checkpoint.pt ] && break; sleep 0.05; done
kill -9 "$(pgrep -P "$rank1")"  # $rank1 is `timeout`; its child is the rank
{ wait "$rank1"; } 2>/dev/null
start=$(date +%s)
wait "$rank0"
rc=$?
took=$(($(date +%s) - start))
if [ "$rc" -eq 1 ] && [ "$took" -lt 30 ] && grep -q "across the processes failed" rank0.log && [ -f manual/checkpoint.pt ]; then
  pass
else
  fail "rank 0 after rank 1 was killed: exit $rc after ${took}s (want 1, < 30 s):"
  sed 's/^/    /' rank0.log
fi

# torchrun's agent-store mode (TORCHELASTIC_USE_AGENT_STORE=True): the launcher serves the store
# and every rank is a client under /worker/attempt_<restart>. Here Python's TCPStore stands in
# for the agent (Debian 12's torchrun itself fails under Python 3.11 before starting a worker).
agent_port=$(free_port)
/usr/bin/python3 -c "
import datetime, time, torch.distributed as d
store = d.TCPStore('127.0.0.1', $agent_port, 3, True, datetime.timedelta(seconds=120))
time.sleep(120)" 2>/dev/null &
agent=$!
agent_env=(WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$agent_port TORCHELASTIC_USE_AGENT_STORE=True TORCHELASTIC_RESTART_COUNT=0)
agent_run=("${base[@]}" --norm layernorm --epochs 2 --dump-epochs none --dist-timeout 60 --out agent)
env "${agent_env[@]}" RANK=0 LOCAL_RANK=0 timeout $limit "$IBN" train "${agent_run[@]}" >agent0.log 2>&1 &
agent0=$!
env "${agent_env[@]}" RANK=1 LOCAL_RANK=1 timeout $limit "$IBN" train "${agent_run[@]}" >agent1.log 2>&1
agent1_rc=$?
wait "$agent0"
agent0_rc=$?
kill "$agent" 2>/dev/null
if [ "$agent0_rc" -eq 0 ] && [ "$agent1_rc" -eq 0 ] && "$IBN" train --status agent >/dev/null; then
  pass
else
  fail "agent-store launch: ranks exited $agent0_rc and $agent1_rc:"
  sed 's/^/    /' agent0.log agent1.log
fi

# experiments/slurm-train.sh with stand-ins for srun and scontrol: one task per rank, Slurm's
# variables turned into torchrun's.
mkdir -p fake-slurm
cat >fake-slurm/srun <<'EOF2'
#!/usr/bin/env bash
while [[ "$1" == --* ]]; do shift; done
pids=()
for ((r = 0; r < SLURM_NTASKS; r++)); do SLURM_PROCID=$r SLURM_LOCALID=$r "$@" & pids+=($!); done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
exit $rc
EOF2
printf '#!/bin/sh\necho 127.0.0.1\n' >fake-slurm/scontrol
chmod +x fake-slurm/srun fake-slurm/scontrol
slurm_port=$(free_port)
if PATH="$work/fake-slurm:$PATH" IBN="$IBN" SLURM_NTASKS=2 SLURM_JOB_NODELIST=node1 SLURM_CPUS_PER_TASK=1 MASTER_PORT=$slurm_port \
   timeout $limit bash "$here/../experiments/slurm-train.sh" "${base[@]}" --norm layernorm --epochs 2 --out slurm >slurm.log 2>&1 &&
   "$IBN" train --status slurm >/dev/null &&
   /usr/bin/python3 -c 'import sys, h5py; sys.exit(0 if h5py.File("slurm/activations.h5").attrs["world_size"] == 2 else 1)'; then
  pass
else
  fail "experiments/slurm-train.sh under stand-in srun:"
  sed 's/^/    /' slurm.log
fi

# --- Bad environments: one line, no hang ------------------------------------------------------
# one_line CODE PATTERN -- ENV... -- ARGS...: `env ENV ibn train ARGS` exits CODE within 60 s
# with one stderr line matching PATTERN.
one_line() {
  local code=$1 pattern=$2
  shift 3
  local environment=()
  while [ "$1" != "--" ]; do environment+=("$1"); shift; done
  shift
  local err rc
  err=$(env "${environment[@]}" timeout 60 "$IBN" train "$@" 2>&1 >/dev/null)
  rc=$?
  if [ "$rc" -ne "$code" ] || [ "$(wc -l <<<"$err")" -ne 1 ] || ! grep -Eq -- "$pattern" <<<"$err"; then
    fail "env ${environment[*]} ibn train $* -> exit $rc (want $code), stderr not one line matching /$pattern/:"
    sed 's/^/    /' <<<"$err" | head -10
  else
    pass
  fi
}
small=("${base[@]}" --epochs 1 --out bad-env)
one_line 2 "MASTER_ADDR is not" -- WORLD_SIZE=2 RANK=0 -- "${small[@]}"
one_line 2 "RANK is not" -- WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port -- "${small[@]}"
one_line 2 "RANK='5' must be an integer in \[0, 1\]" -- WORLD_SIZE=2 RANK=5 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port -- "${small[@]}"
one_line 2 "WORLD_SIZE='two'" -- WORLD_SIZE=two -- "${small[@]}"
one_line 2 "batch 64 is not divisible by the 3 processes" -- WORLD_SIZE=3 RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port -- "${small[@]}"
one_line 2 "batch 64 is not divisible by the 3 processes" -- IBN_TEST=1 -- "${small[@]}" --nproc 3
one_line 2 "inside a launch that already set WORLD_SIZE=2" -- WORLD_SIZE=2 RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port -- "${small[@]}" --nproc 2
one_line 2 "--nproc 0 must lie in" -- IBN_TEST=1 -- "${small[@]}" --nproc 0
# A busy port: this script holds it while rank 0 tries to serve on it.
/usr/bin/python3 -c '
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 0)); s.listen()
print(s.getsockname()[1], flush=True); time.sleep(120)' >busy.port &
holder=$!
for _ in $(seq 100); do [ -s busy.port ] && break; sleep 0.05; done
one_line 2 "MASTER_PORT $(cat busy.port) on 127.0.0.1 is in use" -- WORLD_SIZE=2 RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=$(cat busy.port) -- "${small[@]}"
kill "$holder" 2>/dev/null
# A rank whose peers never come gives up after --dist-timeout.
one_line 1 "did not all meet at 127.0.0.1:$port within 2 s" -- WORLD_SIZE=2 RANK=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port -- "${small[@]}" --dist-timeout 2
one_line 1 "did not all meet" -- WORLD_SIZE=2 RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port -- "${small[@]}" --dist-timeout 2
# A rank whose MASTER_PORT belongs to a program that accepts connections and never answers.
/usr/bin/python3 -c '
import socket, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
print(s.getsockname()[1], flush=True)
held = []
while True:
    held.append(s.accept()[0])' >mute.port &
mute=$!
for _ in $(seq 100); do [ -s mute.port ] && break; sleep 0.05; done
one_line 1 "did not all meet" -- WORLD_SIZE=2 RANK=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=$(cat mute.port) -- "${small[@]}" --dist-timeout 3
kill "$mute" 2>/dev/null

echo "dist_test: $passes passed, $failures failed"
[ "$failures" -eq 0 ]
