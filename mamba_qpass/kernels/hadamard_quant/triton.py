"""Triton kernel for ``hadamard_quant_ref``, bit-exact against it, in float64 additions.

Each row y of length D is read as the (R, C) matrix Y, with H_D = H_R ⊗ H_C (``kronecker_split``; C a
power of two, H_C Sylvester's), so H_D @ y = H_R @ Y @ H_C.T. A program owns ``ROWS`` rows of the result
for ``BLOCK_T`` tokens: it first mixes rows, W = H_R[rows] @ Y, by adding or subtracting one row of Y
per step of a loop over R, then transforms each row of W by H_C with log2(C) butterfly stages in
registers (Pease's constant-geometry form: stage s adds and subtracts neighbouring pairs and writes the
sums to the first half, the differences to the second; after log2(C) stages the row is H_C @ w in
natural order). That is R + log2(C) additions per element instead of a D-long dot product.

Every partial sum is a ±1 sum of at most D float16 values, which the reference's module docstring shows
is exact in float64 in any order, so the only rounding is the epilogue's multiply by c, as in the reference.
A row of W gains H_R[row, k] * y, a product by ±1 (or 0 for a padding row): exact, so written as one
explicit fused multiply-add (the launch turns contraction off for the epilogue, which would otherwise
make it a multiply and an add), where int64 sums need a negate, a select and a two-word add. On an H200
this took 67 us at 2048 x 5120 with the multiply and add separate (ncu: 51 float64 instructions an
element, the float64 pipe 55 % busy; int64 sums: 103 us; the int8 digit-plane tensor-core kernel it
replaced: 279 us); the float64 units are what it needs, so GPUs with few of them would prefer the int64
form.
"""

import functools

import torch
import triton
import triton.language as tl

from mamba_qpass.kernels.checks import check_f64_scalar, check_shape, check_tensor, check_unit_last_stride, rows_view
from mamba_qpass.kernels.dependent_launch import dependent_launch, wait_for_earlier_kernels
from mamba_qpass.kernels.hadamard_quant.kronecker import kronecker_split
from mamba_qpass.kernels.quant_math import EXACT_FP_LAUNCH, tl_round_half_even_clamp_int8
from mamba_qpass.numerics import MAX_EXACT_HADAMARD_ORDER, hadamard_norm


