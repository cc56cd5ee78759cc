#!/usr/bin/env python3
"""Compares two activation stores (RUN/activations.h5) dataset by dataset, or two checkpoints
(RUN/checkpoint.pt: the weights, buffers and optimizer state, read with torch.jit.load) tensor by
tensor.

Each floating dataset present in both must agree to --tolerance relative to its own scale:
max |a - b| <= tol * max |a| (NaN where the other is not counts as a difference). Integer
datasets must be equal. /metrics/seconds (wall time) is skipped. Exit 0 when all agree, 1 with
one line per disagreement (the worst first) otherwise.

  compare_stores.py A.h5 B.h5 --tolerance 1e-6 [--only epochs metrics contraction data]
"""
import argparse
import sys

import h5py
import numpy as np


def datasets(store, groups):
    found = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and name != "metrics/seconds" and (not groups or name.split("/")[0] in groups):
            found[name] = obj[()]

    store.visititems(visit)
    return found


# A checkpoint's bookkeeping (wall time in the metrics, the run's options as bytes), not state.
CHECKPOINT_BOOKKEEPING = ("metrics", "config", "epoch", "dumped_epochs", "shuffle_rng")


def checkpoint_tensors(path, groups):
    import torch  # only for checkpoints: Debian's python3-torch

    module = torch.jit.load(path, map_location="cpu")
    found = {}
    for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
        if name in CHECKPOINT_BOOKKEEPING or (groups and name.split(".")[0] not in groups):
            continue
        found[name] = tensor.detach().numpy()
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--tolerance", type=float, required=True)
    parser.add_argument("--only", nargs="*", default=[], help="top-level groups to compare (default: all)")
    args = parser.parse_args()
    if args.a.endswith(".pt"):
        a, b = checkpoint_tensors(args.a, args.only), checkpoint_tensors(args.b, args.only)
    else:
        with h5py.File(args.a, "r") as fa, h5py.File(args.b, "r") as fb:
            a, b = datasets(fa, args.only), datasets(fb, args.only)
    problems = []
    if not a:
        problems.append((np.inf, f"{args.a} has no dataset in {args.only or 'any group'}"))
    for name in sorted(set(a) | set(b)):
        if name not in a or name not in b:
            problems.append((np.inf, f"{name}: only in {args.a if name in a else args.b}"))
            continue
        x, y = np.asarray(a[name]), np.asarray(b[name])
        if x.shape != y.shape:
            problems.append((np.inf, f"{name}: shapes {x.shape} and {y.shape}"))
        elif x.dtype.kind != "f":
            if not np.array_equal(x, y):
                problems.append((np.inf, f"{name}: integer values differ"))
        elif x.size:
            x, y = x.astype(np.float64), y.astype(np.float64)
            if not np.array_equal(np.isnan(x), np.isnan(y)):
                problems.append((np.inf, f"{name}: NaN at different places"))
                continue
            finite = ~np.isnan(x)
            scale = max(np.max(np.abs(x[finite]), initial=0.0), 1e-300)
            gap = np.max(np.abs(x[finite] - y[finite]), initial=0.0) / scale
            if not gap <= args.tolerance:
                problems.append((gap, f"{name}: differs by {gap:.3g} of its scale {scale:.3g}"))
    for _, line in sorted(problems, key=lambda p: -p[0]):
        print(line)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
