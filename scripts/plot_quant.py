#!/usr/bin/python3
"""The quantization figure of `ibn quant`, drawn from the one file it writes for it,
OUT/data/quant.h5.

    plot_quant.py OUT

SNR (dB, mean and 95 % interval over replicates, computed by ibn) of each normalizer's FP8
output against λ: one row of panels per input, one panel per format and scaling. IBNorm
variants are lines over λ (solid: quantized once; dotted: twice, through bf16); the other
normalizers, which have no λ, are horizontal lines. Writes OUT/figures/quantization.png and .pdf.
"""
import os
import sys

import h5py
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from plot_report import write_atomically  # noqa: E402

FORMATS = ["e4m3", "e5m2"]
SCALINGS = ["tensor", "row"]


def load(out):
    with h5py.File(os.path.join(out, "data", "quant.h5"), "r") as f:
        data = {key: f[key][...] for key in f}
        names = {key: str(f.attrs[key]).split("\n") for key in ("inputs", "spec_names")}
        baseline = str(f.attrs["baseline"])
    return data, names, baseline


def colour_of(names, baseline):
    """One colour per normalizer name, the same in every panel; the baseline black."""
    palette = plt.get_cmap("tab10").colors
    others = [n for n in dict.fromkeys(names["spec_names"]) if n != baseline]
    colours = {name: palette[i % len(palette)] for i, name in enumerate(others)}
    colours[baseline] = "black"
    return colours


def panel(ax, data, names, baseline, where, title):
    colours = colour_of(names, baseline)
    for twice in (0, 1):
        rows = np.flatnonzero(where & (data["twice"] == twice))
        by_name = {}
        for i in rows:
            by_name.setdefault(names["spec_names"][data["spec"][i]], []).append(i)
        for name, idx in by_name.items():
            idx = np.array(idx)
            lam = data["lambda"][idx]
            style = ":" if twice else "-"
            label = None if twice else name
            if (lam < 0).all():  # no λ: a horizontal line at its SNR
                ax.axhline(data["snr_db"][idx[0]], linestyle="--" if not twice else ":", color=colours[name],
                           linewidth=2 if name == baseline else 1, label=label, alpha=0.8)
                continue
            order = np.argsort(lam)
            idx, lam = idx[order], lam[order]
            mean = data["snr_db"][idx]
            err = np.vstack([mean - data["snr_low"][idx], data["snr_high"][idx] - mean])
            err = np.where(np.isfinite(err), err, 0)
            ax.errorbar(lam, mean, yerr=err, linestyle=style, marker="o", markersize=3, capsize=2,
                        color=colours[name], label=label)
    lambdas = np.unique(data["lambda"][where & (data["lambda"] >= 0)])
    if (lambdas > 0).all():
        ax.set_xscale("log")
    elif (lambdas > 0).any():  # λ = 0 (the variance-centric limit) has no place on a log axis
        ax.set_xscale("symlog", linthresh=lambdas[lambdas > 0].min())
    ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(lambdas))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FixedFormatter([f"{v:g}" for v in lambdas]))
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel("λ")
    ax.set_ylabel("SNR (dB)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)


def main(out):
    data, names, baseline = load(out)
    inputs = names["inputs"]
    fig, axes = plt.subplots(len(inputs), 4, figsize=(16, 3.6 * len(inputs)), squeeze=False)
    for row, text in enumerate(inputs):
        for col, (fmt, scaling) in enumerate((f, s) for f in range(2) for s in range(2)):
            where = (data["input"] == row) & (data["format"] == fmt) & (data["scaling"] == scaling)
            ax = axes[row][col]
            if not where.any():
                ax.set_visible(False)
                continue
            panel(ax, data, names, baseline, where, f"{text}: {FORMATS[fmt]}, per {SCALINGS[scaling]}")
    handles, labels = [], []
    for ax in axes.flat:
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 8), fontsize=8)
    fig.text(0.5, 0.005, "solid/dashed: quantized once from float32; dotted: twice (bf16, then FP8); "
             "bars: 95 % interval over replicates", ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.02, 1, 0.94))
    os.makedirs(os.path.join(out, "figures"), exist_ok=True)
    for extension in ("png", "pdf"):
        write_atomically(os.path.join(out, "figures", f"quantization.{extension}"),
                         lambda f, ext=extension: fig.savefig(f, format=ext, dpi=110))
    plt.close(fig)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: plot_quant.py OUT")
    main(sys.argv[1])