@triton.jit
def _hadamard_quant_kernel(
    y_ptr, h_ptr, scale_ptr, norm_ptr, out_ptr,
    M, stride_ym, stride_h, stride_om,
    R: tl.constexpr, C: tl.constexpr, LOG2_C: tl.constexpr, BLOCK_T: tl.constexpr, ROWS: tl.constexpr,
    USE_GDC: tl.constexpr = False,
):
    tokens = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    rows = tl.program_id(1) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, C)
    mask_t = tokens < M
    mask_r = rows < R
    y_ptrs = y_ptr + tokens[:, None] * stride_ym + cols[None, :]
    left_ptrs = h_ptr + rows * (C * stride_h)  # column k of H_R is H[rows * C, k * C]
    wait_for_earlier_kernels(USE_GDC)

    # W = H_R[rows] @ Y: one row of Y added into every row of W with the sign H_R[row, k]. Unrolled (R is
    # at most 32 for D <= 8192), so the R independent loads are in flight together rather than one by one.
    w = tl.zeros((BLOCK_T, ROWS, C), dtype=tl.float64)
    for k in tl.static_range(R):
        y = tl.load(y_ptrs + k * C, mask=mask_t[:, None], other=0.0).to(tl.float64)
        sign = tl.load(left_ptrs + k * C, mask=mask_r, other=0).to(tl.float64)
        w = tl.fma(sign[None, :, None], y[:, None, :], w)

    # Each row of W times H_C.T, in LOG2_C butterfly stages.
    x = tl.reshape(w, (BLOCK_T * ROWS, C))
    for _ in tl.static_range(LOG2_C):
        even, odd = tl.split(tl.reshape(x, (BLOCK_T * ROWS, C // 2, 2)))
        x = tl.reshape(tl.permute(tl.join(even + odd, even - odd), (0, 2, 1)), (BLOCK_T * ROWS, C))
    c = tl.load(scale_ptr) * tl.load(norm_ptr)  # numerics.hadamard_output_scale, the same float64 product
    v = tl.reshape(x, (BLOCK_T, ROWS, C)) * c
    out_ptrs = out_ptr + tokens[:, None, None] * stride_om + rows[None, :, None] * C + cols[None, None, :]
    tl.store(out_ptrs, tl_round_half_even_clamp_int8(v), mask=mask_t[:, None, None] & mask_r[None, :, None])


MAX_RIGHT = 256  # longest butterfly row: 256 float64s over 2 warps, BLOCK_T * ROWS of them per program
DECODE_ROWS = 256  # below this many tokens (decode steps, short prompts) the GPU tiling spreads each token wider


def _hadamard_tiling(rows: int, order: int, device: torch.device) -> tuple[int, int, dict]:
    """(R, C, launch options). C is the power-of-two part of D up to MAX_RIGHT. GPU, timed on an H200 in
    CUDA graphs over 24 tilings (ROWS 1 to 8, 1 or 2 tokens, 1 to 4 warps) at D = 5120 and 1536:
    - from DECODE_ROWS tokens up, ROWS is the largest power of two dividing R (at most 8), 1 token and 1
      warp a program (2048 x 5120: 67 us; 2048 x 1536: 14 us, against 69 and 20 us with 2 warps);
    - below it (decode steps), one row of W a program, so R programs share each token, with 4 warps
      (1 x 5120: 2.5 us, against 8.4 us with 4 rows and 2 warps).
    CPU (the interpreter): up to 64 tokens a program, since there each op costs the same whatever its
    size."""
    left, right = kronecker_split(order, min(MAX_RIGHT, order & -order))
    if device.type != "cuda":
        return left, right, dict(ROWS=min(left & -left, 8), BLOCK_T=min(64, triton.next_power_of_2(rows)))
    if rows < DECODE_ROWS:
        return left, right, dict(ROWS=1, BLOCK_T=1, num_warps=4)
    return left, right, dict(ROWS=min(left & -left, 8), BLOCK_T=1, num_warps=1)


@functools.lru_cache(maxsize=16)
def _norm_tensor(order: int, device: torch.device) -> torch.Tensor:
    """``hadamard_norm(order)`` as a float64 tensor on ``device``, kept: a Python float argument would
    reach the kernel as float32, and computing c on the host side per call costs a launch per layer."""
    return torch.tensor(hadamard_norm(order), dtype=torch.float64, device=device)


def hadamard_quant(
    y: torch.Tensor, hadamard: torch.Tensor, out_inv_scale: torch.Tensor, tiling: dict | None = None
) -> torch.Tensor:
    """Triton ``hadamard_quant_ref``: y float16 (M, D) or (B, L, D), last dim
    contiguous, D <= 8192 a supported order; hadamard = ``hadamard_matrix(D)`` (int8, or a float dtype
    holding it), on y's device; float64 scalar out_inv_scale. Returns int8 of y's shape.

    The kernel reads only the Kronecker factor H[::C, ::C] of ``hadamard``, so it must be
    ``hadamard_matrix(D)`` itself, not another Hadamard matrix of that order. ``tiling`` (ROWS and BLOCK_T,
    powers of two, and launch options) replaces ``_hadamard_tiling``'s; ``benchmarks/sweep_tilings.py``
    times the candidates."""
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
        config = tiling or config
        grid = (triton.cdiv(m, config["BLOCK_T"]), triton.cdiv(left, config["ROWS"]))
        _hadamard_quant_kernel[grid](
            rows, hadamard, out_inv_scale, _norm_tensor(order, device), out,
            m, rows.stride(0), hadamard.stride(0), out.stride(0),
            R=left, C=right, LOG2_C=right.bit_length() - 1, **config, **EXACT_FP_LAUNCH, **dependent_launch(device, m),
        )
    return out.reshape(y.shape)
