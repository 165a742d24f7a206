"""Triton kernel for ``hadamard_quant_ref`` on int8 tensor cores, bit-exact against it.

The rotation of a float16 row is a ±1 sum, so it can be done in integers: every float16 y is an integer
multiple of 2**-24, q = y * 2**24 with |q| < 2**41, and float32 holds q exactly (11 significant bits).
Written as sign times base-128 digits, q = sign * sum_i d_i 128**i with d_i in [0, 127] (6 digits reach
2**42), each signed digit plane goes through an int8 ``tl.dot`` with the ±1 Kronecker factor H_C
(``kronecker_split``); pairs of planes share an int32 accumulator, acc_k = Z_2k + 128 Z_2k+1, whose
magnitude stays below 256 * 127 * 129 < 2**22. Stage 2, H_R @ Z, is linear, so it is applied to each
accumulator on its own, over its 3 balanced base-256 digit planes (int32 sums below 20 * 2**22), and the
three results recombine in int64 as P_0 + 2**14 P_1 + 2**28 P_2: the exact integer 2**24 * (H_D @ y),
below 2**53, so exact in float64 too. The epilogue scales it by 2**-24 (exact), then by c, the
reference's one rounded product. Float64 ``tl.dot``, which Triton before 3.9 cannot compile for sm_90,
is not needed, and no int64 arithmetic runs per digit.
"""

import torch
import triton
import triton.language as tl

from mamba_qpass.kernels.checks import check_f64_scalar, check_shape, check_tensor, check_unit_last_stride, rows_view
from mamba_qpass.kernels.hadamard_quant.kronecker import kronecker_split
from mamba_qpass.kernels.quant_math import EXACT_FP_LAUNCH, tl_round_half_even_clamp_int8
from mamba_qpass.numerics import MAX_EXACT_HADAMARD_ORDER, hadamard_factors, hadamard_output_scale


@triton.jit
def _signed_digit(magnitude, negative, weight):
    """Base-128 digit of the float32 integers ``magnitude`` at ``weight`` = 128**-i (an exact scaling),
    with the sign applied, as int8. A magnitude of 2**31 * 128**i or more has no bits there (11
    significant bits, the lowest at 2**21 * 128**i or above), so its digit is 0."""
    x = magnitude * weight
    fits = x < 2147483648.0
    digit = tl.where(fits, x, 0.0).to(tl.int32) & 127
    return tl.where(negative, -digit, digit).to(tl.int8)


@triton.jit
def _low_digit(e):
    """The balanced base-256 low digit of int32 ``e`` (as int8) and the rest, (e - digit) / 256 (exact)."""
    digit = ((e + 128) & 255) - 128
    return digit.to(tl.int8), (e - digit) >> 8


