"""Triton kernel for ``dequantize_int8_ref``, bit-exact against it: one pass instead of torch's three."""

import torch
import triton
import triton.language as tl

from mamba_qpass.kernels.checks import check_tensor, rows_view
from mamba_qpass.kernels.dependent_launch import dependent_launch, wait_for_earlier_kernels
from mamba_qpass.kernels.quant_math import EXACT_FP_LAUNCH


@triton.jit
def _dequantize_int8_kernel(
    codes_ptr, out_ptr, scale, zero_point, M, D, stride_cm, stride_om,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, USE_GDC: tl.constexpr = False,
):
    wait_for_earlier_kernels(USE_GDC)
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask = (offs_m < M)[:, None] & (offs_d < D)[None, :]
    codes = tl.load(codes_ptr + offs_m[:, None] * stride_cm + offs_d[None, :], mask=mask, other=0)
    values = (codes.to(tl.float32) - zero_point) * scale
    tl.store(out_ptr + offs_m[:, None] * stride_om + offs_d[None, :], values, mask=mask)


def dequantize_int8(codes: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """Triton ``dequantize_int8_ref``: int8 codes with a contiguous last dim (rows may be strided, as a
    column slice of a projection's output is); returns contiguous float32 of codes' shape."""
    check_tensor("codes", codes, (torch.int8,), (1, 2, 3, 4))
    rows = rows_view("codes", codes)
    out = torch.empty(rows.shape, dtype=torch.float32, device=codes.device)
    m, d = rows.shape
    if out.numel() > 0:
        block_d = min(1024, triton.next_power_of_2(d))
        block_m = max(1, min(triton.next_power_of_2(m), (8192 if codes.is_cuda else 65536) // block_d))
        grid = (triton.cdiv(m, block_m), triton.cdiv(d, block_d))
        # float32 arguments: Triton passes Python floats as float32, the rounding torch applies to the
        # scale; a zero point of int8 codes is exact there
        _dequantize_int8_kernel[grid](
            rows, out, float(scale), float(zero_point), m, d, rows.stride(0), out.stride(0),
            BLOCK_M=block_m, BLOCK_D=block_d, **EXACT_FP_LAUNCH, **dependent_launch(codes.device, m),
        )
    return out.reshape(codes.shape)
