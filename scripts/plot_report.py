#!/usr/bin/python3
"""Figures of an ibn report, drawn from the CSV files `ibn report` writes under REPORT/data/.

    plot_report.py REPORT_DIR

Python only plots here: every number (means, intervals, MI) comes from the C++ side. Writes
each figure as PNG and PDF into REPORT_DIR and lists them, with captions, in data/figures.txt.
The notebooks in notebooks/ import this module and draw the same figures from the same files.
"""
import csv
import math
import os
import tempfile
import sys

import matplotlib

if __name__ == "__main__":
    matplotlib.use("Agg")  # files only; a notebook keeps its inline backend
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def read_meta(path):
    meta = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            key, _, value = line.rstrip("\n").partition("=")
            meta[key] = value
    return meta


def number(text):
    return float("nan") if text in ("", "nan") else float(text)


def estimators_of(meta):
    return [meta[k] for k in sorted((k for k in meta if k.startswith("estimator_")), key=lambda k: int(k.split("_")[1]))]


def footer(fig, meta, estimator=None):
    """Every figure states its data, model and estimator with its parameters."""
    text = f"data: {meta.get('data', '?')}   model: {meta.get('model', '?')}"
    if estimator:
        text += f"   estimator: {estimator}"
    fig.text(0.01, 0.005, text, fontsize=7, color="0.35", ha="left", va="bottom")


def panels(n, width=3.6, height=3.0):
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols + 1, height * rows + 0.8), squeeze=False,
                             constrained_layout=True)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def labels_in_order(rows):
    seen = []
    for r in rows:
        if r["label"] not in seen:
            seen.append(r["label"])
    return seen


def info_plane(plane, meta, k):
    """I(X;T) against I(T;Y), a line per layer through its epochs, points coloured by epoch."""
    rows = [r for r in plane if int(r["estimator"]) == k]
    labels = labels_in_order(rows)
    epochs = sorted({int(r["epoch"]) for r in rows})
    norm = matplotlib.colors.SymLogNorm(linthresh=1, vmin=0, vmax=max(epochs[-1], 1))
    fig, axes = panels(len(labels))
    for ax, label in zip(axes, labels):
        mine = [r for r in rows if r["label"] == label]
        for layer_index in sorted({int(r["layer_index"]) for r in mine}):
            layer = sorted((r for r in mine if int(r["layer_index"]) == layer_index), key=lambda r: int(r["epoch"]))
            x = [number(r["I_XT"]) for r in layer]
            y = [number(r["I_TY"]) for r in layer]
            ax.plot(x, y, color="0.75", linewidth=0.8, zorder=1)
            points = ax.scatter(x, y, c=[int(r["epoch"]) for r in layer], cmap="viridis", norm=norm, s=14, zorder=2)
            ax.annotate(layer[-1]["layer"], (x[-1], y[-1]), fontsize=6, xytext=(2, 2), textcoords="offset points")
        ax.set_title(f"{label} (seed {mine[0]['seed']})", fontsize=9)
        ax.set_xlabel("I(X;T) [nats]")
        ax.set_ylabel("I(T;Y) [nats]")
    fig.colorbar(points, ax=axes, label="epoch", shrink=0.8)
    estimator = estimators_of(meta)[k]
    fig.suptitle(f"Information plane per layer ({estimator})", fontsize=11)
    footer(fig, meta, estimator)
    return fig, f"Information plane per layer, coloured by epoch, one panel per setting ({estimator})"


def mi_vs_epoch(plane, meta, k):
    """I(X;T) and I(T;Y) of every layer against epoch, a column per setting."""
    rows = [r for r in plane if int(r["estimator"]) == k]
    labels = labels_in_order(rows)
    fig, axes = plt.subplots(2, len(labels), figsize=(3.4 * len(labels), 6.0), squeeze=False, constrained_layout=True)
    for column, label in enumerate(labels):
        mine = [r for r in rows if r["label"] == label]
        layers = sorted({(int(r["layer_index"]), r["layer"]) for r in mine})
        colours = plt.cm.plasma(np.linspace(0, 0.9, len(layers)))
        for colour, (layer_index, layer) in zip(colours, layers):
            series = sorted((r for r in mine if int(r["layer_index"]) == layer_index), key=lambda r: int(r["epoch"]))
            epochs = [max(int(r["epoch"]), 0) + 1 for r in series]  # log axis: epoch + 1
            axes[0][column].plot(epochs, [number(r["I_XT"]) for r in series], color=colour, label=layer, marker=".")
            axes[1][column].plot(epochs, [number(r["I_TY"]) for r in series], color=colour, label=layer, marker=".")
        axes[0][column].set_title(label, fontsize=9)
        for row, name in ((0, "I(X;T)"), (1, "I(T;Y)")):
            axes[row][column].set_xscale("log")
            axes[row][column].set_ylabel(f"{name} [nats]")
            axes[row][column].set_xlabel("epoch + 1")
    axes[0][-1].legend(fontsize=6, loc="best")
    estimator = estimators_of(meta)[k]
    fig.suptitle(f"Mutual information against epoch ({estimator})", fontsize=11)
    footer(fig, meta, estimator)
    return fig, f"I(X;T) and I(T;Y) of every layer against epoch, one column per setting ({estimator})"


