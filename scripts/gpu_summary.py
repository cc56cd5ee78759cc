#!/usr/bin/env python3
"""The Markdown summary of scripts/gpu-verify.sh: its steps, the fused normalizers against ATen
and against PyTorch doing the same work (../shared/gpu/anchors.py, run in the same call), the
issue's speed targets, and the MI estimators beside their PyTorch anchors. Every input may be
missing (a step that failed or did not run): the summary says so instead of failing.

  gpu_summary.py --steps steps.tsv [--bench-norm bench-norm.csv] [--bench-mi bench-mi.csv]
                 [--anchors anchors.json] [--gpu NAME] --out gpu-verify.md
"""
import argparse
import csv
import json
import math
import os
import sys
import tempfile

# The targets, stated for an H100: IBNorm-T bf16 [32768, 4096].
TARGET_SHAPE = (32768, 4096)
TARGET_FWD_MS = 0.30
TARGET_FWDBWD_MS = 1.05
TARGET_TIMES_LAYERNORM = 1.1


def read_steps(path):
    """Rows of (name, exit status, seconds, command) written by gpu-verify.sh."""
    steps = []
    if path and os.path.exists(path):
        with open(path) as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) >= 3:
                    steps.append((parts[0], int(parts[1]), float(parts[2]), parts[3] if len(parts) > 3 else ""))
    return steps


def number(text):
    try:
        value = float(text)
    except (TypeError, ValueError):
        return math.nan
    return value


def read_csv(path):
    """The rows (missing cells read as empty), or None if the file is absent or unreadable."""
    if not path or not os.path.exists(path):
        return None
    try:
        with open(path, newline="") as f:
            return [{k: (v or "") for k, v in row.items() if k is not None} for row in csv.DictReader(f)]
    except (OSError, csv.Error, UnicodeDecodeError):
        return None


def read_anchors(path):
    """anchors.py's results, or None if absent or not a JSON object."""
    if not path or not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            anchors = json.load(f)
    except (OSError, ValueError):
        return None
    return anchors if isinstance(anchors, dict) else None


def anchor_key(dtype, rows, d):
    """anchors.py's key: bfloat16_32768x4096, float32_..."""
    name = {"BFloat16": "bfloat16", "Float": "float32", "Half": "float16"}.get(dtype, dtype.lower())
    return f"{name}_{rows}x{d}"


def ratio(a, b):
    return a / b if b and not math.isnan(a) and not math.isnan(b) and b > 0 else math.nan


def cell(value, digits=3):
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


NORM_COLUMNS = ("norm", "dtype", "rows", "d", "forward_bytes_per_element", "forward_min", "backward_bytes_per_element",
                "backward_min", "layer_norm_fwd_ms", "layer_norm_fwdbwd_ms", "fused_fwd_ms", "fused_fwdbwd_ms",
                "aten_fwd_ms", "aten_fwdbwd_ms")


def steps_section(steps):
    lines = ["## Steps", "", "| step | result | seconds | command |", "| --- | --- | ---: | --- |"]
    if not steps:
        lines.append("| (none recorded) | | | |")
    for name, status, seconds, command in steps:
        result = "passed" if status == 0 else "skipped" if status == 125 else f"FAILED (exit {status})"
        lines.append(f"| {name} | {result} | {seconds:.0f} | `{command}` |")
    return lines


