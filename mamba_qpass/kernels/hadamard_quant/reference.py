"""Hadamard rotation followed by int8 quantisation, in plain PyTorch: the specification.

    out = codes of (H_D @ y_row) * c,   c = out_inv_scale * (1 / sqrt(D))   (float64)

H_D is the unnormalised ±1 matrix of ``numerics.hadamard_matrix``; the 1/sqrt(D) that makes it a rotation
is folded into c (``numerics.hadamard_output_scale``), which the host computes once in float64.

Why the rotated sums are exact: y is float16, so every y is a multiple of 2**-24 with |y| <= 65504 < 2**16.
A ±1 sum of D <= 2**13 of them is a multiple of 2**-24 of magnitude below 2**29, which needs at most
29 + 24 = 53 significant bits: every partial sum is a float64 number, so float64 summation is exact in
any order, with or without fused multiply-adds. That holds for the kernel's two Kronecker stages too
(each intermediate is a ±1 sum of at most D of the y). Every implementation is therefore bit-exact
against this float64 matmul; only the epilogue's multiply by c rounds, identically everywhere.
"""

import torch

from mamba_qpass.numerics import hadamard_output_scale, int8_grid


def hadamard_quant_epilogue(rotated: torch.Tensor, output_scale: torch.Tensor) -> torch.Tensor:
    """float64 rotated rows and the float64 scalar c -> their int8 codes, as float64."""
    return int8_grid(rotated * output_scale)


def hadamard_quant_ref(y: torch.Tensor, hadamard: torch.Tensor, out_inv_scale: torch.Tensor) -> torch.Tensor:
    """y: float16 (..., D); hadamard: ±1 (D, D); out_inv_scale: float64 scalar. Returns int8 (..., D)."""
    rotated = y.to(torch.float64) @ hadamard.to(torch.float64).T  # exact, see the module docstring
    return hadamard_quant_epilogue(rotated, hadamard_output_scale(out_inv_scale, y.shape[-1])).to(torch.int8)
