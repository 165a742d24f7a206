"""int8 x int8 linear layer with a float64 requantisation epilogue, in plain PyTorch: the specification.

    acc[m, n] = sum_k a[m, k] * weight[n, k]                  exact integer
    v[m, n]   = f64(acc) * dequant_scale[n] (+ bias[n])       float64, two separately rounded ops
    out       = codes of v * out_inv_scale[n]                 if out_inv_scale is given
              = v converted to out_dtype                      otherwise

The per-column inverse output scale lets one GEMM produce several tensors with their own scales
(x and z of in_proj; dt, B and C of x_proj).
"""

import torch

from mamba_qpass.numerics import int8_grid


def int8_linear_epilogue(
    acc: torch.Tensor, dequant_scale: torch.Tensor, bias: torch.Tensor | None, out_inv_scale: torch.Tensor | None
) -> torch.Tensor:
    """float64 accumulator -> float64 v, or v's int8 codes (as float64) when ``out_inv_scale`` is given."""
    v = acc * dequant_scale
    if bias is not None:
        v = v + bias
    return v if out_inv_scale is None else int8_grid(v * out_inv_scale)


def int8_linear_ref(
    a: torch.Tensor,
    weight: torch.Tensor,
    dequant_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    out_inv_scale: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """a: int8 (..., K); weight: int8 (N, K); dequant_scale, bias, out_inv_scale: float64 (N,).

    Returns int8 (..., N) codes when ``out_inv_scale`` is given, else (..., N) in ``out_dtype``.
    """
    # A float64 matmul of int8 values is exact: every product and partial sum is an integer of
    # magnitude <= 128 * 128 * K < 2**53 for any K < 2**39, so no rounding happens in any order.
    acc = a.to(torch.float64) @ weight.to(torch.float64).T
    out = int8_linear_epilogue(acc, dequant_scale, bias, out_inv_scale)
    return out.to(torch.int8 if out_inv_scale is not None else out_dtype)
