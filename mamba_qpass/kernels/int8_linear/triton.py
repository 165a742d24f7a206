"""Triton int8 GEMM (int32 accumulation on tensor cores) with the float64 epilogue of ``int8_linear_ref``."""

import torch
import triton
import triton.language as tl

from mamba_qpass.kernels.checks import (
    check_f64_vector, check_int32_extent, check_shape, check_tensor, check_unit_last_stride,
)
from mamba_qpass.kernels.dependent_launch import wait_for_earlier_kernels
from mamba_qpass.kernels.int8_linear.tiles import TiledKernel, split_k_workspace
from mamba_qpass.kernels.quant_math import tl_int32_to_float64, tl_round_half_even_clamp_int8

# float32 only: on the GPU a float64 -> float16 store rounds twice (through float32), which a direct
# conversion in the reference would not, so float16 output could not be bit-exact.
FLOAT_OUT_DTYPES = (torch.float32,)
RESIDUAL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@triton.jit
def _k_step(a_ptrs, w_ptrs, offs_k, k_left, EVEN_K: tl.constexpr, W_ROWS: tl.constexpr):
    """One K step's (a, weight) tiles, the weight's as (N, K) rows with W_ROWS, else as (K, N); without
    EVEN_K, masked to the ``k_left`` columns left (zeros past)."""
    if EVEN_K:
        return tl.load(a_ptrs), tl.load(w_ptrs)
    mask_k = offs_k < k_left
    return (tl.load(a_ptrs, mask=mask_k[None, :], other=0),
            tl.load(w_ptrs, mask=mask_k[None, :] if W_ROWS else mask_k[:, None], other=0))


@triton.jit
def _k_step_accumulate(acc, a, w, BLOCK_M: tl.constexpr, SWAP_AB: tl.constexpr):
    """``acc`` plus one K step's products, in ``int8_tile_accumulate``'s layout for the tile kind."""
    # one return, after constexpr branches: Triton compiles the code after a branch that returns
    if BLOCK_M == 1:
        acc += w.to(tl.int32) * a.to(tl.int32)
    elif SWAP_AB:
        acc = tl.dot(w, tl.trans(a), acc, out_dtype=tl.int32)
    else:
        acc = tl.dot(a, w, acc, out_dtype=tl.int32)
    return acc


