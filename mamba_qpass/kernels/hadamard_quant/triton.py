"""Triton kernels for ``hadamard_quant_ref`` and ``quantize_ref``, bit-exact against them.

The rotation is a blocked float64 product with the ±1 matrix read from memory, O(D**2) per row; its sums
are exact (see ``reference``), so the blocking order does not matter.
"""

import torch
import triton
import triton.language as tl

from mamba_qpass.kernels.checks import check_f64_scalar, check_shape, check_tensor, check_unit_last_stride
from mamba_qpass.kernels.hadamard_quant.reference import MAX_EXACT_ORDER, hadamard_output_scale
from mamba_qpass.kernels.quant_math import EXACT_FP_LAUNCH, tl_round_half_even_clamp_int8

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@triton.jit
def _hadamard_quant_kernel(
    y_ptr, h_ptr, scale_ptr, out_ptr,
    M, D, stride_ym, stride_hd, stride_om,
    BLOCK_M: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr,
):
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_i = tl.program_id(1) * BLOCK_I + tl.arange(0, BLOCK_I)  # output columns = rows of H
    offs_j = tl.arange(0, BLOCK_J)  # input columns = columns of H
    mask_m = offs_m < M
    mask_i = offs_i < D
    y_ptrs = y_ptr + offs_m[:, None] * stride_ym + offs_j[None, :]
    h_ptrs = h_ptr + offs_i[:, None] * stride_hd + offs_j[None, :]

    acc = tl.zeros((BLOCK_M, BLOCK_I), dtype=tl.float64)
    for j_start in range(0, D, BLOCK_J):
        mask_j = offs_j < D - j_start
        y = tl.load(y_ptrs, mask=mask_m[:, None] & mask_j[None, :], other=0.0).to(tl.float64)
        h = tl.load(h_ptrs, mask=mask_i[:, None] & mask_j[None, :], other=0).to(tl.float64)
        acc += tl.sum(y[:, None, :] * h[None, :, :], axis=2)
        y_ptrs += BLOCK_J
        h_ptrs += BLOCK_J

    v = acc * tl.load(scale_ptr)
    out_ptrs = out_ptr + offs_m[:, None] * stride_om + offs_i[None, :]
    tl.store(out_ptrs, tl_round_half_even_clamp_int8(v), mask=mask_m[:, None] & mask_i[None, :])


@triton.jit
def _quantize_kernel(
    x_ptr, out_inv_scale_ptr, out_ptr, M, D, stride_xm, stride_om,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask = (offs_m < M)[:, None] & (offs_d < D)[None, :]
    x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_d[None, :], mask=mask, other=0.0).to(tl.float64)
    v = x * tl.load(out_inv_scale_ptr)
    tl.store(out_ptr + offs_m[:, None] * stride_om + offs_d[None, :], tl_round_half_even_clamp_int8(v), mask=mask)


def _hadamard_blocks(rows: int, order: int, device: torch.device) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_I, BLOCK_J). The broadcast product holds BLOCK_M * BLOCK_I * BLOCK_J float64
    values: small on GPU (registers), up to 2**18 on CPU where the interpreter pays per op, not per value."""
    if device.type == "cuda":
        return 16, 32, 16
    block_d = min(64, triton.next_power_of_2(order))
    return min(64, triton.next_power_of_2(rows)), block_d, block_d


def _as_rows(name: str, t: torch.Tensor) -> torch.Tensor:
    check_unit_last_stride(name, t)
    return t.reshape(-1, t.shape[-1])  # a view whenever the leading dims can be merged


def hadamard_quant(y: torch.Tensor, hadamard: torch.Tensor, out_inv_scale: torch.Tensor) -> torch.Tensor:
    """Triton ``hadamard_quant_ref``: y float16 (M, D) or (B, L, D), last dim contiguous, D <= 8192 a
    supported Hadamard order; hadamard the ±1 (D, D) matrix of ``hadamard_matrix(D)`` (int8 or any
    dtype holding ±1 exactly), on y's device; float64 scalar out_inv_scale. Returns int8 of y's shape."""
    check_tensor("y", y, (torch.float16,), (2, 3))
    device = y.device
    order = y.shape[-1]
    if not 1 <= order <= MAX_EXACT_ORDER:
        raise ValueError(f"hadamard_quant is exact only for D <= {MAX_EXACT_ORDER}, got D={order}")
    check_tensor("hadamard", hadamard, (torch.int8, torch.float16, torch.float32, torch.float64), (2,), device)
    check_shape("hadamard", hadamard, (order, order))
    check_unit_last_stride("hadamard", hadamard)
    check_f64_scalar("out_inv_scale", out_inv_scale, device)

    rows = _as_rows("y", y)
    out = torch.empty(rows.shape, dtype=torch.int8, device=device)
    m = rows.shape[0]
    if m > 0:
        scale = hadamard_output_scale(out_inv_scale, order)
        block_m, block_i, block_j = _hadamard_blocks(m, order, device)
        grid = (triton.cdiv(m, block_m), triton.cdiv(order, block_i))
        _hadamard_quant_kernel[grid](
            rows, hadamard, scale, out, m, order, rows.stride(0), hadamard.stride(0), out.stride(0),
            BLOCK_M=block_m, BLOCK_I=block_i, BLOCK_J=block_j, **EXACT_FP_LAUNCH,
        )
    return out.reshape(y.shape)


def quantize(x: torch.Tensor, out_inv_scale: torch.Tensor) -> torch.Tensor:
    """Triton ``quantize_ref``: x float32/float16/bfloat16 (M, D) or (B, L, D), last dim contiguous;
    float64 scalar out_inv_scale. Returns int8 of x's shape."""
    check_tensor("x", x, FLOAT_DTYPES, (2, 3))
    device = x.device
    check_f64_scalar("out_inv_scale", out_inv_scale, device)
    rows = _as_rows("x", x)
    out = torch.empty(rows.shape, dtype=torch.int8, device=device)
    m, d = rows.shape
    if out.numel() > 0:
        block_d = min(1024, triton.next_power_of_2(d))
        block_m = max(1, min(triton.next_power_of_2(m), (4096 if device.type == "cuda" else 65536) // block_d))
        grid = (triton.cdiv(m, block_m), triton.cdiv(d, block_d))
        _quantize_kernel[grid](
            rows, out_inv_scale, out, m, d, rows.stride(0), out.stride(0),
            BLOCK_M=block_m, BLOCK_D=block_d, **EXACT_FP_LAUNCH,
        )
    return out.reshape(x.shape)
