"""ibnorm: the ibnorm toolkit's normalizers and mutual-information estimators for PyTorch.

The same C++ code as the `ibn` command line, loaded as PyTorch custom operators
(`torch.ops.ibn.*`), so a layer or an estimate in Python gives the C++ numbers:

    import ibnorm
    norm = ibnorm.Norm("ibnorm-t:lambda=2", 256)    # an nn.Module, like nn.LayerNorm(256)
    y = norm(x)                                     # x: [N, 256], [N, T, 256] or [N, 256, H, W]
    est = ibnorm.mi(a, b, estimator="ksg:k=3")      # est.nats, est.lower, est.upper, est.details
    ibnorm.contraction("ibnorm-t:lambda=2")         # Gaussian variance contraction kappa
    run = ibnorm.load_run("runs/r1")                # a run's store as numpy arrays

Every spec string `ibn norms` and `ibn mi --list` accept works here; the formulas are in
SPEC.md (shared) and `ibnorm.describe(spec)`.
"""
from ._library import library_build, load_library
from .norm import Norm, contraction, describe, lambda_for_contraction, presets
from .mi import Estimate, mi
from .run import Run, load_run

load_library()

__all__ = ["Norm", "contraction", "describe", "lambda_for_contraction", "presets", "Estimate", "mi", "Run",
           "load_run", "library_build"]
__version__ = library_build()["ibn_version"]
