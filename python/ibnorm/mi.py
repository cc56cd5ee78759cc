"""Mutual information between two sets of samples, by the estimators of `ibn mi`."""
import math
from dataclasses import dataclass, field
from typing import Dict, Optional

import numpy as np
import torch

from ._library import load_library


@dataclass(frozen=True)
class Estimate:
    """One estimate of I(A;B) in nats. `lower` and `upper` are the bounds of a bound estimator
    (KDE's upper bound is `nats`), None otherwise; `spec` has every parameter resolved;
    `details` is what else the estimator measured (train/test splits, steps, ...), as text."""
    nats: float
    lower: Optional[float]
    upper: Optional[float]
    spec: str
    details: Dict[str, str] = field(default_factory=dict)

    @property
    def bits(self) -> float:
        return self.nats / math.log(2.0)


def _as_tensor(values) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values.detach()
    array = np.asarray(values)
    if not array.flags.writeable:  # h5py's and broadcast arrays: torch.from_numpy wants its own
        array = array.copy()
    if array.dtype == object:
        raise TypeError(f"ibnorm.mi: cannot read samples of dtype object (shape {array.shape}); give numbers")
    return torch.from_numpy(np.ascontiguousarray(array))


def mi(a, b, estimator: str = "ksg:k=3", a_discrete: Optional[bool] = None,
       b_discrete: Optional[bool] = None) -> Estimate:
    """I(A;B) in nats from paired samples: a [N] or [N, d_a], b [N] or [N, d_b], as torch
    tensors (any device) or numpy arrays. Left as None, a side is discrete when it holds
    integers (labels, codes) and continuous when it holds floats, as `ibn mi --discrete auto`;
    a float side asked to be discrete has its rounded values as codes.

    estimator: any spec `ibn mi --help` lists (binning, kde, ksg, mine, infonce, smile), e.g.
    "binning:bins=30", "kde:var=0.1", "ksg:k=3:transform=rank", "infonce:steps=600".
    Raises ValueError for a bad spec and for unusable data (NaN, fewer than 2 samples,
    different sample counts)."""
    load_library()
    nats, lower, upper, spec, keys, values = torch.ops.ibn.mutual_information(
        _as_tensor(a), _as_tensor(b), estimator, a_discrete, b_discrete)
    bound = lambda v: None if math.isnan(v) else float(v)  # noqa: E731
    return Estimate(float(nats), bound(lower), bound(upper), spec, dict(zip(keys, values)))
