#!/usr/bin/python3
"""Figures of an ibn report, drawn from the one file `ibn report` writes for them,
REPORT/data/report.h5 (load_report reads it).

    plot_report.py REPORT_DIR

Python only plots here: every statistic (means, intervals, flags, the β curves) comes from the
C++ side. Writes each figure as PNG and PDF into REPORT_DIR and lists them, with captions, in
data/figures.txt. The notebooks in notebooks/ import this module: load_report for a report's
data, load_analysis for one run's analysis.h5, and the same drawing functions.
"""
import math
import os
import sys
import tempfile

import h5py
import matplotlib

if __name__ == "__main__":
    matplotlib.use("Agg")  # files only; a notebook keeps its inline backend
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _lines(text):
    return [] if text == "" else str(text).split("\n")


def load_report(report_dir):
    """Everything the figures draw, as numpy arrays and lists, from REPORT/data/report.h5."""
    with h5py.File(os.path.join(report_dir, "data", "report.h5"), "r") as f:
        r = {name: {key: f[name][key][...] for key in f[name] if isinstance(f[name][key], h5py.Dataset)}
             for name in ("runs", "curves", "mi", "settings")}
        r["beta"] = {"grid": f["beta"]["grid"][...]}
        for key in f["beta"]:
            if key != "grid":
                r["beta"][int(key)] = {part: f["beta"][key][part][...] for part in ("mean", "low", "high")}
        for key in f["settings"]:
            if isinstance(f["settings"][key], h5py.Group):
                r["settings"][key] = {part: f["settings"][key][part][...] for part in ("mean", "low", "high")}
        attrs = dict(f.attrs)
    r["labels"] = _lines(attrs["labels"])
    r["variants"] = _lines(attrs["variants"])
    r["run_flags"] = str(attrs["run_flags"]).split("\n")
    r["estimators"] = _lines(attrs["estimators"])
    r["chain"] = str(attrs["chain"]).split(",")
    for key in ("baseline", "units", "split", "data", "model", "source", "interval"):
        r[key] = str(attrs[key])
    r["beta_value"] = float(attrs["beta"])
    return r


def load_analysis(run_dir):
    """One run's analysis.h5: the rows as arrays, and β, units, split, chain and estimators."""
    with h5py.File(os.path.join(run_dir, "analysis.h5"), "r") as f:
        out = {key: f["rows"][key][...] for key in f["rows"]}
        out["totals"] = {key: f["totals"][key][...] for key in f["totals"]}
        for key in ("beta", "units", "split", "samples"):
            out[key] = f.attrs[key]
        out["layers"] = str(f.attrs["layers"]).split(",")
        out["chain"] = str(f.attrs["chain"]).split(",")
        out["estimators"] = _lines(f.attrs["estimators"])
    return out


def _title(fig, r, what, estimator=None):
    """Every figure names its data, model and estimator, above the panels (never over them)."""
    text = f"{what}\ndata {r['data']} · model {r['model']}"
    if estimator:
        text += f" · {estimator}"
    fig.suptitle(text, fontsize=9)


def _excluded_note(r):
    names = [label for label, used in zip(r["labels"], r["settings"]["used_runs"]) if used == 0]
    return f"excluded (every run flagged): {', '.join(names)}" if names else ""


def _panels(n, width=3.0, height=2.6, cols=5, sharey=False, sharex=False):
    cols = min(n, cols)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols + 0.6, height * rows + 1.0), squeeze=False,
                             constrained_layout=True, sharey=sharey, sharex=sharex)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _outside_legend(ax, source=None, **kwargs):
    """A legend beside the panel `ax`, not over its lines (constrained layout makes room for
    it), of the lines labelled in `source` (default: `ax`)."""
    handles, labels = (source or ax).get_legend_handles_labels()
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, fontsize=6,
              title_fontsize=6, **kwargs)


def _runs_of(r, s):
    return [i for i in range(len(r["runs"]["setting"])) if r["runs"]["setting"][i] == s]


