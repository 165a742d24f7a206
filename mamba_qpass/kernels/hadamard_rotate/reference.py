"""Orthonormal Hadamard rotation in float, the op the reference-quantised graph rotates out_proj's
input with: ``y @ H.T / sqrt(D)``. The lowered graph fuses it with the quantisation that follows
(``hadamard_quant``); this float form exists for calibration and the q/dq reference graph."""

import math

import torch


def hadamard_rotate_ref(y: torch.Tensor, hadamard: torch.Tensor) -> torch.Tensor:
    """y: float (..., D); hadamard: ±1 (D, D). Computed in float64, returned in y's dtype."""
    rotated = y.to(torch.float64) @ hadamard.to(device=y.device, dtype=torch.float64).T
    return (rotated / math.sqrt(y.shape[-1])).to(y.dtype)
