"""A run directory of `ibn train` (and `ibn analyze`) as numpy arrays with their metadata."""
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np


def _h5py():
    try:
        import h5py
    except ImportError as error:  # Debian: python3-h5py (scripts/debian-packages.txt)
        raise ImportError("ibnorm.load_run needs h5py (Debian package python3-h5py)") from error
    return h5py


def _text(value) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def _attributes(node) -> Dict[str, Any]:
    return {key: _text(value.item() if isinstance(value, np.ndarray) and value.shape == () else value)
            for key, value in node.attrs.items()}


def _read_config(path: str) -> Dict[str, str]:
    config = {}
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if "=" in line:
                key, value = line.split("=", 1)
                config[key.strip()] = value.strip()
    return config


@dataclass
class Analysis:
    """RUN/analysis.h5: one row per (epoch, layer, estimator) with I(X;T), I(T;Y), I(T_prev;T),
    IB, the nuisance ratio and kappa, in nats (NaN off the chain); `layer` and `estimator`
    columns hold names. `totals`: per epoch and estimator, summed over the chain."""
    rows: Dict[str, np.ndarray]
    totals: Dict[str, np.ndarray]
    attributes: Dict[str, Any]


@dataclass
class Run:
    """A run: its options (config.ini), the store's provenance attributes (seed, model,
    norm_spec, git_commit, ...), per-epoch metrics, the dumped samples (inputs, labels, index,
    split: 0 train, 1 test or validation), kappa per epoch and normalization site, and the
    analysis when `ibn analyze` ran. Activations are read when asked for: activations(epoch,
    layer) or epoch(epoch)."""
    path: str
    config: Dict[str, str]
    attributes: Dict[str, Any]
    metrics: Dict[str, np.ndarray]
    data: Dict[str, np.ndarray]
    contraction: Dict[int, Dict[str, float]]
    dumped_epochs: List[int]
    layers: List[str]
    chain: List[str]
    analysis: Optional[Analysis] = None
    _store: str = field(default="", repr=False)

    def activations(self, epoch: int, layer: str) -> np.ndarray:
        """The stored activations [N, features] of `layer` at `epoch`, as float32."""
        if epoch not in self.dumped_epochs:
            raise KeyError(f"{self.path}: epoch {epoch} was not dumped; dumped: {self.dumped_epochs}")
        if layer not in self.layers:
            raise KeyError(f"{self.path}: no layer {layer!r}; layers: {self.layers}")
        with _h5py().File(self._store, "r") as f:
            return f[f"/epochs/{epoch}/{layer}"][...].astype(np.float32)

    def epoch(self, epoch: int) -> Dict[str, np.ndarray]:
        """Every stored layer at `epoch`, by name."""
        return {layer: self.activations(epoch, layer) for layer in self.layers}


def _read_analysis(path: str) -> Optional[Analysis]:
    if not os.path.exists(path):
        return None
    with _h5py().File(path, "r") as f:
        attributes = _attributes(f)
        rows = {name: f["rows"][name][...] for name in f["rows"]}
        totals = {name: f["totals"][name][...] for name in f["totals"]}
    layers = str(attributes.get("layers", "")).split(",")
    estimators = str(attributes.get("estimators", "")).split("\n")
    rows["layer"] = np.array([layers[i] for i in rows["layer_index"]])
    rows["estimator"] = np.array([estimators[i] for i in rows["estimator_index"]])
    totals["estimator"] = np.array([estimators[i] for i in totals["estimator_index"]])
    return Analysis(rows, totals, attributes)


def load_run(path: str) -> Run:
    """Reads RUN/config.ini, RUN/activations.h5 and, when present, RUN/analysis.h5.
    Raises FileNotFoundError when the run has no complete store (`ibn train --status RUN`
    says why)."""
    store = os.path.join(path, "activations.h5")
    if not os.path.exists(store):
        raise FileNotFoundError(f"{path}: no activations.h5; is the run finished? (ibn train --status {path})")
    with _h5py().File(store, "r") as f:
        attributes = _attributes(f)
        metrics = {name: f["metrics"][name][...] for name in f["metrics"]}
        data = {name: f["data"][name][...] for name in f["data"]}
        contraction = {int(epoch): {site: float(f["contraction"][epoch][site][0]) for site in f["contraction"][epoch]}
                       for epoch in f.get("contraction", {})}
        dumped = sorted(int(e) for e in f["meta/dumped_epochs"][...])
    config_path = os.path.join(path, "config.ini")
    config = _read_config(config_path) if os.path.exists(config_path) else {}
    split = lambda text: [part for part in str(text).split(",") if part]  # noqa: E731
    return Run(path=path, config=config, attributes=attributes, metrics=metrics, data=data, contraction=contraction,
               dumped_epochs=dumped, layers=split(attributes.get("layers", "")), chain=split(attributes.get("chain", "")),
               analysis=_read_analysis(os.path.join(path, "analysis.h5")), _store=store)