def _panel_title(r, s):
    runs = _runs_of(r, s)
    flagged = sum(1 for i in runs if r["run_flags"][i])
    text = f"{r['labels'][s]} ({len(runs)} runs"
    if flagged == len(runs):
        return text + ", all flagged: not compared)"
    return text + (f", {flagged} flagged)" if flagged else ")")


def _runs_and_mean(ax, r, s, rows_of_run, x, y, color, label, alpha):
    """Setting s on `ax`: a thin line per run (dotted when flagged) through the rows that
    rows_of_run(i) selects of x and y, and a thick line for the mean of the runs used."""
    used = []
    for i in _runs_of(r, s):
        mask = rows_of_run(i)
        ax.plot(x[mask], y[mask], color=color, lw=0.5, alpha=alpha, ls=":" if r["run_flags"][i] else "-")
        if r["runs"]["used"][i]:
            used.append((x[mask], y[mask]))
    if used and len({len(ys) for _, ys in used}) == 1:
        ax.plot(used[0][0], np.mean([ys for _, ys in used], axis=0), color=color, lw=1.6, label=label)


def curves(r):
    """Training and test loss and accuracy against epoch: a line per setting (mean of the runs
    used), thin lines for every run."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), constrained_layout=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    c = r["curves"]
    for ax, field, title in zip(axes.flat, ("train_loss", "test_loss", "train_accuracy", "test_accuracy"),
                                ("training loss (nats)", "test loss (nats)", "training accuracy", "test accuracy")):
        for s, label in enumerate(r["labels"]):
            _runs_and_mean(ax, r, s, lambda i: c["run"] == i, c["epoch"], c[field], colors[s % len(colors)], label, 0.35)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch")
        if "loss" in field:
            ax.set_yscale("log")
    _outside_legend(axes.flat[1])
    caption = "Training and test curves per setting (thick: mean of the runs used; thin: every run; dotted: flagged)"
    _title(fig, r, caption)
    return fig, caption


def _layer_colors(n):
    return plt.get_cmap("viridis")(np.linspace(0, 0.9, max(n, 1)))


def mi_vs_epoch(r, k, field):
    """I(X;T) or I(T;Y) of every chain layer against epoch: a panel per setting, thin lines
    for every run, thick for the mean of the runs used; one y-axis for all panels."""
    name = "I(X;T)" if field == "I_XT" else "I(T;Y)"
    fig, axes = _panels(len(r["labels"]), sharey=True, sharex=True)
    m = r["mi"]
    colors = _layer_colors(len(r["chain"]))
    for s, ax in enumerate(axes):
        for layer, layer_name in enumerate(r["chain"]):
            _runs_and_mean(ax, r, s, lambda i, layer=layer: (m["run"] == i) & (m["estimator"] == k) & (m["layer"] == layer),
                           m["epoch"], m[field], colors[layer], layer_name if s == 0 else None, 0.4)
        ax.set_xscale("symlog", linthresh=1)
        ax.set_title(_panel_title(r, s), fontsize=8)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{name} (nats)")
    if axes:
        _outside_legend(axes[min(4, len(axes) - 1)], axes[0], title="layer")
    caption = f"{name} of every chain layer against epoch, a panel per setting, every seed ({r['estimators'][k]})"
    _title(fig, r, caption + ". Thick: mean of the runs used; thin: each run; dotted: flagged", r["estimators"][k])
    return fig, caption


def info_plane(r, k):
    """I(X;T) against I(T;Y) of each chain layer through the epochs, mean of the runs used,
    coloured by epoch; a panel per setting, shared axes."""
    fig, axes = _panels(len(r["labels"]), sharey=True, sharex=True)
    m = r["mi"]
    epochs = np.unique(m["epoch"])
    norm = matplotlib.colors.SymLogNorm(linthresh=1, vmin=0, vmax=max(epochs[-1], 1))
    layer_colors = plt.get_cmap("tab10").colors
    for s, ax in enumerate(axes):
        runs = [i for i in _runs_of(r, s) if r["runs"]["used"][i]] or _runs_of(r, s)
        for layer in range(len(r["chain"])):
            xs, ys = [], []
            for i in runs:
                mask = (m["run"] == i) & (m["estimator"] == k) & (m["layer"] == layer)
                xs.append(m["I_XT"][mask])
                ys.append(m["I_TY"][mask])
            if not xs or len({len(x) for x in xs}) != 1:
                continue
            x, y = np.mean(xs, axis=0), np.mean(ys, axis=0)
            mask = (m["run"] == runs[0]) & (m["estimator"] == k) & (m["layer"] == layer)
            # The layer is the line's colour (a legend, not labels that collide); the epoch the points'.
            ax.plot(x, y, color=layer_colors[layer % len(layer_colors)], lw=1.0, zorder=1,
                    label=r["chain"][layer] if s == 0 else None)
            ax.scatter(x, y, c=m["epoch"][mask], cmap="viridis", norm=norm, s=10, zorder=2)
        ax.set_title(_panel_title(r, s), fontsize=8)
        ax.set_xlabel("I(X;T) (nats)")
        ax.set_ylabel("I(T;Y) (nats)")
    if axes:
        _outside_legend(axes[min(4, len(axes) - 1)], axes[0], title="layer")
    if len(epochs):
        fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap="viridis"), ax=axes, label="epoch", shrink=0.8)
    caption = f"Information plane of the chain layers, coloured by epoch, a panel per setting ({r['estimators'][k]})"
    _title(fig, r, caption + "; mean of the runs used (all runs where every run is flagged)", r["estimators"][k])
    return fig, caption


def ib_vs_beta(r, k):
    """Σ_l IB_l = Σ I(T;Y) − β Σ I(T_(l−1);T_l) against β, a line per setting with its 95 % band."""
    fig, ax = plt.subplots(figsize=(8, 5), constrained_layout=True)
    grid = r["beta"]["grid"]
    curves_k = r["beta"][k]
    for s, label in enumerate(r["labels"]):
        if r["settings"]["used_runs"][s] == 0:
            continue
        line, = ax.plot(grid, curves_k["mean"][s], label=label, lw=1.4)
        if np.isfinite(curves_k["low"][s]).any():
            ax.fill_between(grid, curves_k["low"][s], curves_k["high"][s], color=line.get_color(), alpha=0.15, lw=0)
    ax.set_xscale("log")
    ax.set_xlabel("β")
    ax.set_ylabel("Σ_l IB_l (nats)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    note = _excluded_note(r)
    caption = f"Σ_l IB_l over the chain against β, mean and 95 % interval over the runs used ({r['estimators'][k]})"
    _title(fig, r, caption + (f"\n{note}" if note else ""), r["estimators"][k])
    return fig, caption


# The grid's strength keys: λ, or the target κ that λ was chosen to reach.
# Per key: the axis label, the figure files' word, the captions' symbol.
STRENGTHS = {"lambda": ("λ", "lambda", "λ"),
             "kappa_target": ("target κ (Gaussian variance contraction; λ chosen per variant)", "kappa", "target κ")}


def _against_strength(ax, r, stat, ylabel, key):
    lam = r["settings"][key]
    used = r["settings"]["used_runs"]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    variants = list(dict.fromkeys(r["variants"]))
    for n, variant in enumerate(variants):
        idx = [s for s, v in enumerate(r["variants"]) if v == variant and np.isfinite(lam[s]) and used[s] > 0]
        if idx:
            idx.sort(key=lambda s: lam[s])
            mean = stat["mean"][idx]
            # A setting with one usable run has no interval: no bar (a zero-width one would read
            # as certainty).
            err = np.array([mean - stat["low"][idx], stat["high"][idx] - mean])
            ax.errorbar(lam[idx], mean, yerr=np.ma.masked_invalid(err), marker="o", capsize=3, label=variant,
                        color=colors[n % len(colors)])
    # Settings without the strength (the baseline, DyT, RMSNorm, ...) as horizontal lines: the
    # baseline dashed with its interval as a band, the others dotted.
    base = r["labels"].index(r["baseline"])
    for s, label in enumerate(r["labels"]):
        if np.isfinite(lam[s]) or used[s] == 0:
            continue
        if s == base:
            ax.axhline(stat["mean"][s], color="0.3", ls="--", lw=1, label=f"{label} (baseline)")
            if np.isfinite(stat["low"][s]):
                ax.axhspan(stat["low"][s], stat["high"][s], color="0.5", alpha=0.12, lw=0)
        else:
            ax.axhline(stat["mean"][s], color=colors[(len(variants) + s) % len(colors)], ls=":", lw=1.2, label=label)
    if ax.lines:
        ticks = sorted({float(v) for v in lam if np.isfinite(v)})
        ax.set_xscale("log" if key == "lambda" else "linear")
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{t:g}" for t in ticks])
        ax.minorticks_off()
    ax.set_xlabel(STRENGTHS[key][0])
    ax.set_ylabel(ylabel)


def strength_figures(r, key):
    """Σ IB, accuracy, loss, generalization gap, κ and the nuisance ratio against λ (or the
    target κ) per variant, with 95 % intervals; the baseline as a dashed line; settings whose
    runs are all flagged are left out (named)."""
    out = []
    st = r["settings"]
    note = _excluded_note(r)
    word, symbol = STRENGTHS[key][1], STRENGTHS[key][2]
    specs = [(f"ib_vs_{word}", [(st[f"IB_{k}"], f"Σ IB, {e.split(':')[0]} (nats)") for k, e in enumerate(r["estimators"])],
              f"Σ_l IB_l over the chain (β = {r['beta_value']:g}) against {symbol} per variant, 95 % intervals"),
             (f"accuracy_vs_{word}", [(st["acc"], "test accuracy"), (st["loss"], "test loss (nats)"),
                                      (st["gap_acc"], "accuracy gap (train − test)")],
              f"Test accuracy, test loss and generalization gap against {symbol} per variant, 95 % intervals"),
             (f"contraction_vs_{word}", [(st["kappa"], "measured κ (mean over norm sites)"), (st["nuisance"], "nuisance ratio")],
              f"Variance contraction κ and nuisance ratio of the last hidden layer against {symbol} per variant")]
    for name, panels, caption in specs:
        fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels) + 1, 4), constrained_layout=True, squeeze=False)
        for ax, (stat, ylabel) in zip(axes.flat, panels):
            _against_strength(ax, r, stat, ylabel, key)
        axes.flat[0].legend(fontsize=7)
        _title(fig, r, caption + (f"\n{note}" if note else ""))
        out.append((name, fig, caption))
    return out


def all_figures(r):
    figures = [("curves",) + curves(r)]
    for k, estimator in enumerate(r["estimators"]):
        name = estimator.split(":")[0]
        figures.append((f"mi_xt_vs_epoch_{k}_{name}",) + mi_vs_epoch(r, k, "I_XT"))
        figures.append((f"mi_ty_vs_epoch_{k}_{name}",) + mi_vs_epoch(r, k, "I_TY"))
        figures.append((f"info_plane_{k}_{name}",) + info_plane(r, k))
        figures.append((f"ib_vs_beta_{k}_{name}",) + ib_vs_beta(r, k))
    for key in STRENGTHS:
        if key in r["settings"] and np.isfinite(r["settings"][key]).any():
            figures += strength_figures(r, key)
    return figures


def main(report_dir):
    r = load_report(report_dir)
    listing = []
    for name, fig, caption in all_figures(r):
        for extension in ("png", "pdf"):
            write_atomically(os.path.join(report_dir, f"{name}.{extension}"),
                             lambda f, ext=extension: fig.savefig(f, format=ext, dpi=120))
        plt.close(fig)
        listing.append(f"{name}\t{caption}")
    text = ("\n".join(listing) + "\n").encode("utf-8")
    write_atomically(os.path.join(report_dir, "data", "figures.txt"), lambda f: f.write(text))
    return [line.split("\t")[0] for line in listing]


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