@triton.jit
def int8_tile_accumulate(
    a_ptr, w_ptr, offs_m, offs_n, M, N, k_lo, k_hi, stride_am, stride_wn,
    EVEN_K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, K_STEPS: tl.constexpr,
    SWAP_AB: tl.constexpr,
):
    """The exact int32 accumulator of a (BLOCK_M, BLOCK_N) tile of a @ weight.T over K in [k_lo, k_hi)
    (k_lo a multiple of BLOCK_K; with EVEN_K, so is k_hi).

    Tiles of 16 rows or more run on the tensor cores (``tl.dot``). A one-row tile (a GEMV: one token at
    decode) multiplies and adds on the CUDA cores, the weight tile loaded as (BLOCK_N, BLOCK_K) rows of
    contiguous K with no shared-memory staging, its products summed elementwise over the K steps and
    across K once at the end (a reduction across threads at every step would cost a shared-memory round
    trip each time). With K_STEPS (the number of K steps, when known at compile time: a one-row tile
    without split K) its loop is unrolled, so the program issues all of its weight loads before the first
    product: a GEMV is bound by the loads in flight, and a loop waits on each step's loads (H200, 2.8b
    in_proj at one row from cold L2: 11.1 us unrolled against 14.0 for the best looped tile). With SWAP_AB
    a tile of a few rows computes (weight @ a.T).T: the weight tile is the product's left operand, so
    BLOCK_N of its rows fill the MMA's 64-row side (Hopper's wgmma) and the tokens its narrow side (H200,
    2.8b in_proj at 16 rows from cold L2: 11.6 us against 12.3 for the best 16-row tile). Integer sums
    are exact in any order, so every path gives the same accumulator."""
    offs_k = tl.arange(0, BLOCK_K)
    # Rows and columns past the edge read row/column 0 instead (wrapped), so the loads need no masks;
    # their results are never stored.
    if BLOCK_M == 1:
        # a's row read in the weight tile's shape (every column the same address), so that its values
        # arrive where the products need them without a layout change through shared memory
        a_ptrs = a_ptr + (offs_n * 0 + tl.min(offs_m) % M)[:, None] * stride_am + (k_lo + offs_k)[None, :]
        acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.int32)  # products, summed over K at the end
    else:
        a_ptrs = a_ptr + (offs_m % M)[:, None] * stride_am + (k_lo + offs_k)[None, :]
        if SWAP_AB:
            acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.int32)  # transposed
        else:
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    if BLOCK_M == 1 or SWAP_AB:
        w_ptrs = w_ptr + (offs_n % N)[:, None] * stride_wn + (k_lo + offs_k)[None, :]  # (BLOCK_N, BLOCK_K) of weight
    else:
        w_ptrs = w_ptr + (offs_n % N)[None, :] * stride_wn + (k_lo + offs_k)[:, None]  # (BLOCK_K, BLOCK_N) of weight.T
    if K_STEPS > 0:
        for step in tl.static_range(K_STEPS):
            a, w = _k_step(a_ptrs + step * BLOCK_K, w_ptrs + step * BLOCK_K, offs_k, k_hi - k_lo - step * BLOCK_K,
                           EVEN_K, BLOCK_M == 1 or SWAP_AB)
            acc = _k_step_accumulate(acc, a, w, BLOCK_M, SWAP_AB)
    else:
        for k_start in range(k_lo, k_hi, BLOCK_K):
            a, w = _k_step(a_ptrs, w_ptrs, offs_k, k_hi - k_start, EVEN_K, BLOCK_M == 1 or SWAP_AB)
            acc = _k_step_accumulate(acc, a, w, BLOCK_M, SWAP_AB)
            a_ptrs += BLOCK_K
            w_ptrs += BLOCK_K
    if BLOCK_M == 1:
        acc = tl.sum(acc, axis=1)[None, :]
    elif SWAP_AB:
        acc = tl.trans(acc)
    return acc


@triton.jit
def int8_tile_values(acc, offs_n, mask_n, dequant_scale_ptr, bias_ptr, HAS_BIAS: tl.constexpr):
    """``int8_linear_epilogue``'s v: float64, one rounded operation at a time (launched without FMA
    contraction)."""
    v = tl_int32_to_float64(acc) * tl.load(dequant_scale_ptr + offs_n, mask=mask_n, other=0.0)[None, :]
    if HAS_BIAS:
        v = v + tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0)[None, :]
    return v


@triton.jit
def int8_tile_codes(v, offs_n, mask_n, out_inv_scale_ptr):
    """``int8_linear_epilogue``'s int8 codes of ``int8_tile_values``' v: times the column's output scale,
    rounded half to even and clamped."""
    return tl_round_half_even_clamp_int8(v * tl.load(out_inv_scale_ptr + offs_n, mask=mask_n, other=0.0)[None, :])


