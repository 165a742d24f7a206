"""Triton RMSNorm + int8 quantisation in float64, matching ``rms_norm_quant_ref`` (see its docstring
for the one place, the sum of squares, where summation order could move a code)."""

import functools

import torch
import triton
import triton.language as tl

from mamba_qpass.kernels.checks import check_f64_scalar, check_shape, check_tensor, check_unit_last_stride
from mamba_qpass.kernels.quant_math import EXACT_FP_LAUNCH, tl_round_half_even_clamp_int8

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_HIDDEN = 8192


@triton.jit
def _rms_norm_quant_kernel(
    x_ptr, w_ptr, params_ptr, out_inv_scale_ptr, out_ptr,
    M, H, stride_xm, stride_om,
    BLOCK_M: tl.constexpr, BLOCK_H: tl.constexpr,
):
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_h = tl.arange(0, BLOCK_H)
    mask_m = offs_m < M
    mask_h = offs_h < H
    mask = mask_m[:, None] & mask_h[None, :]
    x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_h[None, :], mask=mask, other=0.0).to(tl.float64)
    var = tl.sum(x * x, axis=1) * tl.load(params_ptr + 1)  # * (1 / H)
    var_eps = tl.where(mask_m, var + tl.load(params_ptr), 1.0)  # padding rows: no 1/0 when eps == 0
    # float64 sqrt and division are IEEE (correctly rounded); only float32 ones are approximate on GPU.
    r = 1.0 / tl.sqrt(var_eps)
    w = tl.load(w_ptr + offs_h, mask=mask_h, other=0.0).to(tl.float64)
    y = (x * r[:, None]) * w[None, :]
    y = y * tl.load(out_inv_scale_ptr)
    tl.store(out_ptr + offs_m[:, None] * stride_om + offs_h[None, :], tl_round_half_even_clamp_int8(y), mask=mask)


def _rows_per_program(rows: int, block_h: int, device: torch.device) -> int:
    """A whole row per program on GPU for large H; on CPU (the interpreter) as many rows as fit in
    64Ki elements, because there each program costs the same whatever its size."""
    budget = 4096 if device.type == "cuda" else 65536
    return max(1, min(triton.next_power_of_2(rows), budget // block_h))


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
        params = _norm_params(eps, hidden, device)
        block_h = triton.next_power_of_2(hidden)
        block_m = _rows_per_program(m, block_h, device)
        extra = {"num_warps": 8 if block_h >= 4096 else 4} if device.type == "cuda" else {}
        _rms_norm_quant_kernel[(triton.cdiv(m, block_m),)](
            rows, weight, params, out_inv_scale, out, m, hidden, rows.stride(0), out.stride(0),
            BLOCK_M=block_m, BLOCK_H=block_h, **extra, **EXACT_FP_LAUNCH,
        )
    return out.reshape(x.shape)
