"""Triton depthwise causal conv1d on int8 codes, matching ``int8_causal_conv1d_ref`` code for code.

Codes can differ from the reference only where exp (SiLU) rounds differently in the last float64 bit
and the value lies within ~1e-15 (relative) of a rounding boundary; without SiLU they are identical.
"""

import torch
import triton
import triton.language as tl

from mamba_qpass.kernels.checks import (
    check_f64_scalar,
    check_f64_vector,
    check_tensor,
    check_unit_last_stride,
)
from mamba_qpass.kernels.quant_math import EXACT_FP_LAUNCH, tl_round_half_even_clamp_int8

MAX_WIDTH = 4


@triton.jit
def _int8_causal_conv1d_kernel(
    x_ptr, w_ptr, dequant_scale_ptr, bias_ptr, out_inv_scale_ptr, out_ptr,
    L, D, stride_xb, stride_xl, stride_wd, stride_ob, stride_ol,
    WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr,
    BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr,
):
    batch = tl.program_id(0)
    offs_t = tl.program_id(1) * BLOCK_L + tl.arange(0, BLOCK_L)
    offs_d = tl.program_id(2) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    x_base = x_ptr + batch * stride_xb + offs_d[None, :]

    acc = tl.zeros((BLOCK_L, BLOCK_D), dtype=tl.int32)
    for k in tl.static_range(WIDTH):
        src_t = offs_t - (WIDTH - 1) + k  # the tap k steps into the window ending at t
        mask = ((src_t >= 0) & (src_t < L))[:, None] & mask_d[None, :]
        x = tl.load(x_base + src_t[:, None] * stride_xl, mask=mask, other=0).to(tl.int32)
        w = tl.load(w_ptr + offs_d * stride_wd + k, mask=mask_d, other=0).to(tl.int32)
        acc += x * w[None, :]

    v = acc.to(tl.float64) * tl.load(dequant_scale_ptr + offs_d, mask=mask_d, other=0.0)[None, :]
    if HAS_BIAS:
        v = v + tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0)[None, :]
    if SILU:
        v = v / (1.0 + tl.exp(-v))
    v = v * tl.load(out_inv_scale_ptr)
    out_ptrs = out_ptr + batch * stride_ob + offs_t[:, None] * stride_ol + offs_d[None, :]
    tl.store(out_ptrs, tl_round_half_even_clamp_int8(v), mask=(offs_t < L)[:, None] & mask_d[None, :])


def _conv_blocks(seq_len: int, channels: int, device: torch.device) -> tuple[int, int]:
    """(BLOCK_L, BLOCK_D): on CPU (the interpreter) as few programs as possible; on GPU, 32 time steps
    by 128 contiguous channels per program (its float64 epilogue holds 32 values per thread)."""
    if device.type != "cuda":
        return min(64, triton.next_power_of_2(seq_len)), min(256, triton.next_power_of_2(channels))
    return 32, min(128, triton.next_power_of_2(channels))


def int8_causal_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    dequant_scale: torch.Tensor,
    bias: torch.Tensor | None,
    out_inv_scale: torch.Tensor,
    silu: bool = True,
) -> torch.Tensor:
    """Triton ``int8_causal_conv1d_ref``: x int8 (B, L, D) with a contiguous last dim (time and batch
    strides are free), weight int8 (D, W) with W <= 4, float64 (D,) dequant_scale and bias, float64
    scalar out_inv_scale. Returns int8 (B, L, D), contiguous."""
    check_tensor("x", x, (torch.int8,), (3,))
    device = x.device
    check_unit_last_stride("x", x)
    check_tensor("weight", weight, (torch.int8,), (2,), device)
    check_unit_last_stride("weight", weight)
    batch, seq_len, channels = x.shape
    if weight.shape[0] != channels or not 1 <= weight.shape[1] <= MAX_WIDTH:
        raise ValueError(
            f"weight must have shape (D={channels}, W) with 1 <= W <= {MAX_WIDTH}, got {tuple(weight.shape)}"
        )
    check_f64_vector("dequant_scale", dequant_scale, channels, device)
    if bias is not None:
        check_f64_vector("bias", bias, channels, device)
    check_f64_scalar("out_inv_scale", out_inv_scale, device)

    out = torch.empty(batch, seq_len, channels, dtype=torch.int8, device=device)
    if out.numel() == 0:
        return out
    block_l, block_d = _conv_blocks(seq_len, channels, device)
    grid = (batch, triton.cdiv(seq_len, block_l), triton.cdiv(channels, block_d))
    _int8_causal_conv1d_kernel[grid](
        x, weight, dequant_scale, bias if bias is not None else dequant_scale, out_inv_scale, out,
        seq_len, channels, x.stride(0), x.stride(1), weight.stride(0), out.stride(0), out.stride(1),
        WIDTH=weight.shape[1], HAS_BIAS=bias is not None, SILU=silu,
        BLOCK_L=block_l, BLOCK_D=block_d, **EXACT_FP_LAUNCH,
    )
    return out
