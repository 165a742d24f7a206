"""Triton kernel for ``hadamard_quant_ref``, bit-exact against it.

The rotation applies the two Kronecker factors of ``numerics.hadamard_matrix(D)`` (``kronecker_split``), read in
place from the full matrix, as two float64 ``tl.dot``s: each token row y, read as an (R, C) matrix Y,
becomes H_R @ (Y @ H_C.T), O(D * (R + C)) per row. All its sums are exact (see ``reference``), so neither
the blocking nor the dot's order matters.
"""

import torch
import triton
import triton.language as tl

from mamba_qpass.kernels.checks import check_f64_scalar, check_shape, check_tensor, check_unit_last_stride, rows_view
from mamba_qpass.kernels.hadamard_quant.kronecker import kronecker_split
from mamba_qpass.kernels.quant_math import EXACT_FP_LAUNCH, tl_round_half_even_clamp_int8
from mamba_qpass.numerics import MAX_EXACT_HADAMARD_ORDER, hadamard_output_scale


@triton.jit
def _hadamard_quant_kernel(
    y_ptr, h_ptr, scale_ptr, out_ptr,
    M, R, C, stride_ym, stride_h, stride_om,
    BLOCK_M: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_J: tl.constexpr,
):
    # BLOCK_M tokens per program, their (R, C) matrices stacked: stacked row s is row r of token m.
    s = tl.arange(0, BLOCK_M * BLOCK_R)
    token = tl.program_id(0) * BLOCK_M + s // BLOCK_R
    r = s % BLOCK_R
    mask_s = (token < M) & (r < R)
    offs_c = tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    offs_j = tl.arange(0, BLOCK_J)

    # Stage 1: Z = Y @ H_C.T over blocks of Y's columns; H_C = H[:C, :C].
    y_ptrs = y_ptr + token[:, None] * stride_ym + r[:, None] * C + offs_j[None, :]
    right_t_ptrs = h_ptr + offs_c[None, :] * stride_h + offs_j[:, None]  # (BLOCK_J, BLOCK_C) block of H_C.T
    z = tl.zeros((BLOCK_M * BLOCK_R, BLOCK_C), dtype=tl.float64)
    for j_start in range(0, C, BLOCK_J):
        mask_j = offs_j < C - j_start
        y = tl.load(y_ptrs, mask=mask_s[:, None] & mask_j[None, :], other=0.0).to(tl.float64)
        right_t = tl.load(right_t_ptrs, mask=mask_j[:, None] & mask_c[None, :], other=0).to(tl.float64)
        z = tl.dot(y, right_t, z, input_precision="ieee", out_dtype=tl.float64)
        y_ptrs += BLOCK_J
        right_t_ptrs += BLOCK_J

    # Stage 2: H_R @ Z per token, as one product with the block-diagonal (I_BLOCK_M ⊗ H_R); H_R = H[::C, ::C].
    s2 = tl.arange(0, BLOCK_M * BLOCK_R)
    r2 = s2 % BLOCK_R
    same_token = (s // BLOCK_R)[:, None] == (s2 // BLOCK_R)[None, :]
    left_mask = same_token & (r < R)[:, None] & (r2 < R)[None, :]
    left_ptrs = h_ptr + r[:, None] * C * stride_h + r2[None, :] * C
    left = tl.load(left_ptrs, mask=left_mask, other=0).to(tl.float64)
    rotated = tl.dot(left, z, input_precision="ieee", out_dtype=tl.float64)

    v = rotated * tl.load(scale_ptr)
    out_ptrs = out_ptr + token[:, None] * stride_om + r[:, None] * C + offs_c[None, :]
    tl.store(out_ptrs, tl_round_half_even_clamp_int8(v), mask=mask_s[:, None] & mask_c[None, :])


def _hadamard_blocks(rows: int, left: int, right: int, device: torch.device) -> dict:
    """One token per program on GPU (its (R, C) tiles live in registers); on CPU (the interpreter) up to
    512 stacked rows per program, since there each op costs the same whatever its size. Tiles are at least
    16 wide, the smallest ``tl.dot`` shape used on every backend."""
    block_r = max(16, triton.next_power_of_2(left))
    block_c = max(16, triton.next_power_of_2(right))
    if device.type == "cuda":
        return dict(BLOCK_M=1, BLOCK_R=block_r, BLOCK_C=block_c, BLOCK_J=min(block_c, 32), num_warps=8)
    block_m = max(1, min(triton.next_power_of_2(rows), 512 // block_r))
    return dict(BLOCK_M=block_m, BLOCK_R=block_r, BLOCK_C=block_c, BLOCK_J=block_c)


def hadamard_quant(y: torch.Tensor, hadamard: torch.Tensor, out_inv_scale: torch.Tensor) -> torch.Tensor:
    """Triton ``hadamard_quant_ref``: y float16 (M, D) or (B, L, D), last dim contiguous, D <= 8192 a
    supported order; hadamard = ``hadamard_matrix(D)`` (int8, or a float dtype holding it), on y's device;
    float64 scalar out_inv_scale. Returns int8 of y's shape.

    The kernel reads only the Kronecker factors H[::C, ::C] and H[:C, :C] of ``hadamard``, so it must be
    ``hadamard_matrix(D)`` itself, not another Hadamard matrix of that order."""
    check_tensor("y", y, (torch.float16,), (2, 3))
    device = y.device
    order = y.shape[-1]
    if not 1 <= order <= MAX_EXACT_HADAMARD_ORDER:
        raise ValueError(f"hadamard_quant is exact only for D <= {MAX_EXACT_HADAMARD_ORDER}, got D={order}")
    check_tensor("hadamard", hadamard, (torch.int8, torch.float16, torch.float32, torch.float64), (2,), device)
    check_shape("hadamard", hadamard, (order, order))
    check_unit_last_stride("hadamard", hadamard)
    check_f64_scalar("out_inv_scale", out_inv_scale, device)
    left, right = kronecker_split(order)

    rows = rows_view("y", y)
    out = torch.empty(rows.shape, dtype=torch.int8, device=device)
    m = rows.shape[0]
    if m > 0:
        config = _hadamard_blocks(m, left, right, device)
        _hadamard_quant_kernel[(triton.cdiv(m, config["BLOCK_M"]),)](
            rows, hadamard, hadamard_output_scale(out_inv_scale, order), out,
            m, left, right, rows.stride(0), hadamard.stride(0), out.stride(0), **config, **EXACT_FP_LAUNCH,
        )
    return out.reshape(y.shape)
