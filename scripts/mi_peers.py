#!/usr/bin/python3
"""Times the Python peers of `ibn bench mi --peer` on the data ibn wrote, in the same run.

    mi_peers.py CASES.h5 RESULTS.csv

CASES.h5 holds one group per case, /cases/<name>, with datasets `a` [N, da] and `b` ([N, db]
floats, or [N] integer labels); `a` carries the attributes `kind` (ksg, kde-entropy), `k`, `var`, `runs`.
For each case and each peer that can take it, RESULTS.csv gets a row
`case,peer,seconds,estimate` (median wall time of `runs` calls after one warm-up; the estimate
in nats), and a row `case,peer,,` with the reason in `estimate` when the peer is missing or
cannot take the case. Peers:
  npeet    NPEET's mi (KD-tree KSG, scikit-learn's tree underneath), when importable
  sklearn  scikit-learn's mutual_info_regression / mutual_info_classif (1-D sides only)
  numpy    the KDE mixture entropy in plain numpy: blocked X·Xᵀ and log-sum-exp
"""
import csv
import math
import sys
import time

import h5py
import numpy as np


def median_seconds(runs, body):
    body()
    times = []
    result = None
    for _ in range(runs):
        start = time.perf_counter()
        result = body()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2], result


def npeet_ksg(a, b, k, labels):
    from npeet import entropy_estimators as ee
    if labels:
        return ee.micd(a, b.reshape(-1, 1), k=k, base=math.e, warning=False)
    return ee.mi(a, b, k=k, base=math.e)


def sklearn_ksg(a, b, k, labels):
    from sklearn.feature_selection import mutual_info_classif, mutual_info_regression
    if a.shape[1] != 1 or (not labels and b.shape[1] != 1):
        raise ValueError("scikit-learn's KSG takes a 1-D target and one feature at a time")
    if labels:
        return float(mutual_info_classif(a, b, discrete_features=False, n_neighbors=k, random_state=0)[0])
    return float(mutual_info_regression(a, b[:, 0], discrete_features=False, n_neighbors=k, random_state=0)[0])


def numpy_kde_entropy(t, var, block_bytes=64 << 20):
    """Upper-bound KDE entropy H(T) (Kolchinsky-Tracey), as a numpy user writes it."""
    n, d = t.shape
    squared = np.einsum("ij,ij->i", t, t)
    rows = max(1, block_bytes // (n * t.itemsize * 3))
    total = 0.0
    for start in range(0, n, rows):
        block = t[start:start + rows]
        exponent = block @ t.T
        exponent *= -2.0
        exponent += squared[start:start + rows, None]
        exponent += squared[None, :]
        np.maximum(exponent, 0.0, out=exponent)
        exponent *= -0.5 / var
        peak = exponent.max(axis=1, keepdims=True)
        total += float(np.sum(np.log(np.exp(exponent - peak).sum(axis=1, dtype=np.float64)) + peak[:, 0]))
    mean_log = total / n - math.log(n)
    return 0.5 * d * math.log(2 * math.pi * math.e * var) - mean_log


def peers_for(kind):
    if kind == "ksg":
        return [("npeet", npeet_ksg), ("sklearn", sklearn_ksg)]
    if kind == "kde-entropy":
        return [("numpy", None)]
    return []


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: mi_peers.py CASES.h5 RESULTS.csv")
    rows = []
    with h5py.File(sys.argv[1], "r") as f:
        for name, group in f["cases"].items():
            attrs = group["a"].attrs
            kind = attrs["kind"]
            kind = kind.decode() if isinstance(kind, bytes) else str(kind)
            runs = int(attrs["runs"])
            a = np.asarray(group["a"])
            b = np.asarray(group["b"]) if "b" in group else None
            for peer, estimator in peers_for(kind):
                try:
                    if kind == "ksg":
                        labels = b.ndim == 1 and np.issubdtype(b.dtype, np.integer)
                        bb = b if labels else b.reshape(len(b), -1)
                        k = int(attrs["k"])
                        seconds, value = median_seconds(runs, lambda: estimator(a, bb, k, labels))
                    else:
                        var = float(attrs["var"])
                        seconds, value = median_seconds(runs, lambda: numpy_kde_entropy(a, var))
                    rows.append([name, peer, f"{seconds:.6f}", f"{value:.6f}"])
                except ImportError as e:
                    rows.append([name, peer, "", f"missing: {e.name or e}"])
                except Exception as e:  # a peer that cannot take the case: say why, go on
                    rows.append([name, peer, "", f"cannot: {e}".replace("\n", " ")])
    with open(sys.argv[2], "w", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["case", "peer", "seconds", "estimate"])
        writer.writerows(rows)


if __name__ == "__main__":
    main()
