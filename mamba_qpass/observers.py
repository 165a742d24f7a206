"""Observers: identity modules that record activation ranges during calibration.

Each carries the name of the tensor it watches (e.g. ``layer 3 conv1d output u``) so that a NaN or
an infinity in calibration is reported where it happened.
"""

import math

import torch
from torch import nn


class NonFiniteActivationError(ValueError):
    """An activation held NaN or inf during calibration."""


def _abs_max_checked(name: str, x: torch.Tensor) -> torch.Tensor:
    """max |x| as float32, raising if x holds NaN or inf (both propagate to the maximum, so one
    reduction serves for the range and the check)."""
    amax = x.detach().abs().max().float()
    if not torch.isfinite(amax):
        bad = "NaN" if torch.isnan(x).any() else "inf"
        if x.dtype == torch.float16:
            raise NonFiniteActivationError(
                f"{bad} in {name} during calibration: the float16 model overflows here (float16 holds at most "
                "65504). Calibrate it in float32: quantise model.float() (load_pretrained loads float32 by default); "
                "the int8 datapath is the same, only the float embedding is kept in float32"
            )
        raise NonFiniteActivationError(
            f"{bad} in {name} during calibration, from finite weights (capture checks them): the activations "
            "overflow their dtype; check the calibration data and the weights' scale"
        )
    return amax


class AbsMaxObserver(nn.Module):
    """Running maximum of |x| over every calibration batch."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name
        self.register_buffer("amax", torch.zeros((), dtype=torch.float32))
        self.register_buffer("batches", torch.zeros((), dtype=torch.int64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.amax = torch.maximum(self.amax, _abs_max_checked(self.name, x))
        self.batches += 1
        return x

    def range(self) -> torch.Tensor:
        return self.amax

    def assume_range(self, amax: float) -> None:
        """Record ``amax`` as if calibration had observed it: a graph rebuilt for its structure alone
        (serialize.py) gets its real scales afterwards."""
        self.amax.fill_(amax)
        self.batches.fill_(1)


class PercentileObserver(nn.Module):
    """The ``alpha`` percentile of |x| per calibration batch, averaged over batches."""

    def __init__(self, name: str, alpha: float):
        super().__init__()
        self.name = name
        self.alpha = alpha
        self.register_buffer("total", torch.zeros((), dtype=torch.float64))
        self.register_buffer("batches", torch.zeros((), dtype=torch.int64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _abs_max_checked(self.name, x)
        flat = x.detach().abs().flatten().float()
        k = max(1, math.ceil(self.alpha * flat.numel()))
        self.total += flat.kthvalue(k).values.double()
        self.batches += 1
        return x

    def range(self) -> torch.Tensor:
        return (self.total / self.batches.clamp(min=1)).float()

    def assume_range(self, amax: float) -> None:
        """As ``AbsMaxObserver.assume_range``: one batch whose percentile was ``amax``."""
        self.total.fill_(amax)
        self.batches.fill_(1)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"
