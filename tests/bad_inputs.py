#!/usr/bin/python3
"""Bad-input corpus for the ibn binary (issue 10, "Done when").

Every case runs `ibn ARGV` in its own scratch directory and fails when the command
  - exits with another code than the case expects (1 = data/IO failure, 2 = bad usage),
    is killed by a signal, runs past its timeout or grows past --max-rss;
  - prints anything but exactly one non-empty stderr line starting with 'ibn: ' that
    matches the case's regex (for expected non-zero exits), or a sanitizer report at all;
  - leaves a temporary file (*.tmp, *.tmp.*, *.in-memory.*) or anything in its TMPDIR,
    or a process running after it exits;
  - changes anything outside its work directory (ROOT/<id>/outside holds sentinel files),
    changes or removes a file that the case's setup planted (unless the case allows it),
    or writes anything at all while refusing its usage (exit 2);
  - fails the case's own extra check (e.g. "no file PWNED", "the JSON parses").

Layout per case: ROOT/<id>/work (the cwd, may hold the user's files), ROOT/<id>/outside
(sentinels), ROOT/<id>/tmp (TMPDIR for ibn and its children). Fixtures (a tiny trained run,
the same run analyzed, a killed run, a finished sweep, HDF5 files made with h5py) are built
once per corpus run under ROOT/fixtures, only when a selected case needs them.

    python3 tests/bad_inputs.py --ibn build/ibn [--jobs N] [--filter REGEX] [--timeout S]
                                [--list] [--slow] [--keep] [--root DIR]

--timeout S is the default per-case timeout (30 s); cases with their own timeout scale with
it (an ASan build: --timeout 120 makes every limit 4 times longer). The last line printed is
`N passed, N failed`; the exit status is 0 only when nothing failed. Skipped cases (a CUDA
device present, running as root, --slow not given) are printed and not counted.

Needs Python 3.11's standard library, and numpy and h5py for the HDF5 fixtures.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import fnmatch
import hashlib
import json
import os
import random
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

DEFAULT_TIMEOUT = 30.0   # seconds, per case (scaled by --timeout / 30)
SLOW_TIMEOUT = 120.0     # cases that train, draw figures or run a sweep
HANG_TIMEOUT = 20.0      # cases that hang today; after the fix they fail at once
FIXTURE_TIMEOUT = 300.0
TEMP_PATTERNS = ("*.tmp", "*.tmp.*", "*.in-memory.*", ".*.ibn-tmp-*")  # the last: ibn's own temporaries
SANITIZER_RE = re.compile(r"ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|"
                          r"UndefinedBehaviorSanitizer|ThreadSanitizer|MemorySanitizer")

# --------------------------------------------------------------------------------------------
# Cases


@dataclasses.dataclass
class Case:
    id: str
    argv: Union[Sequence[str], Callable[["Scratch"], Sequence[str]]]
    rc: Union[int, tuple]          # expected exit code(s)
    msg: Optional[str] = None      # regex (re.search) the single stderr line must match
    setup: Optional[Callable[["Scratch"], None]] = None
    timeout: Optional[float] = None
    check: Optional[Callable[["Scratch", "Result"], Optional[str]]] = None
    stdout: Optional[str] = None   # regex stdout must match
    stderr_not: Optional[str] = None  # regex stderr must not match
    one_line: bool = True          # apply the one-line stderr rule to non-zero exits
    may_change: Sequence[str] = ()  # globs (relative to work) of planted files it may change
    writes_ok: bool = False        # may write files even when it exits 2
    no_writes: bool = False        # may not create anything, whatever its exit code
    link_tmp: Optional[tuple] = None  # (NAME, TARGET): plant NAME.tmp.<pid of ibn> -> TARGET
    skip: Optional[Callable[["Context"], Optional[str]]] = None
    slow: bool = False             # excluded unless --slow
    note: str = ""                 # what the case is about (shown by --list)
    environment: dict = dataclasses.field(default_factory=dict)  # extra environment variables

    @property
    def codes(self) -> tuple:
        return self.rc if isinstance(self.rc, tuple) else (self.rc,)


@dataclasses.dataclass
class Result:
    rc: Optional[int]
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False
    rss_exceeded: bool = False


CASES: list[Case] = []


def case(*args, **kwargs) -> None:
    CASES.append(Case(*args, **kwargs))


# ---- helpers used by setups and checks ------------------------------------------------------

def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def user_files(s: "Scratch") -> None:
    """Files a user keeps in the directory they run ibn from."""
    write(s.work / "mine.txt", "my results, do not delete\n")
    write(s.work / "notes" / "a.txt", "notes\n")


def copy_fixture(name: str, dest: str = "run"):
    def setup(s: "Scratch") -> None:
        s.copy(name, dest)
    return setup


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    if old not in text:
        raise RuntimeError(f"{path}: no '{old}' to edit")
    path.write_text(text.replace(old, new, 1))


def chain(*setups):
    def setup(s: "Scratch") -> None:
        for f in setups:
            f(s)
    return setup


def no_file_named(name: str):
    def check(s: "Scratch", r: Result) -> Optional[str]:
        for dirpath, dirnames, filenames in os.walk(s.case_dir):
            if name in filenames or name in dirnames:
                return f"a file named {name} was created in {dirpath}"
        return None
    return check


def exists(rel: str, regular: bool = True, contains: Optional[str] = None):
    def check(s: "Scratch", r: Result) -> Optional[str]:
        p = s.work / rel
        if not os.path.lexists(p):
            return f"{rel} was not written"
        if regular and (p.is_symlink() or not p.is_file()):
            return f"{rel} is not a regular file (a symlink was followed or renamed into place)"
        if contains is not None and contains not in p.read_text(errors="replace"):
            return f"{rel} does not contain {contains!r}"
        return None
    return check


def not_exists(rel: str):
    def check(s: "Scratch", r: Result) -> Optional[str]:
        return f"{rel} exists" if os.path.lexists(s.work / rel) else None
    return check


def all_checks(*checks):
    def check(s: "Scratch", r: Result) -> Optional[str]:
        for c in checks:
            err = c(s, r)
            if err:
                return err
        return None
    return check


def strict_json_if_present(rel: str):
    def check(s: "Scratch", r: Result) -> Optional[str]:
        p = s.work / rel
        if not p.exists():
            return None

        def reject(const):
            raise ValueError(f"non-standard JSON constant {const}")
        try:
            json.loads(p.read_text(), parse_constant=reject)
        except ValueError as e:
            return f"{rel} is not valid JSON: {e}"
        return None
    return check


def stdout_lacks(pattern: str):
    def check(s: "Scratch", r: Result) -> Optional[str]:
        m = re.search(pattern, r.stdout)
        return f"stdout holds {m.group(0)!r}" if m else None
    return check


def no_cuda_device(ctx: "Context") -> Optional[str]:
    return "a CUDA device is present" if ctx.cuda_device else None


def cuda_built(ctx: "Context") -> Optional[str]:
    return "this build's LibTorch has CUDA" if ctx.cuda_built else None


def running_as_root(ctx: "Context") -> Optional[str]:
    return "running as root: permissions do not stop writes" if os.geteuid() == 0 else None


TRAIN_BASE = {"--data": "ibsgd12", "--model": "mlp:widths=4-3", "--epochs": "1", "--batch": "512",
              "--dump-epochs": "none", "--progress": "quiet", "--threads": "1"}


def train(*extra: str, **over: str) -> list[str]:
    """`ibn train` on the tiny base configuration; over: --opt=value replacements (key
    'dump_epochs' for '--dump-epochs'), extra: appended as given."""
    opts = dict(TRAIN_BASE)
    for k, v in over.items():
        opts["--" + k.replace("_", "-")] = v
    argv = ["train"]
    for k, v in opts.items():
        if v is not None:
            argv += [k, v]
    return argv + list(extra)


TASK = ["--task", "gaussian:dx=1,dy=1,rho=0.5"]
H5 = ["--input", "f.h5"]


def sweep_ini(grid: str, train_extra: str = "", analyze: str = "estimator = binning:bins=10",
              report: str = "figures = false", sweep: str = "out = sw") -> str:
    return (f"[sweep]\n{sweep}\n[grid]\n{grid}\n[train]\nmodel = mlp:widths=4-3\nepochs = 1\n"
            f"batch = 512\ndump-epochs = all\ncheckpoint-every = 0\nthreads = 1\n{train_extra}\n"
            f"[analyze]\n{analyze}\n[report]\n{report}\n")


def ini(text: str, name: str = "x.ini"):
    def setup(s: "Scratch") -> None:
        write(s.work / name, text)
    return setup


# ---- cli ------------------------------------------------------------------------------------

case("cli.unknown-command", ["frobnicate"], 2, r"frobnicate")
case("cli.unknown-global-option", ["--bogus"], 2, r"--bogus")
case("cli.no-args", [], 2, one_line=False, stdout=r"usage: ibn", note="usage on stdout, exit 2")

# ---- norms ----------------------------------------------------------------------------------

N84 = ["--shape", "8,4"]
case("norms.unknown-option", ["norms", "--bogus"], 2, r"--bogus")
case("norms.extra-positional", ["norms", "extra"], 2, r"positional|extra")
case("norms.unknown-norm", ["norms", "--spec", "nonsense"] + N84, 2, r"nonsense")
case("norms.unknown-key", ["norms", "--spec", "layernorm:foo=1"] + N84, 2, r"foo")
case("norms.lambda-abc", ["norms", "--spec", "ibnorm-t:lambda=abc"] + N84, 2, r"lambda")
case("norms.kappa-above-one", ["norms", "--spec", "ibnorm-t:kappa=1.5"] + N84, 2, r"kappa=1\.5 must lie strictly between 0 and 1")
case("norms.kappa-and-lambda", ["norms", "--spec", "ibnorm-t:kappa=0.5:lambda=1"] + N84, 2, r"lambda or kappa")
case("norms.kappa-unreachable", ["norms", "--spec", "ibnorm-s:kappa=1e-9"] + N84, 2, r"no lambda")
case("norms.order-bogus", ["norms", "--spec", "ln-tanh:order=middle"] + N84, 2, r"order='middle'")
case("norms.alpha-negative", ["norms", "--spec", "dyt:alpha=-1"] + N84, 2, r"alpha=-1 must be positive")
case("norms.noise-negative", ["norms", "--spec", "normalnorm:noise=-0.1"] + N84, 2, r"noise=-0\.1 must be >= 0")
case("norms.alpha-on-layernorm", ["norms", "--spec", "layernorm:alpha=1"] + N84, 2, r"'alpha' applies only to dyt")
case("norms.lambda-negative", ["norms", "--spec", "ibnorm-t:lambda=-1"] + N84, 2, r"lambda")
case("norms.lambda-huge", ["norms", "--spec", "ibnorm-l:lambda=1e308"] + N84, 2, r"lambda",
     note="issue 14: NaN output and kappa; bound lambda")
case("norms.lambda-tiny-positive", ["norms", "--spec", "ibnorm-t:lambda=1e-320"] + N84, 0,
     note="issue 16: a tiny positive lambda is not 'not a finite number'; accepted")
case("norms.eps-negative", ["norms", "--spec", "layernorm:eps=-1"] + N84, 2, r"eps")
case("norms.area-nonsense", ["norms", "--spec", "layernorm:area=nonsense"] + N84, 2, r"area|nonsense")
case("norms.groups-indivisible", ["norms", "--spec", "groupnorm:groups=8", "--shape", "4,12"], 2, r"groups")
case("norms.shape-zero", ["norms", "--spec", "layernorm", "--shape", "0,4"], 2, r"--shape")
case("norms.shape-negative", ["norms", "--spec", "layernorm", "--shape", "-3"], 2, r"--shape")
case("norms.shape-empty-item", ["norms", "--spec", "layernorm", "--shape", "4,,8"], 2, r"--shape",
     note="issue 14: '4,,8' is accepted")
case("norms.spec-without-shape", ["norms", "--spec", "layernorm"], 2, r"--shape")
case("norms.mode-bogus", ["norms", "--spec", "layernorm", "--mode", "bogus"] + N84, 2, r"--mode")
case("norms.device-bogus", ["norms", "--spec", "layernorm", "--device", "bogus"] + N84, 2, r"bogus")
case("norms.device-cuda-absent", ["norms", "--spec", "layernorm", "--device", "cuda"] + N84, 1, r"cuda|CUDA",
     skip=no_cuda_device, note="no device: a failure of the machine, not of usage (exit 1)")
case("norms.config-directory", ["norms", "--config", "cfgdir", "--spec", "layernorm"] + N84, 2,
     r"cfgdir|config", setup=lambda s: (s.work / "cfgdir").mkdir(), note="issue 14")
case("norms.config-missing", ["norms", "--config", "nope.ini"], 2, r"nope\.ini")
case("norms.config-unknown-key", ["norms", "--config", "c.ini"], 2, r"bogus",
     setup=ini("bogus = 1\n", "c.ini"))

# ---- contraction ----------------------------------------------------------------------------

C = ["contraction", "--shape", "64,8"]
case("contraction.lambdas-abc", C + ["--lambdas", "abc"], 2, r"--lambdas|abc")
case("contraction.lambdas-negative", C + ["--lambdas", "-1"], 2, r"lambda")
case("contraction.lambdas-nan", C + ["--lambdas", "nan"], 2, r"--lambdas|nan")
case("contraction.lambdas-empty", C + ["--lambdas", ""], 2, r"--lambdas")
case("contraction.lambdas-empty-item", C + ["--norms", "ibnorm-t", "--lambdas", "1,,2"], 2, r"--lambdas",
     note="like --shape 4,,8 (issue 14)")
case("contraction.lambdas-huge", C + ["--norms", "ibnorm-l", "--lambdas", "1e308"], 2, r"lambda",
     note="like ibnorm-l:lambda=1e308 (issue 14)")
case("contraction.norms-bogus", C + ["--norms", "bogus"], 2, r"bogus")
case("contraction.shape-zero", ["contraction", "--shape", "0,4"], 2, r"--shape")
case("contraction.csv-missing-dir", C + ["--norms", "layernorm", "--csv", "nodir/k.csv"], 1, r"nodir/k\.csv")
case("contraction.csv-tmp-symlink", C + ["--norms", "layernorm", "--csv", "k.csv"], 0,
     link_tmp=("k.csv", "../outside/victim.txt"), check=exists("k.csv", contains="spec,"),
     note="issue 4: k.csv.tmp.$$ -> ../outside/victim.txt must not be followed")

# ---- quant (issue 17) -----------------------------------------------------------------------

Q = ["quant", "--shape", "64,8", "--replicates", "2", "--no-figures", "--norms", "layernorm,ibnorm-t", "--lambdas", "1"]
case("quant.input-bogus", Q + ["--inputs", "bogus"], 2, r"bogus")
case("quant.input-student-df-1", Q + ["--inputs", "student-t:df=1"], 2, r"df")
case("quant.input-run-missing", Q + ["--inputs", "run:dir=nope"], 2, r"nope")
case("quant.input-run-layer-bogus", Q + ["--inputs", "run:dir=run:layer=bogus"], 2, r"bogus", setup=copy_fixture("run"))
case("quant.input-run-epoch-absent", Q + ["--inputs", "run:dir=run:epoch=999"], 2, r"999", setup=copy_fixture("run"))
case("quant.input-h5-no-dataset", Q + ["--inputs", "h5:file=f.h5"], 2, r"dataset", setup=copy_fixture("h5", "f.h5"))
case("quant.input-h5-missing-dataset", Q + ["--inputs", "h5:file=f.h5:dataset=/nope"], 2, r"nope",
     setup=copy_fixture("h5", "f.h5"))
case("quant.replicates-one", Q + ["--replicates", "1"], 2, r"replicates")
case("quant.baseline-absent", Q + ["--baseline", "rmsnorm"], 2, r"baseline")
case("quant.format-bogus", Q + ["--formats", "e3m4"], 2, r"e3m4")
case("quant.scaling-bogus", Q + ["--scalings", "block"], 2, r"block")
case("quant.norm-already-fp8", ["quant", "--norms", "layernorm:fp8=e4m3", "--baseline", "layernorm"], 2, r"fp8")
case("quant.shape-3d", Q + ["--shape", "4,4,4"], 2, r"--shape")
case("quant.out-is-file", Q + ["--out", "f"], 2, r"\bf\b", setup=lambda s: write(s.work / "f", "x"))
case("quant.ok", Q + ["--out", "q"], 0, check=exists("q/report.md", contains="Does IBNorm-T quantize better"))

# ---- mi -------------------------------------------------------------------------------------

h5 = copy_fixture("h5", "f.h5")
case("mi.no-inputs", ["mi"], 2, r"--input|--task")
case("mi.unknown-option", ["mi", "--bogus"], 2, r"--bogus")
case("mi.task-bogus", ["mi", "--task", "bogus"], 2, r"bogus")
case("mi.task-rho-2", ["mi", "--task", "gaussian:rho=2"], 2, r"rho")
case("mi.task-dx-0", ["mi", "--task", "gaussian:dx=0,dy=1,rho=0.5"], 2, r"dx")
case("mi.task-bad-boolean", ["mi", "--task", "gaussian:dx=1,dy=1,rho=0.5,shuffle=maybe"], 2, r"shuffle")
case("mi.n-zero", ["mi"] + TASK + ["--n", "0"], 2, r"--n|samples")
case("mi.n-negative", ["mi"] + TASK + ["--n", "-5"], 2, r"--n|samples")
case("mi.threads-negative", ["mi"] + TASK + ["--threads", "-2"], 2, r"--threads")
case("mi.threads-huge", ["mi"] + TASK + ["--threads", "100000"], 2, r"--threads")
case("mi.n-one", ["mi"] + TASK + ["--n", "1"], 2, r"--n|samples")
case("mi.n-huge", ["mi"] + TASK + ["--n", "100000000000", "--estimator", "binning"], (1, 2), r"--n",
     note="issue 16: an allocation error must name the option behind it")
case("mi.estimator-bogus", ["mi"] + TASK + ["--n", "100", "--estimator", "bogus"], 2, r"bogus")
case("mi.estimator-key-bogus", ["mi"] + TASK + ["--n", "100", "--estimator", "ksg:kk=3"], 2, r"kk")
case("mi.binning-bins-zero", ["mi"] + TASK + ["--n", "100", "--estimator", "binning:bins=0"], 2, r"bins")
case("mi.kde-var-negative", ["mi"] + TASK + ["--n", "100", "--estimator", "kde:var=-1"], 2, r"var")
case("mi.units-furlongs", ["mi"] + TASK + ["--n", "100", "--units", "furlongs"], 2, r"--units")
case("mi.discrete-maybe", ["mi"] + TASK + ["--n", "100", "--discrete", "maybe"], 2, r"--discrete")
case("mi.out-bad-extension", ["mi"] + TASK + ["--n", "100", "--estimator", "binning", "--out", "r.txt"], 2,
     r"--out|r\.txt")
case("mi.out-missing-dir", ["mi"] + TASK + ["--n", "100", "--estimator", "binning", "--out", "nodir/r.json"],
     1, r"nodir/r\.json")
case("mi.out-tmp-symlink", ["mi"] + TASK + ["--n", "500", "--estimator", "ksg", "--out", "r.json"], 0,
     link_tmp=("r.json", "../outside/victim.txt"), check=exists("r.json", contains='"results"'),
     note="issue 4: r.json.tmp.$$ -> ../outside/victim.txt must not be followed")
case("mi.input-missing", ["mi", "--input", "nonexistent.h5", "--list"], 2, r"nonexistent\.h5")
case("mi.input-text-file", ["mi", "--input", "notes.txt", "--list"], 2, r"notes\.txt",
     setup=lambda s: write(s.work / "notes.txt", "not hdf5\n"))
case("mi.input-without-datasets", ["mi"] + H5, 2, r"--a|--b", setup=h5)
case("mi.dataset-missing", ["mi"] + H5 + ["--a", "/missing", "--b", "/lab"], 2, r"/missing", setup=h5)
case("mi.dataset-is-group", ["mi"] + H5 + ["--a", "/g", "--b", "/lab"], 2, r"/g\b", setup=h5)
case("mi.path-through-dataset", ["mi"] + H5 + ["--a", "/x/y", "--b", "/lab"], 2, r"/x", setup=h5,
     note="issue 9: H5::LocationException escapes as terminate")
case("mi.rows-mismatch", ["mi"] + H5 + ["--a", "/x", "--b", "/short", "--estimator", "binning"], 1,
     r"50|40|samples", setup=h5)
case("mi.empty-dataset", ["mi"] + H5 + ["--a", "/empty", "--b", "/empty", "--estimator", "binning"], 1,
     r"empty", setup=h5)
case("mi.constant-data", ["mi"] + H5 + ["--a", "/const", "--b", "/lab", "--estimator", "binning",
                                        "--estimator", "kde", "--estimator", "ksg"], 0,
     setup=h5, check=stdout_lacks(r"(?i)\bnan\b"), note="MI with a constant is 0, not NaN")
case("mi.nan-data", ["mi"] + H5 + ["--a", "/xnan", "--b", "/lab", "--estimator", "binning"], 1, r"NaN",
     setup=h5)
case("mi.discrete-nan", ["mi"] + H5 + ["--a", "/xnan", "--b", "/x", "--discrete", "a", "--estimator", "binning"],
     1, r"NaN", setup=h5, note="issue 14: --discrete makes NaN a class")
case("mi.binning-width-tiny", ["mi"] + H5 + ["--a", "/x", "--b", "/lab", "--estimator", "binning:width=1e-300"],
     2, r"width", setup=h5, note="issue 14: returns 0")
case("mi.ksg-unique-labels", ["mi"] + H5 + ["--a", "/x", "--b", "/y", "--estimator", "ksg"], 1,
     r"label|once|sample", setup=h5, note="issue 8: SIGFPE")
case("mi.ksg-k-too-large", ["mi"] + H5 + ["--a", "/x", "--b", "/lab", "--estimator", "ksg:k=100"], 1,
     r"\bk\b|k=100", setup=h5, note="issue 16: say k >= n")
case("mi.ksg-k-zero", ["mi"] + H5 + ["--a", "/x", "--b", "/lab", "--estimator", "ksg:k=0"], 2, r"k=0", setup=h5)
case("mi.ksg-tree-k-too-large", ["mi"] + TASK + ["--n", "5", "--estimator", "ksg:k=5:method=tree"], 1, r"k=5")
case("mi.ksg-method-bogus", ["mi"] + TASK + ["--n", "50", "--estimator", "ksg:method=kdtree"], 2, r"method")
case("mi.transform-bogus", ["mi"] + TASK + ["--n", "50", "--estimator", "kde:transform=log"], 2, r"transform 'log'")
case("mi.transform-empty", ["mi"] + TASK + ["--n", "50", "--estimator", "ksg:transform="], 2, r"transform")
case("mi.student-t-df-zero", ["mi", "--task", "student-t:df=0", "--n", "50", "--estimator", "ksg"], 2, r"df=0")
for est in ("mine", "infonce", "smile"):
    case(f"mi.{est}-nan-scores",
         ["mi"] + TASK + ["--n", "400", "--estimator", f"{est}:lr=1e12:steps=100", "--out", "r.json"], 1,
         rf"^(?=.*{est})(?=.*(?i:nan|finite))", check=not_exists("r.json"),
         note="issue 7: every validation score NaN segfaults; --out is written only when all succeed")
case("mi.nan-estimate-json", ["mi"] + TASK + ["--n", "200", "--estimator", "kde:var=1e308", "--out", "r.json"],
     (0, 1, 2), r"var|NaN|nan|finite", check=strict_json_if_present("r.json"),
     note="issue 14: '\"estimate\": nan' is invalid JSON: refuse, or write null")
case("mi.list-corrupt", ["mi", "--input", "corrupt.h5", "--list"], 1, r"corrupt\.h5",
     setup=copy_fixture("corrupt_h5", "corrupt.h5"), note="issue 9: H5::GroupIException escapes")
case("mi.read-corrupt", ["mi", "--input", "corrupt.h5", "--a", "/g0/d0", "--b", "/g3/d3", "--estimator", "binning"],
     (1, 2), r"corrupt\.h5", setup=copy_fixture("corrupt_h5", "corrupt.h5"))
case("mi.list-garbage-after-signature", ["mi", "--input", "garbage.h5", "--list"], (1, 2), r"garbage\.h5",
     setup=copy_fixture("garbage_h5", "garbage.h5"))
case("mi.list-truncated", ["mi", "--input", "trunc.h5", "--list"], (1, 2), r"trunc\.h5",
     setup=copy_fixture("truncated_h5", "trunc.h5"))
case("mi.list-hardlink-cycle", ["mi", "--input", "cycle.h5", "--list"], 0, stdout=r"/a/x",
     setup=copy_fixture("cycle_h5", "cycle.h5"), timeout=HANG_TIMEOUT,
     note="issue 10: unbounded recursion (stack overflow or bad_alloc)")
case("mi.device-cuda-absent", ["mi"] + TASK + ["--n", "100", "--estimator", "binning", "--device", "cuda"], 1,
     r"cuda|CUDA", skip=no_cuda_device)
case("mi.config-directory", ["mi", "--config", "cfgdir"] + TASK + ["--n", "100", "--estimator", "binning"], 2,
     r"cfgdir|config", setup=lambda s: (s.work / "cfgdir").mkdir(), note="like issue 14's --config <dir>")

# ---- train ----------------------------------------------------------------------------------

# Data-parallel runs (issue 16): torchrun's variables and --nproc.
TORCHRUN = {"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
case("train.dist-no-master-addr", train(out="r"), 2, r"WORLD_SIZE=2 is set but MASTER_ADDR is not",
     environment={"WORLD_SIZE": "2", "RANK": "0"}, no_writes=True)
case("train.dist-no-rank", train(out="r"), 2, r"RANK is not", environment=TORCHRUN | {"RANK": ""}, no_writes=True,
     note="RANK set but empty")
case("train.dist-rank-too-large", train(out="r"), 2, r"RANK='2' must be an integer in \[0, 1\]",
     environment=TORCHRUN | {"RANK": "2"}, no_writes=True)
case("train.dist-world-size-word", train(out="r"), 2, r"WORLD_SIZE='two'", environment={"WORLD_SIZE": "two"}, no_writes=True)
case("train.dist-rank-without-world", train(out="r"), 2, r"RANK is set but WORLD_SIZE is not",
     environment={"RANK": "1"}, no_writes=True)
case("train.dist-port-zero", train(out="r"), 2, r"MASTER_PORT='0'", environment=TORCHRUN | {"MASTER_PORT": "0"}, no_writes=True)
case("train.dist-world-not-dividing-batch", train(out="r"), 2, r"--batch 512 is not divisible by the 3 processes",
     environment=TORCHRUN | {"WORLD_SIZE": "3"}, no_writes=True)
case("train.dist-last-batch-too-small-for-batchnorm",
     ["train", "--data", "gaussian-mixture:n=164", "--model", "mlp:widths=4-3", "--norm", "batchnorm", "--batch", "64",
      "--epochs", "1", "--dump-epochs", "none", "--progress", "quiet", "--threads", "1", "--out", "r"], 2,
     r"last batch of each epoch holds \d+ samples .* fewer than 2 for each of the 2 processes",
     environment=TORCHRUN, no_writes=True, note="a batch-area layer needs 2 rows on each rank")
case("train.nproc-batch-too-small-for-batchnorm", train("--nproc", "2", out="r", batch="2", norm="batchnorm"), 2,
     r"--batch 2 gives each of the 2 processes 1 sample, and a batch-area normalizer needs 2", no_writes=True)
case("train.nproc-not-dividing-batch", train("--nproc", "3", out="r"), 2, r"--batch 512 is not divisible by the 3 processes",
     no_writes=True)
case("train.nproc-zero", train("--nproc", "0", out="r"), 2, r"--nproc 0 must lie in", no_writes=True)
case("train.nproc-inside-torchrun", train("--nproc", "2", out="r"), 2, r"already set WORLD_SIZE=2",
     environment=TORCHRUN, no_writes=True)
case("train.dist-timeout-zero", train("--dist-timeout", "0", out="r"), 2, r"--dist-timeout 0 must lie in", no_writes=True)
case("train.dtype-bogus", train("--dtype", "float8", out="r"), 2, r"--dtype 'float8' must be one of", no_writes=True)
case("train.sync-bn-word", train("--sync-bn", "maybe", out="r"), 2, r"sync-bn", no_writes=True)
case("train.dist-peers-never-come", train("--dist-timeout", "2", out="r"), 1, r"did not all meet at 127\.0\.0\.1:\d+ within 2 s",
     environment=TORCHRUN | {"RANK": "1", "MASTER_PORT": "9"}, no_writes=True,
     note="rank 1 alone, rank 0 never serves the port: bounded by --dist-timeout")
case("train.missing-out", train(), 2, r"--out")
case("train.unknown-option", train("--bogus", out="r"), 2, r"--bogus")
case("train.data-bogus", train(out="r", data="bogus"), 2, r"bogus")
case("train.data-unknown-key", train(out="r", data="ibsgd12:bogus=1"), 2, r"bogus")
case("train.data-test-out-of-range", train(out="r", data="ibsgd12:test=2"), 2, r"test")
case("train.text-path-missing", train(out="r", data="text:path=nosuchdir"), 2, r"nosuchdir")
case("train.model-bogus", train(out="r", model="bogus"), 2, r"bogus")
case("train.model-widths-zero", train(out="r", model="mlp:widths=0"), 2, r"widths")
case("train.model-act-bogus", train(out="r", model="mlp:act=bogus"), 2, r"act|bogus")
case("train.norm-bogus", train(out="r", norm="bogus"), 2, r"bogus")
case("train.norm-attn-bogus", train(out="r", norm_attn="bogus"), 2, r"bogus|--norm-attn",
     note="a malformed spec is accepted when the model has no attention (mlp)")
case("train.optimizer-bogus", train(out="r", optimizer="bogus"), 2, r"--optimizer")
case("train.schedule-bogus", train(out="r", schedule="bogus"), 2, r"--schedule")
case("train.batch-zero", train(out="r", batch="0"), 2, r"--batch")
case("train.validation-one", train(out="r", validation="1"), 2, r"--validation 1 must lie in \[0, 1\)")
case("train.validation-negative", train(out="r", validation="-0.5"), 2, r"--validation -0.5")
case("train.validation-abc", train(out="r", validation="abc"), 2, r"validation")
case("train.validation-too-small", train(out="r", validation="1e-9", epochs="1"), 2, r"leaves no validation")
case("train.epochs-zero", train(out="r", epochs="0"), 2, r"--epochs")
case("train.epochs-overflow", train(out="r", epochs="99999999999999999999"), 2, r"--epochs")
case("train.epochs-1e11", train(out="r", epochs="1e11", dump_epochs="all"), 2, r"--epochs",
     note="issue 11 (Boost rejects '1e11' as an integer)")
case("train.epochs-huge-dump-all", train(out="r", epochs="100000000000", dump_epochs="all"), 2,
     r"--epochs|--dump-epochs", timeout=HANG_TIMEOUT, note="issue 11: hangs, memory grows ~200 MB/s")
case("train.dump-epochs-log-huge", train(out="r", dump_epochs="log:100000000000"), 2, r"--dump-epochs|log",
     timeout=HANG_TIMEOUT, note="issue 11: hangs")
case("train.threads-huge", train(out="r", threads="100000"), 2, r"--threads", timeout=HANG_TIMEOUT,
     note="issue 11: hangs")
case("train.threads-negative", train(out="r", threads="-4"), 2, r"--threads", note="issue 14")
case("train.seed-negative", train(out="r", seed="-1"), 2, r"--seed", note="issue 14")
case("train.checkpoint-every-negative", train(out="r", checkpoint_every="-1"), 2, r"--checkpoint-every",
     note="issue 14")
case("train.steps-per-epoch-negative", train(out="r", steps_per_epoch="-1"), 2, r"--steps-per-epoch")
case("train.warmup-beyond-epochs", train(out="r", warmup_epochs="5", epochs="2"), 2, r"--warmup-epochs")
case("train.lr-negative", train(out="r", lr="-1"), 2, r"--lr")
case("train.lr-nan", train(out="r", lr="nan"), 2, r"--lr")
case("train.lr-inf", train(out="r", lr="inf"), 2, r"--lr", note="issue 14: trains to NaN")
case("train.loss-becomes-nan", train(out="r", batch="64", model="mlp:widths=1-3", norm="layernorm:eps=0"),
     1, r"^(?=.*loss became NaN at epoch 1, step 1)(?=.*eps=0)", writes_ok=True, timeout=SLOW_TIMEOUT,
     note="issue 14: stop at the first non-finite loss, naming the step and the cause (LayerNorm over one feature "
     "with eps=0 divides 0 by 0; learning rates that overflow are refused up front, see train.lr-overflows-float)")
case("train.lr-overflows-float", train(out="r", lr="1e38", batch="64"), (1, 2), r"lr", writes_ok=True,
     timeout=SLOW_TIMEOUT, note="'value cannot be converted to type float without overflow' names nothing")
case("train.dump-layers-nosuch", train(out="r", dump_layers="nosuch"), 2, r"nosuch")
case("train.dump-samples-zero", train(out="r", dump_samples="subset:0"), 2, r"--dump-samples")
case("train.eval-samples-one", train(out="r", eval_samples="1"), 2, r"--eval-samples '1'")
case("train.eval-samples-word", train(out="r", eval_samples="most"), 2, r"--eval-samples 'most'")
case("train.eval-samples-huge", train(out="r", eval_samples="99999999999999999999"), 2, r"--eval-samples")
case("train.dump-epochs-beyond", train(out="r", epochs="2", dump_epochs="list:99"), 2, r"99")
case("train.dump-epochs-bogus", train(out="r", dump_epochs="bogus"), 2, r"--dump-epochs")
case("train.dump-epochs-every-zero", train(out="r", dump_epochs="every:0"), 2, r"--dump-epochs|every")
case("train.dump-dtype-int8", train(out="r", dump_dtype="int8"), 2, r"--dump-dtype|int8")
case("train.dump-maps-bogus", train(out="r", dump_maps="bogus"), 2, r"--dump-maps")
case("train.progress-bogus", train(out="r", progress="bogus"), 2, r"--progress")
case("train.config-directory", train("--config", "cfgdir", out="r"), 2, r"cfgdir|config",
     setup=lambda s: (s.work / "cfgdir").mkdir(), note="issue 14")
case("train.config-unknown-key", train("--config", "c.ini", out="r"), 2, r"bogus",
     setup=ini("[train]\nbogus = 1\n", "c.ini"))
case("train.out-is-file", train(out="afile"), 1, r"afile", setup=lambda s: write(s.work / "afile", "x\n"))
case("train.out-under-file", train(out="afile/run"), 1, r"afile", setup=lambda s: write(s.work / "afile", "x\n"))


def readonly_dir(s: "Scratch") -> None:
    (s.work / "ro").mkdir()
    os.chmod(s.work / "ro", 0o555)


case("train.out-readonly-dir", train(out="ro/run"), 1, r"ro/run", setup=readonly_dir, skip=running_as_root)
case("train.out-dot-keeps-user-tmp-files", train(out=".", batch="512"), 0, timeout=SLOW_TIMEOUT,
     setup=lambda s: (write(s.work / "notes.tmp.txt", "mine\n"), write(s.work / "my.tmp.data", "mine too\n")),
     note="issue 3: --out DIR deletes the user's files whose names contain .tmp.")
case("train.resume-not-a-run", ["train", "--resume", "emptydir"], 2, r"emptydir",
     setup=lambda s: (s.work / "emptydir").mkdir())
case("train.status-not-a-run", ["train", "--status", "emptydir"], 2, r"emptydir",
     setup=lambda s: (s.work / "emptydir").mkdir())
case("train.status-missing-dir", ["train", "--status", "nodir"], 2, r"nodir")
case("train.status-incomplete", ["train", "--status", "run"], 1, one_line=False, stdout=r"incomplete",
     setup=copy_fixture("killed"), note="not an error: exit 1 and the state on stdout")

killed = copy_fixture("killed")


def killed_edited(old: str, new: str):
    def setup(s: "Scratch") -> None:
        killed(s)
        edit(s.work / "run" / "config.ini", old, new)
    return setup


RESUME = ["train", "--resume", "run", "--progress", "quiet"]
case("train.resume-unchanged", RESUME, 0, setup=killed, may_change=["run/*"], timeout=SLOW_TIMEOUT,
     note="control: resuming an untouched killed run works")
case("train.resume-seed-changed", RESUME, 2, r"seed", setup=killed_edited("seed = 0", "seed = 5"),
     timeout=SLOW_TIMEOUT, note="issue 12")
case("train.resume-optimizer-changed", RESUME, 2, r"optimizer",
     setup=killed_edited("optimizer = adam", "optimizer = sgd"), timeout=SLOW_TIMEOUT,
     note="issue 12: a LibTorch internal assert")
case("train.resume-epochs-below-checkpoint", RESUME, 2, r"epochs",
     setup=killed_edited("epochs = 20", "epochs = 1"), timeout=SLOW_TIMEOUT,
     note="issue 12: 'done after N epochs' with fewer epochs than the checkpoint")
case("train.resume-dump-epochs-changed", RESUME, 2, r"dump-epochs",
     setup=killed_edited("dump-epochs = every:5", "dump-epochs = every:3"), timeout=SLOW_TIMEOUT,
     note="issue 12")
case("train.resume-more-epochs", RESUME, 0, setup=killed_edited("epochs = 20", "epochs = 22"),
     may_change=["run/*"], timeout=SLOW_TIMEOUT, note="issue 12: adding epochs is safe")
case("train.resume-complete", RESUME, 0, stdout=r"complete \(2 epochs\); nothing to resume", setup=copy_fixture("run"),
     one_line=False, no_writes=True, note="a finished run: says so, changes nothing")
case("train.resume-complete-more-epochs", RESUME, 1, r"epoch-0\.h5' is missing",
     setup=lambda s: (copy_fixture("run")(s), edit(s.work / "run" / "config.ini", "epochs = 2", "epochs = 3")),
     no_writes=True, note="its parts are gathered: refused before anything is created (an empty parts directory "
          "would mark the complete run incomplete)")
case("train.resume-config-garbled", RESUME, (1, 2), r"seed|config\.ini",
     setup=killed_edited("seed = 0", "seed = abc"), timeout=SLOW_TIMEOUT, note="issue 16: 'stoll'")

# ---- analyze --------------------------------------------------------------------------------

run = copy_fixture("run")
A = ["analyze", "run", "--quiet"]
case("analyze.no-run", ["analyze"], 2, r"run|RUN")
case("analyze.unknown-option", ["analyze", "run", "--bogus"], 2, r"--bogus", setup=run)
case("analyze.missing-dir", ["analyze", "nodir"], 2, r"nodir")
case("analyze.empty-dir", ["analyze", "emptydir"], 2, r"emptydir", setup=lambda s: (s.work / "emptydir").mkdir())
case("analyze.incomplete", A, 2, r"resume", setup=killed, note="a killed run: names how to resume")
case("analyze.corrupt-store", A + ["--estimator", "binning"], 1, r"activations\.h5", stderr_not=r"resume",
     setup=chain(run, lambda s: truncate(s.work / "run" / "activations.h5")),
     note="issue 16: a corrupt complete store must not suggest --resume")
case("analyze.estimator-bogus", A + ["--estimator", "bogus"], 2, r"bogus", setup=run)
case("analyze.threads-negative", A + ["--threads", "-1"], 2, r"--threads", setup=run)
case("analyze.beta-negative", A + ["--beta", "-1"], 2, r"--beta", setup=run)
case("analyze.beta-nan", A + ["--beta", "nan"], 2, r"--beta", setup=run)
case("analyze.layers-nosuch", A + ["--layers", "nosuch"], 2, r"nosuch", setup=run)
case("analyze.epochs-not-dumped", A + ["--epochs", "99"], 2, r"99", setup=run)
case("analyze.epochs-abc", A + ["--epochs", "abc"], 2, r"abc", setup=run)
case("analyze.split-bogus", A + ["--split", "bogus"], 2, r"--split", setup=run)
case("analyze.max-samples-negative", A + ["--max-samples", "-1"], 2, r"--max-samples", setup=run)
case("analyze.max-samples-one", A + ["--max-samples", "1", "--estimator", "binning"], (1, 2),
     r"--max-samples|sample", setup=run)
case("analyze.device-bogus", A + ["--device", "bogus"], 2, r"bogus", setup=run)
case("analyze.mine-nan-scores", A + ["--estimator", "mine:lr=1e12:steps=100", "--layers", "fc1", "--epochs", "0"],
     1, r"^(?=.*mine)(?=.*(?i:nan|finite))", setup=run, timeout=SLOW_TIMEOUT,
     check=lambda s, r: None if not (s.work / "run" / "analysis.csv").exists() else "analysis.csv written",
     note="issue 7: segfault; analyze writes all of its outputs or none")

# ---- sweep ----------------------------------------------------------------------------------

case("sweep.no-file", ["sweep"], 2, r"experiment")
case("sweep.missing-file", ["sweep", "nofile.ini"], 2, r"nofile\.ini")
case("sweep.section-unterminated", ["sweep", "x.ini"], 2, r"\[grid", setup=ini("[grid\nnorm = layernorm\n"))
case("sweep.key-without-equals", ["sweep", "x.ini"], 2, r"norm", setup=ini("[grid]\nnorm\n"))
case("sweep.empty-alternative", ["sweep", "x.ini"], 2, r"norm", setup=ini("[grid]\nnorm = layernorm | \n"))
case("sweep.no-grid", ["sweep", "x.ini"], 2, r"grid", setup=ini("[train]\nepochs = 1\n"))
case("sweep.sweep-unknown-key", ["sweep", "x.ini"], 2, r"bogus",
     setup=ini("[sweep]\nbogus = 1\n[grid]\nseed = 0\n"))
case("sweep.key-in-grid-and-train", ["sweep", "x.ini"], 2, r"seed", setup=ini(sweep_ini("seed = 0 | 1", "seed = 2")))
case("sweep.analyze-threads-negative", ["sweep", "x.ini"], 2, r"--threads -1", no_writes=True,
     setup=ini(sweep_ini("seed = 0 | 1", analyze="estimator = binning:bins=10\nthreads = -1")),
     note="refused before any point trains")
case("sweep.lambda-and-kappa", ["sweep", "x.ini"], 2, r"both lambda and kappa", no_writes=True,
     setup=ini(sweep_ini("norm = ibnorm-t\nlambda = 0.5\nkappa = 0.5")))
case("sweep.kappa-out-of-range", ["sweep", "x.ini"], 2, r"kappa", no_writes=True,
     setup=ini(sweep_ini("norm = ibnorm-t\nkappa = 1.5")))
case("sweep.tune-seeded-test-split", ["sweep", "x.ini"], 2, r"split_seed=N", no_writes=True,
     setup=ini(sweep_ini("seed = 0 | 1") + "[tune]\nlr = 0.1 | 0.2\n"),
     note="ibsgd12's split follows the run seed: tuning runs would train on the grid's test samples")
case("sweep.tune-seed-collision", ["sweep", "x.ini"], 2, r"seed 1000 is also a tuning seed", no_writes=True,
     setup=ini(sweep_ini("seed = 0 | 1000") + "[tune]\nlr = 0.1\n"))
case("sweep.tune-without-lr", ["sweep", "x.ini"], 2, r"\[tune\] needs lr", no_writes=True,
     setup=ini(sweep_ini("seed = 0") + "[tune]\nseeds = 2\n"))
case("sweep.tune-lr-in-train", ["sweep", "x.ini"], 2, r"lr is in \[train\] and \[tune\]", no_writes=True,
     setup=ini(sweep_ini("seed = 0", "lr = 0.1") + "[tune]\nlr = 0.1 | 0.2\n"))
case("sweep.tune-bad-rate", ["sweep", "x.ini"], 2, r"\('fast'\) for option 'lr'", no_writes=True,
     setup=ini(sweep_ini("seed = 0", "data = ibsgd12:split_seed=0") + "[tune]\nlr = 0.1 | fast\n"), note="checked before any point runs")
case("sweep.tune-zero-rate", ["sweep", "x.ini"], 2, r"--lr 0 must lie", no_writes=True,
     setup=ini(sweep_ini("seed = 0", "data = ibsgd12:split_seed=0") + "[tune]\nlr = 0 | 0.1\n"))
case("sweep.tune-epochs-below-warmup", ["sweep", "x.ini"], 2, r"--warmup-epochs", no_writes=True,
     setup=ini(sweep_ini("seed = 0", "warmup-epochs = 3\ndata = ibsgd12:split_seed=0") + "[tune]\nlr = 0.1\nepochs = 2\n"))
case("sweep.tune-validation-bad", ["sweep", "x.ini"], 2, r"validation = '0'", no_writes=True,
     setup=ini(sweep_ini("seed = 0") + "[tune]\nlr = 0.1\nvalidation = 0\n"))
case("sweep.tune-unknown-key", ["sweep", "x.ini"], 2, r"unknown key 'rate'", no_writes=True,
     setup=ini(sweep_ini("seed = 0") + "[tune]\nlr = 0.1\nrate = 2\n"))
X = ini(sweep_ini("norm = layernorm | ibnorm-t\nlambda = 0.5"))
case("sweep.jobs-zero", ["sweep", "x.ini", "-j", "0"], 2, r"-j|--jobs", setup=X)
case("sweep.shard-out-of-range", ["sweep", "x.ini", "--shard", "2/2", "--status"], 2, r"--shard", setup=X)
case("sweep.shard-garbage", ["sweep", "x.ini", "--shard", "x", "--status"], 2, r"--shard", setup=X)
case("sweep.shard-zero-count", ["sweep", "x.ini", "--shard", "1/0", "--status"], 2, r"--shard", setup=X)
case("sweep.shard-valid-status", ["sweep", "x.ini", "--shard", "1/2", "--status"], 0, stdout=r"pending",
     setup=X, no_writes=True, note="issue 6: parse_shard reads a destroyed temporary (ASan)")
case("sweep.ids-differ-in-exponent-sign", ["sweep", "x.ini", "--status"], 0, stdout=r"\b2 pending",
     setup=ini(sweep_ini("lr = 1e-2 | 1e+2")), no_writes=True,
     note="issue 5: 1e-2 and 1e+2 collapse into one point")
case("sweep.ids-differ-in-slash", ["sweep", "x.ini", "--status"], 0, stdout=r"\b2 pending",
     setup=chain(ini(sweep_ini("data = text:path=t/u | text:path=t_u")),
                 lambda s: (write(s.work / "t" / "u", "hello world\n" * 50),
                            write(s.work / "t_u", "hello world\n" * 50))),
     no_writes=True, note="issue 5: two text paths differing in _ vs / share an id")

DD = "[sweep]\nout = .\n[grid]\nnorm = {}\n[train]\nepochs = 1\nmodel = mlp:widths=4-3\nbatch = 512\n" \
     "dump-epochs = all\ncheckpoint-every = 0\nthreads = 1\n[analyze]\nestimator = binning:bins=10\n" \
     "[report]\nfigures = false\n"


def parent_ini(norm: str):
    def setup(s: "Scratch") -> None:
        user_files(s)
        write(s.case_dir / "dd.ini", DD.format(norm))
    return setup


case("sweep.point-id-dotdot", ["sweep", "../dd.ini"], 2, r"\bid\b|norm|'\.\.'", setup=parent_ini(".."),
     timeout=SLOW_TIMEOUT, note="issue 1, the exact repro: the user's directory is emptied")
case("sweep.point-id-dot", ["sweep", "../dd.ini"], 2, r"\bid\b|norm", setup=parent_ini("."),
     timeout=SLOW_TIMEOUT, note="issue 1")
case("sweep.point-id-slash", ["sweep", "../dd.ini"], 2, r"\bid\b|norm|\.\./\.\.",
     setup=parent_ini("layernorm | ../.."), timeout=SLOW_TIMEOUT, note="issue 1: a separator in a grid value")


def one_short_point_dir(s: "Scratch", r: Result) -> Optional[str]:
    if r.rc != 0:
        return None
    points = s.work / "points"
    names = [n for n in os.listdir(points) if (points / n).is_dir()] if points.is_dir() else []
    if len(names) != 1:
        return f"points/ holds {names!r}, expected one point directory"
    if len(names[0]) > 255 or "/" in names[0] or names[0] in (".", ".."):
        return f"point id {names[0][:60]!r}... ({len(names[0])} chars) is not a safe file name"
    return None


case("sweep.point-id-overlong", ["sweep", "../dd.ini"], (0, 2), r"\bid\b|long",
     setup=parent_ini("layernorm:eps=0.0000" + "0" * 240 + "1"), timeout=SLOW_TIMEOUT,
     check=one_short_point_dir, note="issue 1/15: a bounded id (readable prefix + hash), or refused up front")
for section, body in (("train", "epoch = 1"), ("analyze", "estimatr = binning"), ("report", "figurs = false")):
    def typo_setup(s, section=section, body=body):
        text = sweep_ini("norm = layernorm | ibnorm-t\nlambda = 0.5")
        write(s.work / "x.ini", text.replace(f"[{section}]\n", f"[{section}]\n{body}\n"))
    case(f"sweep.typo-in-{section}", ["sweep", "x.ini"], 2, re.escape(body.split()[0]), setup=typo_setup,
         timeout=SLOW_TIMEOUT, check=not_exists("sw"),
         note=f"issue 15: a typo in [{section}] found only when a point runs")
case("sweep.grid-bad-norm", ["sweep", "x.ini"], 2, r"nonsense", setup=ini(sweep_ini("norm = layernorm | nonsense")),
     timeout=SLOW_TIMEOUT, check=not_exists("sw"), note="issue 15")
case("sweep.grid-unknown-key", ["sweep", "x.ini"], 2, r"bogus", setup=ini(sweep_ini("bogus = 1 | 2")),
     timeout=SLOW_TIMEOUT, check=not_exists("sw"), note="issue 15")
case("sweep.grid-bad-value", ["sweep", "x.ini"], 2, r"--batch|batch",
     setup=ini(sweep_ini("batch = 64 | 0").replace("batch = 512\n", "")), timeout=SLOW_TIMEOUT,
     check=not_exists("sw"), note="issue 15: every point's option set validated up front")
case("sweep.out-shell-injection", ["sweep", "x.ini"], 0, timeout=SLOW_TIMEOUT,
     setup=ini(sweep_ini("seed = 0", sweep="out = a';touch PWNED;'b", report="figures = true")),
     check=all_checks(no_file_named("PWNED"), exists("a';touch PWNED;'b/report/report.md")),
     note="issue 2: the sweep's out in the figure command runs touch")

# ---- repro ----------------------------------------------------------------------------------

def repro_ini(grid: str = "seed = 0 | 1", train_extra: str = "", analyze: str = "estimator = binning:bins=10"):
    """An experiment ibn repro accepts: sweep_ini without its [train] threads (a platform sets it)."""
    return ini(sweep_ini(grid, train_extra, analyze).replace("threads = 1\n", ""))


P2 = ["--platforms", "t1-fp32,t1-fp64"]
case("repro.no-file", ["repro"], 2, r"experiment")
case("repro.missing-file", ["repro", "nofile.ini"], 2, r"nofile\.ini")
case("repro.unknown-option", ["repro", "x.ini", "--bogus"], 2, r"--bogus", setup=repro_ini())
case("repro.jobs-zero", ["repro", "x.ini", "-j", "0"] + P2, 2, r"-j", setup=repro_ini(), no_writes=True)
case("repro.unknown-platform", ["repro", "x.ini", "--platforms", "t1-fp32,t3-fp16"], 2, r"unknown platform 't3-fp16'",
     setup=repro_ini(), no_writes=True)
case("repro.one-platform", ["repro", "x.ini", "--platforms", "t1-fp32"], 2, r"at least two", setup=repro_ini(),
     no_writes=True)
case("repro.only-reruns", ["repro", "x.ini", "--platforms", "t1-fp32,t1-fp32-rerun"], 2, r"1 platform besides reruns",
     setup=repro_ini(), no_writes=True, note="a rerun is a copy, not a second platform")
case("repro.tune-section", ["repro", "x.ini"] + P2, 2, r"x\.ini:\d+: .*\[tune\]", no_writes=True,
     setup=lambda s: (repro_ini()(s), write(s.work / "x.ini", (s.work / "x.ini").read_text() + "\n[tune]\nlr = 0.01 | 0.1\n")))
case("repro.platform-twice", ["repro", "x.ini", "--platforms", "t1-fp32,t1-fp32"], 2, r"'t1-fp32' twice",
     setup=repro_ini(), no_writes=True)
case("repro.empty-platform", ["repro", "x.ini", "--platforms", "t1-fp32,,t1-fp64"], 2, r"empty entry",
     setup=repro_ini(), no_writes=True)
case("repro.rerun-without-origin", ["repro", "x.ini", "--platforms", "t1-fp32,t1-fp64-rerun"], 2,
     r"'t1-fp64-rerun' repeats 't1-fp64', which is not in the list", setup=repro_ini(), no_writes=True)
case("repro.cuda-absent", ["repro", "x.ini", "--platforms", "t1-fp32,cuda-fp32"], 1, r"cuda-fp32.*CUDA",
     setup=repro_ini(), no_writes=True, skip=no_cuda_device, note="no device: a failure of the machine, not of usage (exit 1)")
case("repro.threads-in-train", ["repro", "x.ini"] + P2, 2, r"x\.ini:\d+: \[train\] sets threads",
     setup=ini(sweep_ini("seed = 0 | 1")), no_writes=True, note="a platform would silently keep the experiment's threads")
case("repro.dtype-in-grid", ["repro", "x.ini"] + P2, 2, r"\[grid\] sets dtype", setup=repro_ini("dtype = float32 | float64"),
     no_writes=True)
case("repro.device-in-analyze", ["repro", "x.ini"] + P2, 2, r"\[analyze\] sets device",
     setup=repro_ini(analyze="estimator = binning:bins=10\ndevice = cpu"), no_writes=True)
case("repro.typo-in-train", ["repro", "x.ini"] + P2, 2, r"point seed0 of 'x\.ini'.*epoch", setup=repro_ini(train_extra="epoch = 1"),
     timeout=SLOW_TIMEOUT, no_writes=True, note="named in the user's file, before anything is written")
case("repro.bad-report-option", ["repro", "x.ini"] + P2, 2, r"bogus",
     setup=ini(sweep_ini("seed = 0", report="bogus = 1").replace("threads = 1\n", "")), no_writes=True)
case("repro.status-pending", ["repro", "x.ini", "--status"] + P2, 0, stdout=r"t1-fp64 .* 0 done, 0 failed, 2 pending",
     setup=repro_ini(), no_writes=True)

# ---- report ---------------------------------------------------------------------------------

analyzed = copy_fixture("analyzed")
INJ = "a';touch PWNED;'b/run"
case("report.no-dir", ["report"], 2, r"DIR|director")
case("report.unknown-option", ["report", "run", "--bogus"], 2, r"--bogus", setup=analyzed)
case("report.missing-dir", ["report", "nodir"], 2, r"nodir")
case("report.empty-dir", ["report", "emptydir"], 2, r"emptydir", setup=lambda s: (s.work / "emptydir").mkdir())
case("report.not-analyzed", ["report", "run", "--no-figures"], 2, r"analy", setup=run)
case("report.shell-injection-missing-dir", ["report", INJ], 2, r"run", check=no_file_named("PWNED"),
     note="issue 2")
case("report.shell-injection-in-path", ["report", INJ], 0, setup=copy_fixture("analyzed", INJ),
     timeout=SLOW_TIMEOUT, check=all_checks(no_file_named("PWNED"), exists(INJ + "/report/report.md")),
     note="issue 2: the repro on a real analyzed run")
case("report.shell-injection-python", ["report", "run", "--python", "x';touch PWNED;'"], 1, r"python|figures",
     setup=analyzed, writes_ok=True, timeout=SLOW_TIMEOUT, check=no_file_named("PWNED"), note="issue 2")
case("report.python-missing", ["report", "run", "--python", "nosuchpython"], 1, r"nosuchpython|python",
     setup=analyzed, writes_ok=True, timeout=SLOW_TIMEOUT)
case("report.quote-in-path", ["report", "it's/r"], 0, setup=copy_fixture("analyzed", "it's/r"),
     timeout=SLOW_TIMEOUT, check=exists("it's/r/report/report.md"), note="issue 2: a legitimate path just fails")


def garble(rel: str, old_line_re: str, new: str):
    def setup(s: "Scratch") -> None:
        p = s.work / rel
        lines = p.read_text().splitlines()
        idx = max(i for i, line in enumerate(lines) if re.match(old_line_re, line))
        lines[idx] = new
        p.write_text("\n".join(lines) + "\n")
    return setup


case("report.truncated-analysis", ["report", "run", "--no-figures"], (1, 2), r"analysis\.h5",
     setup=chain(analyzed, lambda s: truncate(s.work / "run" / "analysis.h5")),
     note="issue 11: the report reads analysis.h5; a damaged one is named")
case("report.analysis-from-before-chains", ["report", "run", "--no-figures"], 2, r"predates representation chains",
     setup=chain(analyzed, lambda s: h5_attr(s.work / "run" / "analysis.h5", "format", 1)),
     note="issue 11: an old analysis.h5 asks for a new analysis instead of being misread")
case("report.baseline-unknown", ["report", "run", "--no-figures", "--baseline", "nosuch"], 2, r"--baseline 'nosuch'",
     setup=analyzed)
case("report.beta-range-bad", ["report", "run", "--no-figures", "--beta-min", "2"], 2, r"beta-min", setup=analyzed)
case("report.alpha-bad", ["report", "run", "--no-figures", "--alpha", "1.5"], 2, r"alpha", setup=analyzed)
case("analyze.chain-backwards", A + ["--chain", "logits,fc1"], 2, r"forward order", setup=run)
case("analyze.chain-nosuch", A + ["--chain", "fc1,nosuch"], 2, r"nosuch", setup=run)
case("report.points-csv-malformed", ["report", "sw", "--no-figures"], 1, r"points\.csv",
     setup=chain(copy_fixture("sweep", "sw"), lambda s: write(s.work / "sw" / "points.csv", "index,id,seed\n0\n")),
     note="issue 16: vector::_M_range_check")
case("report.points-csv-traversal", ["report", "sw", "--no-figures"], (1, 2), r"points\.csv|\.\./\.\./x",
     setup=chain(copy_fixture("sweep", "sw"),
                 lambda s: write(s.work / "sw" / "points.csv", "index,id,seed\n0,../../x,0\n")))

# ---- bench ----------------------------------------------------------------------------------

BM = ["bench", "mi", "--device", "cpu", "--threads", "1", "--estimator", "binning"]
case("bench.no-target", ["bench"], 2, one_line=False, stdout=r"usage: ibn bench")
case("bench.unknown-target", ["bench", "bogus"], 2, r"bogus")
case("bench.mi-peer-runs-zero", ["bench", "mi", "--peer", "--runs", "0"], 2, r"--runs")
case("bench.mi-peer-n-bogus", ["bench", "mi", "--peer", "--n", "ten"], 2, r"--n|ten")
case("bench.mi-peer-gpu", ["bench", "mi", "--peer", "--device", "cuda"], 2, r"--device must be cpu")
case("bench.train-rounds-zero", ["bench", "train", "--rounds", "0", "--device", "cpu"], 2, r"--rounds")
case("bench.train-peer-gpu", ["bench", "train", "--peer", "--device", "cuda"], 2, r"--device must be cpu")
case("bench.train-models-bogus", ["bench", "train", "--models", "mlp,transformer"], 2, r"'transformer'")
case("bench.unknown-option", ["bench", "train", "--bogus"], 2, r"--bogus")
case("bench.mi-n-zero", BM + ["--n", "0", "--d", "2"], 2, r"--n")
case("bench.mi-n-abc", BM + ["--n", "abc", "--d", "2"], 2, r"--n")
case("bench.mi-d-zero", BM + ["--n", "100", "--d", "0"], 2, r"--d")
case("bench.mi-estimator-bogus", ["bench", "mi", "--device", "cpu", "--n", "100", "--d", "2", "--estimator", "bogus"],
     2, r"bogus")
case("bench.mi-runs-zero", BM + ["--n", "100", "--d", "2", "--runs", "0"], 2, r"--runs")
case("bench.mi-threads-negative", ["bench", "mi", "--device", "cpu", "--threads", "-4", "--estimator", "binning",
                                   "--n", "100", "--d", "2"], 2, r"--threads", note="like train --threads -4")
case("bench.mi-csv-missing-dir", BM + ["--n", "100", "--d", "2", "--csv", "nodir/b.csv"], 1, r"nodir/b\.csv")
case("bench.mi-device-cuda-absent", ["bench", "mi", "--device", "cuda", "--n", "100", "--d", "2",
                                     "--estimator", "binning"], 1, r"cuda|CUDA", skip=no_cuda_device)
case("bench.train-steps-zero", ["bench", "train", "--steps", "0", "--device", "cpu"], 2, r"--steps")
case("bench.train-steps-negative", ["bench", "train", "--steps", "-1", "--device", "cpu"], 2, r"--steps")
case("bench.norm-multiprocessors-zero", ["bench", "norm", "--multiprocessors", "0"], 2, r"--multiprocessors")
case("bench.norm-bad-shape", ["bench", "norm", "--shape", "0x4"], 2, r"--shape|0x4", skip=cuda_built,
     note="usage is checked before the device")
case("bench.train-temporaries", ["bench", "train", "--steps", "1", "--device", "cpu", "--threads", "1"], 0,
     slow=True, timeout=600.0, note="issue 4: its temporary directory is private (mkdtemp) and removed")

# --------------------------------------------------------------------------------------------
# Fixtures


def h5_attr(path: Path, name: str, value) -> None:
    import h5py
    with h5py.File(path, "r+") as f:
        f.attrs[name] = value


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


class Context:
    def __init__(self, ibn: str, root: Path, scale: float, max_rss: int):
        self.ibn = ibn
        self.root = root
        self.scale = scale
        self.max_rss = max_rss
        self.fixtures: dict[str, Path] = {}
        self.fixture_errors: dict[str, str] = {}
        self.locks: dict[str, threading.Lock] = {name: threading.Lock() for name in FIXTURES}
        self.cuda_built = False
        self.cuda_device = False

    def env(self, tmpdir: Path) -> dict:
        env = dict(os.environ)
        env.pop("IBN_PLOT_SCRIPT", None)
        env["TMPDIR"] = str(tmpdir)
        env["OMP_NUM_THREADS"] = "1"
        return env

    def run_ibn(self, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
        tmp = self.root / "fixtures" / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        p = subprocess.run([self.ibn] + args, cwd=cwd, env=self.env(tmp), stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=FIXTURE_TIMEOUT * self.scale)
        if p.returncode != 0:
            raise RuntimeError(f"ibn {shlex.join(args)} exited {p.returncode}: {p.stderr.strip()[:800]}")
        return p

    def fixture(self, name: str) -> Path:
        """The fixture's path, building it on first use (thread-safe, once per corpus run)."""
        with self.locks[name]:
            if name in self.fixture_errors:
                raise RuntimeError(f"fixture '{name}' failed: {self.fixture_errors[name]}")
            if name not in self.fixtures:
                d = self.root / "fixtures" / name
                shutil.rmtree(d, ignore_errors=True)
                d.mkdir(parents=True)
                try:
                    self.fixtures[name] = FIXTURES[name](self, d)
                except Exception as e:  # noqa: BLE001 - reported with every case that needs it
                    self.fixture_errors[name] = f"{type(e).__name__}: {e}"
                    raise RuntimeError(f"fixture '{name}' failed: {self.fixture_errors[name]}") from e
            return self.fixtures[name]