@triton.jit
def grouped_tile(pid, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """The (row tile, column tile) of program ``pid`` in grouped ordering: GROUP_M row tiles share each
    column tile's weights while they are in L2."""
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * tiles_n
    first_m = (pid // per_group) * GROUP_M
    group_rows = min(tiles_m - first_m, GROUP_M)
    return first_m + (pid % per_group) % group_rows, (pid % per_group) // group_rows


@triton.jit
def int8_tile_accumulate_split(
    a_ptr, w_ptr, ws_ptr, count_ptr, tile, offs_m, offs_n, mask, M, N, K, stride_am, stride_wn,
    EVEN_K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr,
    K_STEPS: tl.constexpr, SWAP_AB: tl.constexpr,
):
    """``(acc, last)``: the tile's int32 accumulator, and whether this program holds all of it and runs the
    epilogue. Without a split, every program does. With SPLIT_K (decode: few output tiles, long K), program
    (tile, s) of the grid's second axis sums its share of the K steps and adds it into the int32 workspace
    with atomics, exact in any order; the tile's last program to arrive (the counter says which) takes the
    total, leaving workspace and counter at zero for the next call."""
    if SPLIT_K == 1:
        acc = int8_tile_accumulate(a_ptr, w_ptr, offs_m, offs_n, M, N, 0, K, stride_am, stride_wn, EVEN_K, BLOCK_M, BLOCK_N, BLOCK_K,
                                   K_STEPS, SWAP_AB)
        last = True
    else:
        per_split = tl.cdiv(tl.cdiv(K, BLOCK_K), SPLIT_K) * BLOCK_K
        k_lo = tl.program_id(1) * per_split
        acc = int8_tile_accumulate(a_ptr, w_ptr, offs_m, offs_n, M, N, k_lo, min(K, k_lo + per_split),
                                   stride_am, stride_wn, EVEN_K, BLOCK_M, BLOCK_N, BLOCK_K, 0, SWAP_AB)
        ws_ptrs = ws_ptr + offs_m[:, None] * N + offs_n[None, :]
        # acq_rel adds (Triton's default): relaxed ones, ordered by the counter, timed no faster in a B=16
        # decode step on an H200 (RESULTS, twentieth session)
        tl.atomic_add(ws_ptrs, acc, mask=mask)
        # Every thread's adds are issued before the counter moves (the counter's acq_rel atomic then
        # releases them all), so the program that arrives last sees every add.
        tl.debug_barrier()
        last = tl.atomic_add(count_ptr + tile, 1) == SPLIT_K - 1
        if last:
            acc = tl.atomic_xchg(ws_ptrs, tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32), mask=mask)
            tl.atomic_xchg(count_ptr + tile, 0)
    return acc, last


@triton.jit
def _int8_linear_kernel(
    a_ptr, w_ptr, dequant_scale_ptr, bias_ptr, out_inv_scale_ptr, residual_ptr, out_ptr, ws_ptr, count_ptr,
    M, N, K, stride_am, stride_wn, stride_rm, stride_om, M_BUCKET,
    HAS_BIAS: tl.constexpr, QUANTIZE_OUT: tl.constexpr, HAS_RESIDUAL: tl.constexpr, EVEN_K: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    SPLIT_K: tl.constexpr, K_STEPS: tl.constexpr, SWAP_AB: tl.constexpr, USE_GDC: tl.constexpr = False,
):
    wait_for_earlier_kernels(USE_GDC)
    pid = tl.program_id(0)
    pid_m, pid_n = grouped_tile(pid, M, N, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    mask = (offs_m < M)[:, None] & mask_n[None, :]
    acc, last = int8_tile_accumulate_split(a_ptr, w_ptr, ws_ptr, count_ptr, pid, offs_m, offs_n, mask, M, N, K,
                                           stride_am, stride_wn, EVEN_K, BLOCK_M, BLOCK_N, BLOCK_K, SPLIT_K, K_STEPS, SWAP_AB)
    if last:
        v = int8_tile_values(acc, offs_n, mask_n, dequant_scale_ptr, bias_ptr, HAS_BIAS)
        out_ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :]
        if QUANTIZE_OUT:
            tl.store(out_ptrs, int8_tile_codes(v, offs_n, mask_n, out_inv_scale_ptr), mask=mask)
        elif HAS_RESIDUAL:  # rounded to float32 first, then one float32 addition, as the reference
            residual = tl.load(residual_ptr + offs_m[:, None] * stride_rm + offs_n[None, :], mask=mask, other=0.0)
            tl.store(out_ptrs, residual.to(tl.float32) + v.to(tl.float32), mask=mask)
        else:
            tl.store(out_ptrs, v.to(out_ptr.dtype.element_ty), mask=mask)


def check_int8_linear_inputs(a: torch.Tensor, weight: torch.Tensor, dequant_scale: torch.Tensor, dims) -> tuple[int, int]:
    """int8 a (``dims`` dims, contiguous last) and weight (N, K), float64 (N,) dequant_scale: (N, K)."""
    check_tensor("a", a, (torch.int8,), dims)
    check_unit_last_stride("a", a)
    check_tensor("weight", weight, (torch.int8,), (2,), a.device)
    check_unit_last_stride("weight", weight)
    n, k = weight.shape
    if a.shape[-1] != k:
        raise ValueError(f"a has K={a.shape[-1]} but weight has shape (N, K)={tuple(weight.shape)}")
    check_f64_vector("dequant_scale", dequant_scale, n, a.device)
    return n, k


# Keyed on M's power-of-two bucket, not M itself: a new sequence length must not trigger a new search.
_int8_linear = TiledKernel(_int8_linear_kernel, key=["M_BUCKET", "N", "K", "HAS_BIAS", "QUANTIZE_OUT", "HAS_RESIDUAL"])


def int8_linear(
    a: torch.Tensor,
    weight: torch.Tensor,
    dequant_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    out_inv_scale: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.float32,
    residual: torch.Tensor | None = None,
    config: triton.Config | None = None,
) -> torch.Tensor:
    """Triton ``int8_linear_ref``: a int8 (..., K) (2D or 3D, last dim contiguous, rows may be strided),
    weight int8 (N, K), float64 (N,) dequant_scale / bias / out_inv_scale, residual float (..., N)
    added to float32 output. Returns int8 (..., N) codes when ``out_inv_scale`` is given, else
    (..., N) in ``out_dtype`` (float32); bit-identical to the reference in every case.

    On CUDA the tile is autotuned per (M's power-of-two bucket, N, K) unless ``config`` (one of GPU_CONFIGS)
    fixes it (``tiles.py``), as the tests do to show every candidate exact; the interpreter uses one fixed tile."""
    n, k = check_int8_linear_inputs(a, weight, dequant_scale, (2, 3))
    device = a.device
    if bias is not None:
        check_f64_vector("bias", bias, n, device)
    if out_inv_scale is not None:
        check_f64_vector("out_inv_scale", out_inv_scale, n, device)
    elif out_dtype not in FLOAT_OUT_DTYPES:
        raise ValueError(f"out_dtype must be one of {FLOAT_OUT_DTYPES}, got {out_dtype}")
    if residual is not None:
        if out_inv_scale is not None:
            raise ValueError("a residual is added only to float32 output, not to int8 codes (out_inv_scale given)")
        check_tensor("residual", residual, RESIDUAL_DTYPES, (a.dim(),), device)
        check_shape("residual", residual, (*a.shape[:-1], n))
        check_unit_last_stride("residual", residual)

    rows = a.reshape(-1, k)  # a view whenever the leading dims can be merged (e.g. a column slice)
    residual_rows = residual.reshape(-1, n) if residual is not None else dequant_scale  # unread without HAS_RESIDUAL
    m = rows.shape[0]
    check_int32_extent("the output", (m, n), (n, 1))
    out = torch.empty(m, n, dtype=torch.int8 if out_inv_scale is not None else out_dtype, device=device)
    if m > 0:
        workspace = split_k_workspace(device, m, n, config)
        args = (
            rows, weight, dequant_scale,
            bias if bias is not None else dequant_scale,
            out_inv_scale if out_inv_scale is not None else dequant_scale,
            residual_rows,
            out,
            *workspace,
            m, n, k, rows.stride(0), weight.stride(0), residual_rows.stride(0), out.stride(0), triton.next_power_of_2(m),
        )
        flags = dict(HAS_BIAS=bias is not None, QUANTIZE_OUT=out_inv_scale is not None, HAS_RESIDUAL=residual is not None)
        _int8_linear.launch(m, n, k, config, device, *args, **flags)
    return out.reshape(*a.shape[:-1], n)
