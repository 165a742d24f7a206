"""Triton RMSNorm + int8 quantisation in float64, matching ``rms_norm_quant_ref`` (see its docstring
for the one place, the sum of squares, where summation order could move a code)."""

import functools

import torch
import triton
import triton.language as tl

from mamba_qpass.kernels.checks import check_f64_scalar, check_shape, check_tensor, check_unit_last_stride
from mamba_qpass.kernels.dependent_launch import dependent_launch, wait_for_earlier_kernels
from mamba_qpass.kernels.quant_math import EXACT_FP_LAUNCH, tl_round_half_even_clamp_int8

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_HIDDEN = 8192


@triton.jit
def _load_part(x_ptr, offs_m, mask_m, stride_xm, H, START: tl.constexpr, PART: tl.constexpr):
    """Columns [START, START + PART) of the rows, as float64 (zeros past H)."""
    offs_h = START + tl.arange(0, PART)
    mask = mask_m[:, None] & (offs_h < H)[None, :]
    return tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_h[None, :], mask=mask, other=0.0).to(tl.float64)


@triton.jit
def _store_part_codes(x, r, w_ptr, inv, out_ptr, offs_m, mask_m, stride_om, H, START: tl.constexpr,
                      PART: tl.constexpr):
    offs_h = START + tl.arange(0, PART)
    mask_h = offs_h < H
    w = tl.load(w_ptr + offs_h, mask=mask_h, other=0.0).to(tl.float64)
    y = ((x * r[:, None]) * w[None, :]) * inv
    out_ptrs = out_ptr + offs_m[:, None] * stride_om + offs_h[None, :]
    tl.store(out_ptrs, tl_round_half_even_clamp_int8(y), mask=mask_m[:, None] & mask_h[None, :])