def norm_section(rows, anchors):
    lines = ["## Fused normalizers", ""]
    if rows is None:
        return lines + ["Not run: no bench-norm.csv (see the steps above).", ""]
    lines += [
        "Times are medians of CUDA-event timings after an L2 flush. × LN: against ATen's layer_norm in the same",
        "run; × ATen: against the same normalizer composed of ATen ops; × PyTorch: against anchors.py in the same",
        "call (F.layer_norm for layernorm, torch.compile'd IBNorm-T for ibnorm-t). B/el: global-memory bytes per",
        "element the kernels issue (upper bound on DRAM traffic), against the minimum.",
        "",
        "| norm | dtype | shape | fwd ms | f+b ms | × LN fwd | × LN f+b | × ATen fwd | × ATen f+b | × PyTorch fwd | × PyTorch f+b | B/el fwd (min) | B/el bwd (min) |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        fwd, fb = number(r["fused_fwd_ms"]), number(r["fused_fwdbwd_ms"])
        anchor = (anchors or {}).get(anchor_key(r["dtype"], r["rows"], r["d"]), {})
        anchor = anchor if isinstance(anchor, dict) else {}
        torch_fwd = torch_fb = math.nan
        if r["norm"] == "layernorm":
            torch_fwd, torch_fb = number(anchor.get("ln_fwd_ms")), number(anchor.get("ln_fwdbwd_ms"))
        elif r["norm"] == "ibnorm-t:lambda=1":  # anchors.py's IBNorm-T is λ = 1, token area
            torch_fwd, torch_fb = number(anchor.get("ibnT_compiled_fwd_ms")), number(anchor.get("ibnT_compiled_fwdbwd_ms"))
        lines.append(
            f"| {r['norm']} | {r['dtype']} | {r['rows']}x{r['d']} | {cell(fwd)} | {cell(fb)} "
            f"| {cell(ratio(fwd, number(r['layer_norm_fwd_ms'])), 2)} | {cell(ratio(fb, number(r['layer_norm_fwdbwd_ms'])), 2)} "
            f"| {cell(ratio(fwd, number(r['aten_fwd_ms'])), 2)} | {cell(ratio(fb, number(r['aten_fwdbwd_ms'])), 2)} "
            f"| {cell(ratio(fwd, torch_fwd), 2)} | {cell(ratio(fb, torch_fb), 2)} "
            f"| {cell(number(r['forward_bytes_per_element']), 2)} ({cell(number(r['forward_min']), 0)}) "
            f"| {cell(number(r['backward_bytes_per_element']), 2)} ({cell(number(r['backward_min']), 0)}) |"
        )
    return lines + [""]


def targets_section(rows):
    """The issue's targets: met, missed, or not measured."""
    lines = ["## Targets (stated for an H100)", ""]
    if rows is None:
        return lines + ["Not measured.", ""]

    def verdict(value, limit):
        if math.isnan(value):
            return "not measured"
        return f"{'met' if value <= limit else 'MISSED'} ({value:.3f} against ≤ {limit})"

    target = [r for r in rows if r["norm"] == "ibnorm-t:lambda=1" and r["dtype"] == "BFloat16"
              and (number(r["rows"]), number(r["d"])) == TARGET_SHAPE]
    fwd = number(target[0]["fused_fwd_ms"]) if target else math.nan
    fb = number(target[0]["fused_fwdbwd_ms"]) if target else math.nan
    lines.append(f"- IBNorm-T bf16 {TARGET_SHAPE[0]}x{TARGET_SHAPE[1]} forward ≤ {TARGET_FWD_MS} ms: {verdict(fwd, TARGET_FWD_MS)}")
    lines.append(f"- IBNorm-T bf16 {TARGET_SHAPE[0]}x{TARGET_SHAPE[1]} forward + backward ≤ {TARGET_FWDBWD_MS} ms: "
                 f"{verdict(fb, TARGET_FWDBWD_MS)}")
    worst = math.nan
    measured = 0
    for r in rows:
        if r["norm"] != "ibnorm-t:lambda=1":
            continue
        for ours, ln in (("fused_fwd_ms", "layer_norm_fwd_ms"), ("fused_fwdbwd_ms", "layer_norm_fwdbwd_ms")):
            x = ratio(number(r[ours]), number(r[ln]))
            if not math.isnan(x):
                measured += 1
                worst = x if math.isnan(worst) else max(worst, x)
    lines.append(f"- IBNorm-T within {TARGET_TIMES_LAYERNORM}× ATen's LayerNorm at every shape (worst of {measured} "
                 f"timings): {verdict(worst, TARGET_TIMES_LAYERNORM)}")
    return lines + [""]


def mi_section(rows, anchors):
    lines = ["## MI estimators on CUDA", ""]
    if rows is None:
        return lines + ["Not run: no bench-mi.csv.", ""]
    lines += ["The KDE row is one mixture entropy H(T), the unit anchors.py times in plain PyTorch.", "",
              "| estimator | N | d | seconds | PyTorch anchor s | × PyTorch |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        r = {key: r.get(key, "") for key in ("estimator", "n", "d", "seconds")}
        seconds = number(r["seconds"])
        anchor = math.nan
        if anchors is not None and r["estimator"].startswith("kde entropy"):
            anchor = number(anchors.get(f"kde_{r['n']}x{r['d']}_ms")) / 1000
        lines.append(f"| {r['estimator']} | {r['n']} | {r['d']} | {cell(seconds, 4)} | {cell(anchor, 4)} "
                     f"| {cell(ratio(seconds, anchor), 2)} |")
    return lines + [""]


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", required=True)
    parser.add_argument("--bench-norm")
    parser.add_argument("--bench-mi")
    parser.add_argument("--anchors")
    parser.add_argument("--gpu", default="unknown GPU")
    parser.add_argument("--commit", default="unknown")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    steps = read_steps(args.steps)
    norm_rows = read_csv(args.bench_norm)
    if norm_rows is not None:  # every column present, empty where the file lacks it
        norm_rows = [{key: r.get(key, "") for key in NORM_COLUMNS} for r in norm_rows]
    anchors = read_anchors(args.anchors)
    failed = [name for name, status, _, _ in steps if status not in (0, 125)]
    skipped = [name for name, status, _, _ in steps if status == 125]
    lines = [f"# gpu-verify on {args.gpu}", "",
             f"Commit {args.commit}. {len(steps)} steps, "
             + (f"{len(failed)} failed: {', '.join(failed)}." if failed else
                f"{len(skipped)} skipped: {', '.join(skipped)}." if skipped else "all passed."), ""]
    lines += steps_section(steps) + [""]
    lines += targets_section(norm_rows)
    lines += norm_section(norm_rows, anchors)
    lines += mi_section(read_csv(args.bench_mi), anchors)
    text = "\n".join(lines) + "\n"
    directory = os.path.dirname(os.path.abspath(args.out))
    with tempfile.NamedTemporaryFile("w", dir=directory, delete=False, prefix=".gpu-verify.", suffix=".tmp") as f:
        f.write(text)
    os.replace(f.name, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
