"""Hadamard rotation followed by int8 quantisation, and plain quantisation, in PyTorch: the specification.

    hadamard_quant: out = codes of (H_D @ y_row) * c,   c = out_inv_scale * (1 / sqrt(D))   (float64)
    quantize:       out = codes of f64(x) * out_inv_scale

H_D is the unnormalised ±1 matrix of ``matrix.hadamard_matrix``; the 1/sqrt(D) that makes it a rotation
is folded into c, which the host computes once in float64.

Why the rotated sums are exact: y is float16, so every y is a multiple of 2**-24 with |y| <= 65504 < 2**16.
A ±1 sum of D <= 2**13 of them is a multiple of 2**-24 of magnitude below 2**29, which needs at most
29 + 24 = 53 significant bits: every partial sum is a float64 number, so float64 summation is exact in
any order, with or without fused multiply-adds. That holds for the kernel's two Kronecker stages too
(each intermediate is a ±1 sum of at most D of the y). The kernel is therefore bit-exact against this float64
matmul; only the final multiply by c rounds, identically on both sides.
"""

import math

import torch

from mamba_qpass.kernels.quant_math import round_half_even_clamp_int8

MAX_EXACT_ORDER = 2**13


def hadamard_output_scale(out_inv_scale: torch.Tensor, order: int) -> torch.Tensor:
    """c = out_inv_scale * (1 / sqrt(order)) as a float64 scalar tensor (shape ()), on out_inv_scale's device.

    1 / sqrt(order) is a Python float, so c is the same IEEE product on every device; dividing the tensor
    by sqrt(order) instead would not be (CUDA divides a tensor by a scalar as a multiply by its reciprocal).
    """
    return out_inv_scale.to(torch.float64).reshape(()) * (1.0 / math.sqrt(order))


def hadamard_quant_ref(y: torch.Tensor, hadamard: torch.Tensor, out_inv_scale: torch.Tensor) -> torch.Tensor:
    """y: float16 (..., D); hadamard: ±1 (D, D); out_inv_scale: float64 scalar. Returns int8 (..., D)."""
    rotated = y.to(torch.float64) @ hadamard.to(torch.float64).T  # exact, see the module docstring
    return round_half_even_clamp_int8(rotated * hadamard_output_scale(out_inv_scale, y.shape[-1]))


def quantize_ref(x: torch.Tensor, out_inv_scale: torch.Tensor) -> torch.Tensor:
    """x: float (...); out_inv_scale: float64 scalar. Returns int8 codes of x's shape."""
    return round_half_even_clamp_int8(x.to(torch.float64) * out_inv_scale.reshape(()))