TINY_RUN = ["--data", "ibsgd12", "--model", "mlp:widths=4-3", "--progress", "quiet", "--threads", "1"]


def fx_run(ctx: Context, d: Path) -> Path:
    ctx.run_ibn(["train"] + TINY_RUN + ["--epochs", "2", "--batch", "256", "--dump-epochs", "all",
                                        "--out", "run"], d)
    return d / "run"


def fx_analyzed(ctx: Context, d: Path) -> Path:
    shutil.copytree(ctx.fixture("run"), d / "run", symlinks=True)
    ctx.run_ibn(["analyze", "run", "--quiet", "--estimator", "binning:bins=10"], d)
    return d / "run"


def fx_killed(ctx: Context, d: Path) -> Path:
    """A run SIGKILLed after its first checkpoint: 20 epochs of 300 steps, a checkpoint every
    epoch, dumps every 5 epochs (config.ini holds epochs = 20, optimizer = adam, seed = 0)."""
    tmp = ctx.root / "fixtures" / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    args = [ctx.ibn, "train"] + TINY_RUN + ["--epochs", "20", "--steps-per-epoch", "300", "--batch", "16",
                                            "--checkpoint-every", "1", "--dump-epochs", "every:5", "--out", "run"]
    p = subprocess.Popen(args, cwd=d, env=ctx.env(tmp), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + FIXTURE_TIMEOUT * ctx.scale
    try:
        while not (d / "run" / "checkpoint.pt").exists():
            if p.poll() is not None:
                raise RuntimeError(f"the run ended (exit {p.returncode}) before its first checkpoint: "
                                   f"{p.stderr.read().strip()[:500]}")
            if time.monotonic() > deadline:
                raise RuntimeError("no checkpoint within the fixture timeout")
            time.sleep(0.02)
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()
        p.stderr.close()
    if (d / "run" / "activations.h5").exists():
        raise RuntimeError("the run completed before it could be killed")
    return d / "run"


def fx_sweep(ctx: Context, d: Path) -> Path:
    write(d / "t.ini", sweep_ini("seed = 0", sweep="out = sw"))
    ctx.run_ibn(["sweep", "t.ini"], d)
    return d / "sw"


def fx_h5(ctx: Context, d: Path) -> Path:
    import h5py
    import numpy as np
    rng = np.random.default_rng(0)
    with h5py.File(d / "f.h5", "w") as f:
        f["x"] = rng.normal(size=(50, 1))
        f["y"] = np.arange(50, dtype=np.int64)            # every label occurs once
        f["lab"] = (np.arange(50) % 3).astype(np.int64)
        xnan = rng.normal(size=(50, 1))
        xnan[3, 0] = np.nan
        f["xnan"] = xnan
        f["short"] = rng.normal(size=(40, 1))
        f["empty"] = np.zeros((0, 1))
        f["const"] = np.ones((50, 2))
        f["g/inner"] = rng.normal(size=(50, 2))
    return d / "f.h5"


def fx_corrupt_h5(ctx: Context, d: Path) -> Path:
    """A valid superblock and root group, then 600 bytes of noise over the group headers:
    H5Fopen succeeds, walking the groups fails."""
    import h5py
    import numpy as np
    with h5py.File(d / "clean.h5", "w") as f:
        for g in range(4):
            for k in range(4):
                f[f"g{g}/d{k}"] = np.arange(100.0)
    data = bytearray((d / "clean.h5").read_bytes())
    noise = random.Random(800)
    for i in range(800, min(1400, len(data))):
        data[i] = noise.randrange(256)
    (d / "corrupt.h5").write_bytes(bytes(data))
    return d / "corrupt.h5"


def fx_garbage_h5(ctx: Context, d: Path) -> Path:
    noise = random.Random(8)
    (d / "garbage.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(noise.randrange(256) for _ in range(4000)))
    return d / "garbage.h5"


def fx_truncated_h5(ctx: Context, d: Path) -> Path:
    shutil.copyfile(ctx.fixture("run") / "activations.h5", d / "trunc.h5")
    truncate(d / "trunc.h5")
    return d / "trunc.h5"


def fx_cycle_h5(ctx: Context, d: Path) -> Path:
    import h5py
    import numpy as np
    with h5py.File(d / "cycle.h5", "w") as f:
        g = f.create_group("a")
        g["x"] = np.arange(5.0)
        g["loop"] = g                                     # /a/loop is a hard link to /a
    return d / "cycle.h5"


FIXTURES: dict[str, Callable[[Context, Path], Path]] = {
    "run": fx_run, "analyzed": fx_analyzed, "killed": fx_killed, "sweep": fx_sweep, "h5": fx_h5,
    "corrupt_h5": fx_corrupt_h5, "garbage_h5": fx_garbage_h5, "truncated_h5": fx_truncated_h5,
    "cycle_h5": fx_cycle_h5,
}

# --------------------------------------------------------------------------------------------
# Running a case


class Scratch:
    def __init__(self, ctx: Context, case_id: str):
        self.ctx = ctx
        self.case_dir = ctx.root / case_id
        self.work = self.case_dir / "work"
        self.outside = self.case_dir / "outside"
        self.tmp = self.case_dir / "tmp"

    def create(self) -> None:
        if self.case_dir.exists():
            rmtree(self.case_dir)
        self.work.mkdir(parents=True)
        self.tmp.mkdir()
        write(self.outside / "victim.txt", "the victim's data\n")
        write(self.outside / "sentinel" / "keep.txt", "keep\n")

    def copy(self, fixture: str, dest: str) -> None:
        src = self.ctx.fixture(fixture)
        target = self.work / dest
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, target, symlinks=True)
        else:
            shutil.copyfile(src, target)


def snapshot(top: Path, exclude: set[str]) -> dict[str, str]:
    """relative path -> 'dir', 'link:TARGET', 'file:SHA256' or 'other', following no symlinks."""
    out: dict[str, str] = {}
    if not top.is_dir():
        return out
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        rel_dir = os.path.relpath(dirpath, top)
        if rel_dir == ".":
            dirnames[:] = [n for n in dirnames if n not in exclude]
            filenames = [n for n in filenames if n not in exclude]
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = "link:" + os.readlink(path)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = "dir"
            elif stat.S_ISREG(st.st_mode):
                h = hashlib.sha256()
                try:
                    with open(path, "rb") as f:
                        for block in iter(lambda: f.read(1 << 20), b""):
                            h.update(block)
                    out[rel] = "file:" + h.hexdigest()
                except OSError as e:
                    out[rel] = f"unreadable:{e.errno}"
            else:
                out[rel] = "other"
        # symlinked directories are listed in dirnames but never walked (followlinks=False)
    return out


def session_pids(sid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            # fields[0] is the state; the session id is field 6 of stat, fields[3] here
            if int(fields[3]) == sid and fields[0] != "Z":
                pids.append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    return pids


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    return total


def kill_session(sid: int) -> None:
    try:
        os.killpg(sid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for pid in session_pids(sid):     # children that made their own process group
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def execute(ctx: Context, c: Case, s: Scratch, argv: list[str]) -> tuple[Result, list[str]]:
    timeout = (c.timeout or DEFAULT_TIMEOUT) * ctx.scale
    if c.link_tmp:
        name, target = c.link_tmp
        cmd = ["bash", "-c", 'ln -s -- "$1" "$2.tmp.$$" && exec "$0" "${@:3}"', ctx.ibn, target, name] + argv
    else:
        cmd = [ctx.ibn] + argv
    start = time.monotonic()
    p = subprocess.Popen(cmd, cwd=s.work, env=ctx.env(s.tmp) | c.environment, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, start_new_session=True)
    timed_out = rss_exceeded = False
    leftovers = []
    exited_at = None
    while True:
        try:
            out, err = p.communicate(timeout=0.25)
            break
        except subprocess.TimeoutExpired:
            now = time.monotonic()
            if exited_at is None and p.poll() is not None:
                exited_at = now
            if exited_at is not None and now - exited_at > 2.0:
                # ibn exited, but something it started still holds its stdout/stderr
                pids = session_pids(p.pid)
                leftovers.append(f"left {len(pids)} process(es) running after it exited: "
                                 + ", ".join(proc_cmdline(pid) for pid in pids[:3]))
                kill_session(p.pid)
                out, err = p.communicate()
                break
            if now - start > timeout:
                timed_out = True
            elif rss_bytes(session_pids(p.pid)) > ctx.max_rss:
                rss_exceeded = True
            if timed_out or rss_exceeded:
                kill_session(p.pid)
                out, err = p.communicate()
                break
    seconds = time.monotonic() - start
    pids = session_pids(p.pid)
    if pids and not leftovers:
        leftovers.append(f"left {len(pids)} process(es) running after it exited: "
                         + ", ".join(proc_cmdline(pid) for pid in pids[:3]))
        kill_session(p.pid)
    result = Result(p.returncode, out.decode(errors="replace"), err.decode(errors="replace"), seconds,
                    timed_out, rss_exceeded)
    return result, leftovers


def proc_cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f"{pid} " + f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:120]
    except OSError:
        return str(pid)


def describe_changes(before: dict, after: dict, prefix: str) -> tuple[list[str], list[str], list[str]]:
    removed = [k for k in before if k not in after]
    changed = [k for k in before if k in after and before[k] != after[k]]
    added = [k for k in after if k not in before]
    return removed, changed, added


def matches_any(rel: str, globs: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(rel, g) for g in globs)


def run_case(ctx: Context, c: Case) -> tuple[bool, str]:
    s = Scratch(ctx, c.id)
    s.create()
    try:
        if c.setup:
            c.setup(s)
    except Exception as e:  # noqa: BLE001
        return False, f"setup failed: {type(e).__name__}: {e}"
    argv = list(c.argv(s) if callable(c.argv) else c.argv)
    before = snapshot(s.case_dir, exclude={"tmp"})
    r, problems = execute(ctx, c, s, argv)
    after = snapshot(s.case_dir, exclude={"tmp"})

    # exit status
    if r.timed_out:
        problems.insert(0, f"hung: killed after {r.seconds:.0f} s (timeout)")
    elif r.rss_exceeded:
        problems.insert(0, f"killed: its memory passed {ctx.max_rss >> 20} MiB")
    elif r.rc is not None and r.rc < 0:
        problems.insert(0, f"killed by signal {signal.Signals(-r.rc).name}")
    elif r.rc not in c.codes:
        problems.insert(0, f"exit {r.rc}, expected {' or '.join(map(str, c.codes))}")
    sanitizer = SANITIZER_RE.search(r.stderr)
    if sanitizer:
        lines = r.stderr[r.stderr.rfind("\n", 0, sanitizer.start()) + 1:].splitlines()[:8]
        problems.append("sanitizer report:\n      " + "\n      ".join(lines))

    # stderr: one line 'ibn: ...' naming the offending part
    if r.rc is not None and r.rc > 0 and not r.timed_out and c.one_line:
        lines = r.stderr.splitlines()
        if len(lines) != 1 or not lines[0].strip() or not lines[0].startswith("ibn: "):
            problems.append(f"stderr is {len(lines)} line(s), expected one line starting with 'ibn: '")
        elif c.msg and not re.search(c.msg, lines[0]):
            problems.append(f"stderr does not match /{c.msg}/")
    if c.stderr_not and re.search(c.stderr_not, r.stderr):
        problems.append(f"stderr matches /{c.stderr_not}/, which it must not")
    if c.stdout and not re.search(c.stdout, r.stdout, re.M):
        problems.append(f"stdout does not match /{c.stdout}/: {r.stdout.strip()[:200]!r}")

    # files
    removed, changed, added = describe_changes(before, after, "")
    in_work = lambda rel: rel == "work" or rel.startswith("work/")  # noqa: E731
    rel_work = lambda rel: rel[len("work/"):]  # noqa: E731
    outside_touched = [k for k in removed + changed + added if not in_work(k)]
    if outside_touched:
        problems.append("touched outside its work directory: " + ", ".join(sorted(outside_touched)[:5]))
    planted = [k for k in removed + changed if in_work(k) and k != "work"
               and not matches_any(rel_work(k), c.may_change)]
    if "work" in removed:
        planted.insert(0, "work (the directory itself)")
    if planted:
        problems.append("changed or removed the user's (planted) files: " + ", ".join(sorted(planted)[:6])
                        + (f" and {len(planted) - 6} more" if len(planted) > 6 else ""))
    new_in_work = [rel_work(k) for k in added if in_work(k)]
    if c.link_tmp:  # the symlink the wrapper planted may stay (the fix must not follow or rename it)
        planted_link = re.compile(re.escape(c.link_tmp[0]) + r"\.tmp\.\d+")
        new_in_work = [k for k in new_in_work
                       if not (planted_link.fullmatch(k) and after.get("work/" + k) == "link:" + c.link_tmp[1])]
    temps = [k for k in new_in_work if any(fnmatch.fnmatchcase(os.path.basename(k), p) for p in TEMP_PATTERNS)]
    if temps:
        problems.append("left temporary files: " + ", ".join(sorted(temps)[:5]))
    if new_in_work and (c.no_writes or (r.rc == 2 and 2 in c.codes and not c.writes_ok)):
        why = "" if c.no_writes else " although it refused its usage (exit 2)"
        problems.append(f"wrote{why}: " + ", ".join(sorted(new_in_work)[:5]))
    try:
        tmp_left = [n for n in os.listdir(s.tmp) if not n.startswith("matplotlib-")]
    except FileNotFoundError:
        tmp_left = ["(TMPDIR itself was removed)"]
    if tmp_left:
        problems.append("left files in TMPDIR: " + ", ".join(sorted(tmp_left)[:5]))
    pwned = no_file_named("PWNED")(s, r)
    if pwned:
        problems.append(pwned)
    if c.check:
        try:
            err = c.check(s, r)
        except Exception as e:  # noqa: BLE001
            err = f"check raised {type(e).__name__}: {e}"
        if err:
            problems.append(err)

    if not problems:
        return True, f"ok   {c.id} ({r.seconds:.1f} s)"
    shown = ["ibn"] + argv
    text = [f"FAIL {c.id} ({r.seconds:.1f} s)",
            f"  command: (cd {shlex.quote(str(s.work))} && {shlex.join(shown)})"
            + (f"   [with {c.link_tmp[0]}.tmp.<pid> -> {c.link_tmp[1]} planted]" if c.link_tmp else ""),
            f"  expected exit {' or '.join(map(str, c.codes))}"
            + (f" and stderr /{c.msg}/" if c.msg else "") + f"; got exit {r.rc}"]
    text += [f"  - {p}" for p in problems]
    err_lines = r.stderr.splitlines()
    if err_lines:
        text.append("  stderr:")
        text += ["    | " + line[:300] for line in err_lines[:15]]
        if len(err_lines) > 15:
            text.append(f"    | ... ({len(err_lines) - 15} more lines)")
    return False, "\n".join(text)


def rmtree(path: Path) -> None:
    def onerror(func, p, exc):
        try:
            os.chmod(os.path.dirname(p), 0o755)
            os.chmod(p, 0o755)
            func(p)
        except OSError:
            pass
    shutil.rmtree(path, onerror=onerror)


def tmp_ibn_entries() -> set[str]:
    try:
        return {n for n in os.listdir("/tmp") if n.startswith("ibn")}
    except OSError:
        return set()


def probe_cuda(ibn: str) -> tuple[bool, bool]:
    try:
        p = subprocess.run([ibn, "--version"], capture_output=True, text=True, timeout=120,
                           stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return False, False
    built = "built with CUDA: yes" in p.stdout
    m = re.search(r"CUDA devices?: (\S+)", p.stdout)
    device = bool(m) and m.group(1) not in ("none", "0")
    return built, device


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ibn", required=True, help="the ibn binary")
    ap.add_argument("--jobs", "-j", type=int, default=2, help="cases run in parallel (default 2)")
    ap.add_argument("--filter", default=None, help="run only cases whose id matches this regex (re.search)")
    ap.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                    help=f"default per-case timeout in seconds ({DEFAULT_TIMEOUT:.0f}); cases with their "
                         "own timeout scale with it")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--slow", action="store_true", help="also run the cases marked slow (bench train)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch root even when everything passed")
    ap.add_argument("--root", default=None, help="scratch root (default: a new directory under $TMPDIR)")
    ap.add_argument("--max-rss", type=float, default=6.0, help="GiB of memory a case may use (default 6)")
    args = ap.parse_args()

    ids = [c.id for c in CASES]
    dupes = {i for i in ids if ids.count(i) > 1}
    if dupes:
        print(f"duplicate case ids: {sorted(dupes)}", file=sys.stderr)
        return 2
    selected = [c for c in CASES if not args.filter or re.search(args.filter, c.id)]
    if args.list:
        for c in selected:
            argv = "(computed)" if callable(c.argv) else shlex.join(c.argv)
            flags = " [slow]" if c.slow else ""
            print(f"{c.id:44} exit {'/'.join(map(str, c.codes)):5} ibn {argv}{flags}")
            if c.note:
                print(f"{'':44} {c.note}")
        print(f"{len(selected)} cases")
        return 0

    ibn = os.path.abspath(args.ibn)
    if not os.access(ibn, os.X_OK):
        print(f"bad_inputs: '{args.ibn}' is not an executable", file=sys.stderr)
        return 2
    if args.root:
        root = Path(args.root).resolve()
        root.mkdir(parents=True, exist_ok=True)
        made_root = False
    else:
        root = Path(tempfile.mkdtemp(prefix="bad-inputs-"))
        made_root = True
    ctx = Context(ibn, root, args.timeout / DEFAULT_TIMEOUT, int(args.max_rss * (1 << 30)))
    ctx.cuda_built, ctx.cuda_device = probe_cuda(ibn)

    runnable = []
    for c in selected:
        reason = "slow (run with --slow)" if c.slow and not args.slow else (c.skip(ctx) if c.skip else None)
        if reason:
            print(f"skip {c.id}: {reason}", flush=True)
        else:
            runnable.append(c)

    tmp_before = tmp_ibn_entries()
    print_lock = threading.Lock()
    passed = failed = 0
    failures: list[str] = []
    start = time.monotonic()

    def one(c: Case) -> tuple[bool, str]:
        try:
            return run_case(ctx, c)
        except Exception as e:  # noqa: BLE001 - a harness error fails the case, not the corpus
            return False, f"FAIL {c.id}\n  - harness error: {type(e).__name__}: {e}"

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {pool.submit(one, c): c for c in runnable}
        for fut in concurrent.futures.as_completed(futures):
            ok, text = fut.result()
            with print_lock:
                print(text, flush=True)
                if ok:
                    passed += 1
                else:
                    failed += 1
                    failures.append(futures[fut].id)

    new_tmp = sorted(tmp_ibn_entries() - tmp_before)
    if new_tmp:
        failed += 1
        print(f"FAIL global.tmp-clean\n  - new entries in /tmp named ibn*: {', '.join(new_tmp[:10])}")
        failures.append("global.tmp-clean")
    print(f"bad_inputs: {time.monotonic() - start:.0f} s with {args.jobs} job(s); scratch root {root}"
          + (f"; failed: {' '.join(sorted(failures))}" if failures else ""))
    if failed == 0 and made_root and not args.keep:
        rmtree(root)
    elif failed:
        print(f"bad_inputs: the failed cases' files are under {root}")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