def against_lambda(ax, settings, field, ylabel):
    """Mean and 95 % interval of `field` per setting (computed by ibn report) against λ: a line
    per variant (and other grid values); settings without λ are baselines, drawn as bands."""
    series = {}
    for r in settings:
        key = r["label"].replace(f" λ={r['lambda']}", "") if r["lambda"] else r["label"]
        series.setdefault(key, []).append(r)
    for key, rows in series.items():
        mean = [number(r[f"{field}_mean"]) for r in rows]
        ci = [0 if math.isnan(number(r[f"{field}_ci95"])) else number(r[f"{field}_ci95"]) for r in rows]
        if rows[0]["lambda"]:
            order = sorted(range(len(rows)), key=lambda i: float(rows[i]["lambda"]))
            ax.errorbar([float(rows[i]["lambda"]) for i in order], [mean[i] for i in order], yerr=[ci[i] for i in order],
                        marker="o", capsize=3, label=key)
            continue
        line = ax.axhline(mean[0], linestyle="--", color="0.3", linewidth=1, label=f"{key} (no λ)")
        if ci[0] > 0:
            ax.axhspan(mean[0] - ci[0], mean[0] + ci[0], color=line.get_color(), alpha=0.12)
    if any(r["lambda"] for r in settings):
        ax.set_xscale("log")
    ax.set_xlabel("λ")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)


def two_panels(settings, meta, left, right, title, estimator, name, caption):
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    against_lambda(axes[0], settings, *left)
    against_lambda(axes[1], settings, *right)
    fig.suptitle(title, fontsize=10)
    footer(fig, meta, estimator)
    fig.tight_layout(rect=(0, 0.04, 1, 0.94))
    return name, fig, caption


def lambda_figures(settings, meta):
    """The figures against λ, from ibn report's per-setting table (data/table_comparison.csv)."""
    estimators = estimators_of(meta)
    figures = []
    fig, axes = plt.subplots(1, len(estimators), figsize=(4.4 * len(estimators), 3.6), squeeze=False)
    for k, estimator in enumerate(estimators):
        against_lambda(axes[0][k], settings, f"ib_total_{k}", f"Σ_l IB_l [nats] ({estimator.split(':')[0]})")
        axes[0][k].set_title(estimator, fontsize=8)
    fig.suptitle(f"IB value against λ (β = {meta.get('beta', '1')}, final epoch; 95 % intervals over seeds)", fontsize=10)
    footer(fig, meta, "; ".join(estimators))
    fig.tight_layout(rect=(0, 0.04, 1, 0.94))
    figures.append(("ib_vs_lambda", fig, "IB value against λ per variant (mean and 95 % interval over seeds)"))

    figures.append(two_panels(settings, meta, ("test_accuracy", "test accuracy"), ("test_loss", "test loss [nats]"),
                              "Test accuracy and loss against λ (final epoch; 95 % intervals over seeds)", None,
                              "accuracy_vs_lambda", "Test accuracy and loss against λ per variant (95 % intervals)"))
    figures.append(two_panels(settings, meta, ("kappa", "κ (mean over norm sites)"),
                              ("nuisance_ratio", "nuisance ratio (last hidden layer)"),
                              "Variance contraction κ and nuisance ratio against λ (final epoch)",
                              estimators[0] if estimators else None, "contraction_vs_lambda",
                              "Variance contraction κ and nuisance ratio against λ per variant"))
    return figures


def main(report_dir):
    data = os.path.join(report_dir, "data")
    meta = read_meta(os.path.join(data, "meta.txt"))
    plane = read_csv(os.path.join(data, "info_plane.csv"))
    settings = read_csv(os.path.join(data, "table_comparison.csv"))
    figures = []
    for k, estimator in enumerate(estimators_of(meta)):
        name = estimator.split(":")[0]
        fig, caption = info_plane(plane, meta, k)
        figures.append((f"info_plane_{k}_{name}", fig, caption))
        fig, caption = mi_vs_epoch(plane, meta, k)
        figures.append((f"mi_vs_epoch_{k}_{name}", fig, caption))
    if any(r["lambda"] for r in settings):
        figures += lambda_figures(settings, meta)
    listing = []
    for name, fig, caption in figures:
        for extension in ("png", "pdf"):
            write_atomically(os.path.join(report_dir, f"{name}.{extension}"),
                             lambda f, ext=extension: fig.savefig(f, format=ext, dpi=130))
        plt.close(fig)
        listing.append(f"{name}\t{caption}")
    text = ("\n".join(listing) + "\n").encode("utf-8")
    write_atomically(os.path.join(data, "figures.txt"), lambda f: f.write(text))
    return [name for name, _, _ in figures]


def write_atomically(path, write):
    """Calls write(binary file) on a new temporary beside `path`, then renames it over `path`:
    a killed report leaves the previous figure or none, never half a PNG. The temporary is
    named like ibn's own (.NAME.ibn-tmp-, then mkstemp's random characters)."""
    directory, name = os.path.split(path)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{name}.ibn-tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temporary, 0o666 & ~current_umask())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: plot_report.py REPORT_DIR")
    main(sys.argv[1])
