"""int8 x int8 linear layer with a float64 requantisation epilogue, in plain PyTorch: the specification.

    acc[m, n] = sum_k a[m, k] * weight[n, k]                  exact integer
    v[m, n]   = f64(acc) * dequant_scale[n] (+ bias[n])       float64, two separately rounded ops
    out       = codes of v * out_inv_scale[n]                 if out_inv_scale is given
              = v converted to out_dtype                      otherwise
    out       = out + residual                                if residual is given (float32 out): the
                                                              residual add that follows out_proj, done
                                                              as aten.add does it, in float32

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


def add_residual(out: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """float32 ``out`` plus a float16/bfloat16/float32 ``residual`` of its shape, in float32: what
    ``aten.add(residual, out)`` computes (type promotion to float32, one rounded addition)."""
    return residual.to(torch.float32) + out


def int8_linear_ref(
    a: torch.Tensor,
    weight: torch.Tensor,
    dequant_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    out_inv_scale: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.float32,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """a: int8 (..., K); weight: int8 (N, K); dequant_scale, bias, out_inv_scale: float64 (N,);
    residual: float (..., N), only with float32 output.

    Returns int8 (..., N) codes when ``out_inv_scale`` is given, else (..., N) in ``out_dtype``.
    """
    if residual is not None and (out_inv_scale is not None or out_dtype != torch.float32):
        raise ValueError("a residual is added only to float32 output (no out_inv_scale, out_dtype float32)")
    # A float64 matmul of int8 values is exact: every product and partial sum is an integer of
    # magnitude <= 128 * 128 * K < 2**53 for any K < 2**39, so no rounding happens in any order.
    acc = a.to(torch.float64) @ weight.to(torch.float64).T
    out = int8_linear_epilogue(acc, dequant_scale, bias, out_inv_scale)
    out = out.to(torch.int8 if out_inv_scale is not None else out_dtype)
    return out if residual is None else add_residual(out, residual)
