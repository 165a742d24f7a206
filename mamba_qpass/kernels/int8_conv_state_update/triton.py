"""Triton one-token int8 causal conv1d from its state (the decode step), matching
``int8_conv_state_update_ref`` code for code.

One program owns a batch row and a block of channels: the exact int32 window sum over the W-1 state codes
and the new input, the float64 epilogue shared with the prefill kernel (``conv_window.int8_conv_epilogue``:
+ bias, SiLU, requantisation), and the shifted window written as the new state.
"""

import torch
import triton
import triton.language as tl

from mamba_qpass.kernels.conv_window import check_int8_conv_inputs, conv_state_out, int8_conv_epilogue
from mamba_qpass.kernels.dependent_launch import dependent_launch, wait_for_earlier_kernels
from mamba_qpass.kernels.quant_math import EXACT_FP_LAUNCH


@triton.jit
def _int8_conv_state_update_kernel(
    x_ptr, w_ptr, dequant_scale_ptr, bias_ptr, out_inv_scale_ptr, state_ptr, out_ptr, state_out_ptr,
    D, stride_xb, stride_wd, stride_sb, stride_sl, stride_ob, stride_tb, stride_tl,
    WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr, BLOCK_D: tl.constexpr,
    USE_GDC: tl.constexpr = False,
):
    batch = tl.program_id(0)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    wait_for_earlier_kernels(USE_GDC)
    acc = tl.zeros((BLOCK_D,), dtype=tl.int32)
    # the window oldest first: state steps 0 .. W-2, then x; the new state drops step 0 and appends x. Each
    # step is read before it is written one slot down, so state_out may be state itself.
    for k in tl.static_range(WIDTH - 1):
        past = tl.load(state_ptr + batch * stride_sb + k * stride_sl + offs_d, mask=mask_d, other=0)
        acc += past.to(tl.int32) * tl.load(w_ptr + offs_d * stride_wd + k, mask=mask_d, other=0).to(tl.int32)
        if k > 0:
            tl.store(state_out_ptr + batch * stride_tb + (k - 1) * stride_tl + offs_d, past, mask=mask_d)
    x = tl.load(x_ptr + batch * stride_xb + offs_d, mask=mask_d, other=0)
    acc += x.to(tl.int32) * tl.load(w_ptr + offs_d * stride_wd + (WIDTH - 1), mask=mask_d, other=0).to(tl.int32)
    if WIDTH > 1:
        tl.store(state_out_ptr + batch * stride_tb + (WIDTH - 2) * stride_tl + offs_d, x, mask=mask_d)

    dequant_scale = tl.load(dequant_scale_ptr + offs_d, mask=mask_d, other=0.0)
    bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0)  # without a bias: unread by the epilogue
    codes = int8_conv_epilogue(acc, dequant_scale, bias, tl.load(out_inv_scale_ptr), HAS_BIAS, SILU)
    tl.store(out_ptr + batch * stride_ob + offs_d, codes, mask=mask_d)


def int8_conv_state_update(
    x: torch.Tensor,
    weight: torch.Tensor,
    dequant_scale: torch.Tensor,
    bias: torch.Tensor | None,
    out_inv_scale: torch.Tensor,
    silu: bool,
    state: torch.Tensor,
    state_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton ``int8_conv_state_update_ref``: x int8 (B, 1, D) with a contiguous last dim, state int8
    (B, W-1, D); the rest as ``int8_causal_conv1d``. Returns ``(out int8 (B, 1, D), new state (B, W-1, D))``;
    the new state is written to ``state_out`` (which may be ``state`` itself, for an update in place) or to
    a new tensor."""
    batch, seq_len, channels, width = check_int8_conv_inputs(x, weight, dequant_scale, bias, out_inv_scale, state)
    if seq_len != 1:
        raise ValueError(f"a conv state update takes one token, x of shape (batch, 1, channels), got {tuple(x.shape)}")
    device = x.device
    out = torch.empty(batch, 1, channels, dtype=torch.int8, device=device)
    state_out = conv_state_out(state, state_out)
    if out.numel() == 0:
        return out, state_out
    block_d = 1024 if device.type == "cuda" else min(256, triton.next_power_of_2(channels))
    _int8_conv_state_update_kernel[(batch, triton.cdiv(channels, block_d))](
        x, weight, dequant_scale, bias if bias is not None else dequant_scale, out_inv_scale,
        state, out, state_out,
        channels, x.stride(0), weight.stride(0), state.stride(0), state.stride(1), out.stride(0),
        state_out.stride(0), state_out.stride(1),
        WIDTH=width, HAS_BIAS=bias is not None, SILU=silu, BLOCK_D=block_d, **EXACT_FP_LAUNCH, **dependent_launch(device, batch),
    )
    return out, state_out
