"""Triton depthwise causal conv1d on float inputs, the kernel for ``causal_conv1d_ref``.

Math is float32 whatever the input dtype (the reference computes in the weight's dtype), so results
agree to the rounding of that dtype, not bit for bit.
"""

import torch
import triton
import triton.language as tl

from mamba_qpass.kernels.checks import check_shape, check_tensor, check_unit_last_stride
from mamba_qpass.kernels.conv_window import (
    add_causal_window, check_conv_inputs, check_conv_state, conv_blocks, last_conv_inputs,
)
from mamba_qpass.kernels.dependent_launch import dependent_launch, wait_for_earlier_kernels

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@triton.jit
def _causal_conv1d_kernel(
    x_ptr, w_ptr, bias_ptr, state_ptr, out_ptr,
    L, D, stride_xb, stride_xl, stride_wd, stride_sb, stride_sl, stride_ob, stride_ol,
    WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr, HAS_STATE: tl.constexpr,
    BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr, USE_GDC: tl.constexpr = False,
):
    batch = tl.program_id(0)
    offs_t = tl.program_id(1) * BLOCK_L + tl.arange(0, BLOCK_L)
    offs_d = tl.program_id(2) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    wait_for_earlier_kernels(USE_GDC)
    acc = tl.zeros((BLOCK_L, BLOCK_D), dtype=tl.float32)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)[None, :]
    acc = add_causal_window(
        acc, x_ptr, w_ptr, state_ptr, batch, offs_t, offs_d, mask_d, L, stride_xb, stride_xl, stride_wd,
        stride_sb, stride_sl, WIDTH, HAS_STATE,
    )
    if SILU:
        acc = acc / (1.0 + tl.exp(-acc))
    out_ptrs = out_ptr + batch * stride_ob + offs_t[:, None] * stride_ol + offs_d[None, :]
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=(offs_t < L)[:, None] & mask_d[None, :])


def causal_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    silu: bool,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton ``causal_conv1d_ref``: x float (B, L, D) with a contiguous last dim (other strides free),
    weight float (D, W) with W <= 4, bias float (D,) or None, initial_state (B, W-1, D) in x's dtype or
    None. Returns ``(out, final_state)``: out in x's dtype, (B, L, D) contiguous; the last W-1 inputs."""
    batch, seq_len, channels = check_conv_inputs(x, weight, FLOAT_DTYPES)
    width = weight.shape[1]
    check_conv_state(initial_state, x, width)
    device = x.device
    if bias is not None:
        check_tensor("bias", bias, FLOAT_DTYPES, (1,), device)
        check_shape("bias", bias, (channels,))
        check_unit_last_stride("bias", bias)

    out = torch.empty(batch, seq_len, channels, dtype=x.dtype, device=device)
    final_state = last_conv_inputs(x, width, initial_state)
    if out.numel() == 0:
        return out, final_state
    state = initial_state if initial_state is not None else final_state  # not read without HAS_STATE
    block_l, block_d = conv_blocks(seq_len, channels, device)
    grid = (batch, triton.cdiv(seq_len, block_l), triton.cdiv(channels, block_d))
    _causal_conv1d_kernel[grid](
        x, weight, bias if bias is not None else weight, state, out,
        seq_len, channels, x.stride(0), x.stride(1), weight.stride(0), state.stride(0), state.stride(1),
        out.stride(0), out.stride(1),
        WIDTH=width, HAS_BIAS=bias is not None, SILU=silu, HAS_STATE=initial_state is not None, BLOCK_L=block_l, BLOCK_D=block_d,
        **dependent_launch(device, batch * seq_len),
    )
    return out, final_state
