"""Triton depthwise causal conv1d on int8 codes, matching ``int8_causal_conv1d_ref`` code for code.

Codes can differ from the reference only where exp (SiLU) rounds differently in the last float64 bit
and the value lies within ~1e-15 (relative) of a rounding boundary; without SiLU they are identical.
"""

import torch
import triton
import triton.language as tl

from mamba_qpass.kernels.conv_window import (
    add_causal_window, check_int8_conv_inputs, conv_blocks, int8_conv_epilogue, last_conv_inputs,
)
from mamba_qpass.kernels.quant_math import EXACT_FP_LAUNCH


@triton.jit
def _int8_causal_conv1d_kernel(
    x_ptr, w_ptr, dequant_scale_ptr, bias_ptr, out_inv_scale_ptr, state_ptr, out_ptr,
    L, D, stride_xb, stride_xl, stride_wd, stride_sb, stride_sl, stride_ob, stride_ol,
    WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr, HAS_STATE: tl.constexpr,
    BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr,
):
    batch = tl.program_id(0)
    offs_t = tl.program_id(1) * BLOCK_L + tl.arange(0, BLOCK_L)
    offs_d = tl.program_id(2) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    acc = tl.zeros((BLOCK_L, BLOCK_D), dtype=tl.int32)
    acc = add_causal_window(
        acc, x_ptr, w_ptr, state_ptr, batch, offs_t, offs_d, mask_d, L, stride_xb, stride_xl, stride_wd,
        stride_sb, stride_sl, WIDTH, HAS_STATE,
    )

    dequant_scale = tl.load(dequant_scale_ptr + offs_d, mask=mask_d, other=0.0)[None, :]
    bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0)[None, :]  # without a bias: unread by the epilogue
    codes = int8_conv_epilogue(acc, dequant_scale, bias, tl.load(out_inv_scale_ptr), HAS_BIAS, SILU)
    out_ptrs = out_ptr + batch * stride_ob + offs_t[:, None] * stride_ol + offs_d[None, :]
    tl.store(out_ptrs, codes, mask=(offs_t < L)[:, None] & mask_d[None, :])


def int8_causal_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    dequant_scale: torch.Tensor,
    bias: torch.Tensor | None,
    out_inv_scale: torch.Tensor,
    silu: bool = True,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton ``int8_causal_conv1d_ref``: x int8 (B, L, D) with a contiguous last dim (time and batch
    strides are free), weight int8 (D, W) with W <= 4, float64 (D,) dequant_scale and bias, float64
    scalar out_inv_scale, initial_state int8 (B, W-1, D) or None. Returns ``(out, final_state)``: int8
    (B, L, D) contiguous, and the codes of the last W-1 inputs."""
    batch, seq_len, channels, width = check_int8_conv_inputs(
        x, weight, dequant_scale, bias, out_inv_scale, initial_state
    )
    device = x.device

    out = torch.empty(batch, seq_len, channels, dtype=torch.int8, device=device)
    final_state = last_conv_inputs(x, width, initial_state)
    if out.numel() == 0:
        return out, final_state
    state = initial_state if initial_state is not None else final_state  # not read without HAS_STATE
    block_l, block_d = conv_blocks(seq_len, channels, device)
    grid = (batch, triton.cdiv(seq_len, block_l), triton.cdiv(channels, block_d))
    _int8_causal_conv1d_kernel[grid](
        x, weight, dequant_scale, bias if bias is not None else dequant_scale, out_inv_scale, state, out,
        seq_len, channels, x.stride(0), x.stride(1), weight.stride(0), state.stride(0), state.stride(1),
        out.stride(0), out.stride(1),
        WIDTH=width, HAS_BIAS=bias is not None, SILU=silu, HAS_STATE=initial_state is not None,
        BLOCK_L=block_l, BLOCK_D=block_d, **EXACT_FP_LAUNCH,
    )
    return out, final_state