@triton.jit
def _rows_rotated(left, acc):
    """left @ acc, exact in int32, for an int32 ``acc`` below 2**22 in magnitude: 3 digit planes."""
    d, e = _low_digit(acc)
    out = tl.dot(left, d, out_dtype=tl.int32)
    d, e = _low_digit(e)
    out += tl.dot(left, d, out_dtype=tl.int32) << 8
    d, e = _low_digit(e)
    out += tl.dot(left, d, out_dtype=tl.int32) << 16
    return out


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
    offs_j = tl.arange(0, BLOCK_J)
    cols = tl.arange(0, BLOCK_C)
    mask_c = cols < C

    # Stage 1, Z = Y @ H_C.T (H_C = H[:C, :C]), digit planes paired into three int32 accumulators.
    acc0 = tl.zeros((BLOCK_M * BLOCK_R, BLOCK_C), dtype=tl.int32)
    acc1 = tl.zeros((BLOCK_M * BLOCK_R, BLOCK_C), dtype=tl.int32)
    acc2 = tl.zeros((BLOCK_M * BLOCK_R, BLOCK_C), dtype=tl.int32)
    for j_start in range(0, C, BLOCK_J):
        js = j_start + offs_j
        mask_j = js < C
        y = tl.load(
            y_ptr + token[:, None] * stride_ym + r[:, None] * C + js[None, :],
            mask=mask_s[:, None] & mask_j[None, :], other=0.0,
        ).to(tl.float32)
        magnitude = tl.abs(y) * 16777216.0  # |y| * 2**24, an exact integer
        negative = y < 0
        right_t = tl.load(  # (BLOCK_J, BLOCK_C) block of H_C.T
            h_ptr + cols[None, :] * stride_h + js[:, None], mask=mask_j[:, None] & mask_c[None, :], other=0
        ).to(tl.int8)
        acc0 = tl.dot(_signed_digit(magnitude, negative, 1.0), right_t, acc0, out_dtype=tl.int32)
        acc0 += tl.dot(_signed_digit(magnitude, negative, 0.0078125), right_t, out_dtype=tl.int32) << 7
        acc1 = tl.dot(_signed_digit(magnitude, negative, 6.103515625e-05), right_t, acc1, out_dtype=tl.int32)
        acc1 += tl.dot(_signed_digit(magnitude, negative, 4.76837158203125e-07), right_t, out_dtype=tl.int32) << 7
        acc2 = tl.dot(_signed_digit(magnitude, negative, 3.725290298461914e-09), right_t, acc2, out_dtype=tl.int32)
        acc2 += tl.dot(_signed_digit(magnitude, negative, 2.9103830456733704e-11), right_t, out_dtype=tl.int32) << 7

    # Stage 2, H_R @ Z per token, as one product with the block-diagonal (I_BLOCK_M ⊗ H_R); H_R = H[::C, ::C].
    s2 = tl.arange(0, BLOCK_M * BLOCK_R)
    r2 = s2 % BLOCK_R
    same_token = (s // BLOCK_R)[:, None] == (s2 // BLOCK_R)[None, :]
    left_mask = same_token & (r < R)[:, None] & (r2 < R)[None, :]
    left = tl.load(h_ptr + r[:, None] * C * stride_h + r2[None, :] * C, mask=left_mask, other=0).to(tl.int8)
    rotated = _rows_rotated(left, acc2).to(tl.int64) << 14
    rotated = (rotated + _rows_rotated(left, acc1)) << 14
    rotated = rotated + _rows_rotated(left, acc0)

    v = (rotated.to(tl.float64) * 5.9604644775390625e-08) * tl.load(scale_ptr)  # * 2**-24 is exact
    out_ptrs = out_ptr + token[:, None] * stride_om + r[:, None] * C + cols[None, :]
    tl.store(out_ptrs, tl_round_half_even_clamp_int8(v), mask=mask_s[:, None] & mask_c[None, :])


TILE_ELEMENTS = 8192  # stacked rows x columns a program holds: 3 int32 accumulators of that size
MAX_STACKED_ROWS = 128  # bounds stage 2's (rows, rows) block-diagonal factor in shared memory


def _tokens_per_program(block_r: int, block_c: int) -> int:
    return max(1, min(TILE_ELEMENTS // (block_r * block_c), MAX_STACKED_ROWS // block_r))


def _mac_cost(order: int, right: int) -> float:
    """Tensor-core multiply-adds per element of y for the split (order / right, right), padding included:
    6 digit planes over K = C in stage 1, 9 over the block-diagonal K = BLOCK_M * BLOCK_R in stage 2. On an
    H200 the kernel's time followed this count (about 11 ps per thousand at D = 5120 and at D = 1536)."""
    left = order // right
    block_r = max(32, triton.next_power_of_2(left))
    block_m = _tokens_per_program(block_r, right)
    return (6 * right + 9 * block_m * block_r) * block_r / left


def _hadamard_tiling(rows: int, order: int, device: torch.device) -> tuple[int, int, dict]:
    """(R, C, launch options). GPU: the Kronecker split with the fewest multiply-adds (``_mac_cost``: for
    D = 5120 that is 40 x 128, not 20 x 256, whose 20 rows pad to 32), programs of about TILE_ELEMENTS
    (the size that won a sweep of 36 tilings at D = 5120 and 1536), 32 columns of Y a step, 3 stages.
    CPU (the interpreter): the widest split and up to 512 stacked rows per program, since there each op
    costs the same whatever its size. Tiles are at least 32 wide, the smallest int8 ``tl.dot`` K on
    every backend (stage 2's K is the stacked rows)."""
    if device.type == "cuda":
        _, power = hadamard_factors(order)
        candidates = [c for c in (64, 128, 256) if c <= power] or [power]
        left, right = kronecker_split(order, min(candidates, key=lambda c: _mac_cost(order, c)))
    else:
        left, right = kronecker_split(order)
    block_r = max(32, triton.next_power_of_2(left))
    block_c = max(32, triton.next_power_of_2(right))
    if device.type == "cuda":
        block_m = _tokens_per_program(block_r, block_c)
        config = dict(BLOCK_M=block_m, BLOCK_R=block_r, BLOCK_C=block_c, BLOCK_J=32,
                      num_warps=4 if block_m == 1 else 8, num_stages=3)
    else:
        config = dict(BLOCK_M=max(1, min(triton.next_power_of_2(rows), 512 // block_r)), BLOCK_R=block_r,
                      BLOCK_C=block_c, BLOCK_J=block_c)
    return left, right, config


def hadamard_quant(y: torch.Tensor, hadamard: torch.Tensor, out_inv_scale: torch.Tensor) -> torch.Tensor:
    """Triton ``hadamard_quant_ref``: y float16 (M, D) or (B, L, D), last dim
    contiguous, D <= 8192 a supported order; hadamard = ``hadamard_matrix(D)`` (int8, or a float dtype
    holding it), on y's device; float64 scalar out_inv_scale. Returns int8 of y's shape.

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
    rows = rows_view("y", y)
    out = torch.empty(rows.shape, dtype=torch.int8, device=device)
    m = rows.shape[0]
    if m > 0:
        left, right, config = _hadamard_tiling(m, order, device)
        _hadamard_quant_kernel[(triton.cdiv(m, config["BLOCK_M"]),)](
            rows, hadamard, hadamard_output_scale(out_inv_scale, order), out,
            m, left, right, rows.stride(0), hadamard.stride(0), out.stride(0), **config, **EXACT_FP_LAUNCH,
        )
    return out.reshape(y.shape)
