"""Triton kernel for ``quantize_ref``, bit-exact against it: one float64 multiply, then the rounding."""

import torch
import triton
import triton.language as tl

from mamba_qpass.kernels.checks import check_f64_scalar, check_tensor, rows_view
from mamba_qpass.kernels.dependent_launch import dependent_launch, wait_for_earlier_kernels
from mamba_qpass.kernels.quant_math import EXACT_FP_LAUNCH, tl_round_half_even_clamp_int8

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@triton.jit
def _quantize_kernel(
    x_ptr, out_inv_scale_ptr, out_ptr, M, D, stride_xm, stride_om,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, USE_GDC: tl.constexpr = False,
):
    wait_for_earlier_kernels(USE_GDC)
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask = (offs_m < M)[:, None] & (offs_d < D)[None, :]
    x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_d[None, :], mask=mask, other=0.0).to(tl.float64)
    v = x * tl.load(out_inv_scale_ptr)
    tl.store(out_ptr + offs_m[:, None] * stride_om + offs_d[None, :], tl_round_half_even_clamp_int8(v), mask=mask)


def quantize(x: torch.Tensor, out_inv_scale: torch.Tensor) -> torch.Tensor:
    """Triton ``quantize_ref``: x float32/float16/bfloat16 (M, D) or (B, L, D), last dim contiguous;
    float64 scalar out_inv_scale. Returns int8 of x's shape."""
    check_tensor("x", x, FLOAT_DTYPES, (2, 3))
    device = x.device
    check_f64_scalar("out_inv_scale", out_inv_scale, device)
    rows = rows_view("x", x)
    out = torch.empty(rows.shape, dtype=torch.int8, device=device)
    m, d = rows.shape
    if out.numel() > 0:
        block_d = min(1024, triton.next_power_of_2(d))
        block_m = max(1, min(triton.next_power_of_2(m), (4096 if device.type == "cuda" else 65536) // block_d))
        grid = (triton.cdiv(m, block_m), triton.cdiv(d, block_d))
        _quantize_kernel[grid](
            rows, out_inv_scale, out, m, d, rows.stride(0), out.stride(0),
            BLOCK_M=block_m, BLOCK_D=block_d, **EXACT_FP_LAUNCH, **dependent_launch(device, m),
        )
    return out.reshape(x.shape)