@triton.jit
def _rms_norm_quant_kernel(
    x_ptr, w_ptr, params_ptr, out_inv_scale_ptr, out_ptr,
    M, H, stride_xm, stride_om,
    BLOCK_M: tl.constexpr, PART0: tl.constexpr, PART1: tl.constexpr, PART2: tl.constexpr,
    USE_GDC: tl.constexpr = False,
):
    """A row is read as up to three column blocks of power-of-two widths (``_tiling``): 2560 as 2048 + 512
    rather than one block of 4096, whose padding would be converted and multiplied too."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = offs_m < M
    wait_for_earlier_kernels(USE_GDC)
    x0 = _load_part(x_ptr, offs_m, mask_m, stride_xm, H, 0, PART0)
    sum_sq = tl.sum(x0 * x0, axis=1)
    if PART1 > 0:
        x1 = _load_part(x_ptr, offs_m, mask_m, stride_xm, H, PART0, PART1)
        sum_sq += tl.sum(x1 * x1, axis=1)
    if PART2 > 0:
        x2 = _load_part(x_ptr, offs_m, mask_m, stride_xm, H, PART0 + PART1, PART2)
        sum_sq += tl.sum(x2 * x2, axis=1)
    var = sum_sq * tl.load(params_ptr + 1)  # * (1 / H)
    var_eps = tl.where(mask_m, var + tl.load(params_ptr), 1.0)  # padding rows: no 1/0 when eps == 0
    # float64 sqrt and division are IEEE (correctly rounded); only float32 ones are approximate on GPU.
    r = 1.0 / tl.sqrt(var_eps)
    inv = tl.load(out_inv_scale_ptr)
    _store_part_codes(x0, r, w_ptr, inv, out_ptr, offs_m, mask_m, stride_om, H, 0, PART0)
    if PART1 > 0:
        _store_part_codes(x1, r, w_ptr, inv, out_ptr, offs_m, mask_m, stride_om, H, PART0, PART1)
    if PART2 > 0:
        _store_part_codes(x2, r, w_ptr, inv, out_ptr, offs_m, mask_m, stride_om, H, PART0 + PART1, PART2)


def _row_parts(hidden: int) -> tuple[int, int, int]:
    """Power-of-two widths covering ``hidden``: its two highest set bits, then the rest padded to a power
    of two (0 where nothing is left)."""
    parts = []
    rest = hidden
    for _ in range(2):
        part = 1 << (rest.bit_length() - 1) if rest else 0
        parts.append(part)
        rest -= part
    parts.append(triton.next_power_of_2(rest) if rest else 0)
    return tuple(parts)


DECODE_ROWS = 256  # fewer rows than this (decode steps) are read as one padded block


def _tiling(rows: int, hidden: int, device: torch.device) -> dict:
    """BLOCK_M, the row parts and launch options. GPU, timed on an H200 (eighth session, CUDA graphs, each
    exact): a width that is not a power of two in parts, one row a program from 1024 columns, 4 warps:
    (2048, 2560) 10.2 us against 13.2 for one padded block of 4096 (32768 rows: 141.4 against 196.4),
    (2048, 1536) 6.7 against 6.8; else as many rows as fill 4096 elements (768 columns: 4 rows, 4.0 us;
    2048: 2 rows, 7.3). A decode step's few rows are read as one padded block, fewer dependent steps for
    its few programs (16 x 2560: 2.6 us with the earlier kernel, which read every row so, against 3.0 to
    3.6 in parts; the padded block is not yet timed in this kernel). So the order of the sum of squares
    depends on the row count, which the reference allows (its docstring). CPU (the interpreter): parts,
    and as many rows as fit in 64Ki elements, because there each program costs the same whatever its size."""
    padded = triton.next_power_of_2(hidden)
    if device.type == "cuda" and rows < DECODE_ROWS:
        return dict(PART0=padded, PART1=0, PART2=0, BLOCK_M=1, num_warps=8 if padded >= 4096 else 4)
    parts = _row_parts(hidden)
    tiling = dict(PART0=parts[0], PART1=parts[1], PART2=parts[2])
    if device.type != "cuda":
        return tiling | dict(BLOCK_M=max(1, min(triton.next_power_of_2(rows), 65536 // sum(parts))))
    block_m = 1 if padded != hidden and hidden >= 1024 else max(1, min(triton.next_power_of_2(rows), 4096 // padded))
    return tiling | dict(BLOCK_M=block_m, num_warps=4)


@functools.lru_cache(maxsize=64)
def _norm_params(eps: float, hidden: int, device: torch.device) -> torch.Tensor:
    """float64 [eps, 1 / H] on ``device``: a Python float argument would reach the kernel as float32. Kept
    per (eps, H, device), since building it per call copies from pageable host memory, which waits for
    the GPU to drain (once per layer in a prefill) and cannot be captured in a CUDA graph."""
    return torch.tensor([eps, 1.0 / hidden], dtype=torch.float64, device=device)


def rms_norm_quant(
    x: torch.Tensor, weight: torch.Tensor, eps: float, out_inv_scale: torch.Tensor
) -> torch.Tensor:
    """Triton ``rms_norm_quant_ref``: x float32/float16/bfloat16 (M, H) or (B, L, H), last dim contiguous,
    H <= 8192; weight float (H,); float64 scalar out_inv_scale. Returns int8 of x's shape."""
    check_tensor("x", x, FLOAT_DTYPES, (2, 3))
    device = x.device
    check_unit_last_stride("x", x)
    hidden = x.shape[-1]
    if not 1 <= hidden <= MAX_HIDDEN:
        raise ValueError(f"rms_norm_quant supports 1 <= H <= {MAX_HIDDEN}, got H={hidden}")
    check_tensor("weight", weight, FLOAT_DTYPES, (1,), device)
    check_shape("weight", weight, (hidden,))
    check_unit_last_stride("weight", weight)
    check_f64_scalar("out_inv_scale", out_inv_scale, device)
    if not eps >= 0.0:
        raise ValueError(f"eps must be >= 0, got {eps}")

    rows = x.reshape(-1, hidden)  # a view whenever the leading dims can be merged
    out = torch.empty(rows.shape, dtype=torch.int8, device=device)
    m = rows.shape[0]
    if m > 0:
        tiling = _tiling(m, hidden, device)
        _rms_norm_quant_kernel[(triton.cdiv(m, tiling["BLOCK_M"]),)](
            rows, weight, _norm_params(eps, hidden, device), out_inv_scale, out, m, hidden, rows.stride(0),
            out.stride(0), **tiling, **EXACT_FP_LAUNCH, **dependent_launch(device, m),
        )
    return out.reshape(x.shape)
