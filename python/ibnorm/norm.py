"""Normalization layers from spec strings: the C++ layers of `ibn`, as torch.nn modules."""
from typing import List, Optional

import torch

from ._library import load_library


class Norm(torch.nn.Module):
    """A normalization layer for any spec `ibn norms` accepts, over `num_features` channels.

        ibnorm.Norm("layernorm", 256)           # like nn.LayerNorm(256)
        ibnorm.Norm("batchnorm", 64)            # like nn.BatchNorm1d/2d(64): running statistics
        ibnorm.Norm("ibnorm-t:lambda=2", 256)   # IBNorm-T, compression strength lambda = 2
        ibnorm.Norm("ibnorm-s:kappa=0.5", 256)  # lambda chosen for Gaussian contraction 0.5

    Input: [N, C], [N, T, C] or [N, C, H, W, ...] with C = num_features (the spec's area says
    which elements share statistics). Parameters and buffers have LibTorch's names (weight,
    bias, running_mean, running_var, num_batches_tracked, and DyT's alpha), so state_dict,
    .to(), .double() and optimizers work as with torch.nn layers; train() and eval() switch
    batch statistics and running estimates as in C++. Eager PyTorch only: the operator updates
    the running statistics in place without declaring it, so torch.jit, tracing and
    torch.compile are not supported. Gradients come from autograd through the
    same ATen operations as in C++ (on CUDA with IBN_FUSED_NORM=1, the fused kernels when the
    library was built with them, as for `ibn`).
    """

    def __init__(self, spec: str, num_features: int):
        super().__init__()
        load_library()
        canonical, description = torch.ops.ibn.norm_describe(spec)
        names, values, parameters = torch.ops.ibn.norm_state(canonical, int(num_features))
        self.spec = canonical
        self.description = description
        self.num_features = int(num_features)
        self._state_names: List[str] = list(names)
        for index, (name, value) in enumerate(zip(names, values)):
            if index < parameters:
                self.register_parameter(name, torch.nn.Parameter(value))
            else:
                self.register_buffer(name, value)

    def _state(self) -> List[torch.Tensor]:
        return [getattr(self, name) for name in self._state_names]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.ibn.norm_forward(x, self.spec, self.num_features, self._state(), self.training)

    def contraction(self, x: torch.Tensor) -> float:
        """Variance contraction kappa of this layer on the batch x (SPEC section 3): the mean
        over groups of var(psi(z)), z the unit-scale centred input, from x's own statistics
        (running estimates neither used nor moved). 1 for variance-centric specs."""
        with torch.no_grad():
            return float(torch.ops.ibn.norm_contraction(x, self.spec, self.num_features, self._state()))

    def extra_repr(self) -> str:
        return f"{self.spec!r}, {self.num_features}"


def describe(spec: str) -> str:
    """One line: what the spec computes, with its formula and every parameter."""
    load_library()
    return torch.ops.ibn.norm_describe(spec)[1]


def presets() -> List[str]:
    """The normalizer names a spec can start with (`ibn norms` lists them with their formulas)."""
    load_library()
    return list(torch.ops.ibn.norm_presets())


def contraction(spec: str, x: Optional[torch.Tensor] = None, num_features: Optional[int] = None) -> float:
    """Variance contraction kappa of a normalizer.

    Without x: the expected kappa for standard Gaussian input, by quadrature (what
    `ibn contraction` prints; 1 for variance-centric specs). With x: kappa measured on that
    batch by a fresh layer over num_features channels (default: x's channel dimension, 1 for
    [N, C, ...] inputs, the last one for [N, C] and [N, T, C])."""
    load_library()
    if x is None:
        return float(torch.ops.ibn.gaussian_contraction(spec))
    x = torch.as_tensor(x)
    if num_features is None:
        num_features = x.shape[1] if x.dim() >= 4 else x.shape[-1]
    return Norm(spec, num_features).to(x.device).contraction(x)


def lambda_for_contraction(spec: str, kappa: float) -> float:
    """The lambda at which the spec's compression has Gaussian contraction kappa (0 < kappa < 1)."""
    load_library()
    return float(torch.ops.ibn.lambda_for_contraction(spec, float(kappa)))
