"""Triton depthwise causal conv1d on float inputs, the kernel for ``causal_conv1d_ref``.

Math is float32 whatever the input dtype (the reference computes in the weight's dtype), so results
agree to the rounding of that dtype, not bit for bit.
"""

import torch
import triton
import triton.language as tl

from mamba_qpass.kernels.checks import check_shape, check_tensor, check_unit_last_stride

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_WIDTH = 4


@triton.jit
def _causal_conv1d_kernel(
    x_ptr, w_ptr, bias_ptr, out_ptr,
    L, D, stride_xb, stride_xl, stride_wd, stride_ob, stride_ol,
    WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr,
    BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr,
):
    batch = tl.program_id(0)
    offs_t = tl.program_id(1) * BLOCK_L + tl.arange(0, BLOCK_L)
    offs_d = tl.program_id(2) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    x_base = x_ptr + batch * stride_xb + offs_d[None, :]

    acc = tl.zeros((BLOCK_L, BLOCK_D), dtype=tl.float32)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)[None, :]
    for k in tl.static_range(WIDTH):
        src_t = offs_t - (WIDTH - 1) + k  # the tap k steps into the window ending at t
        mask = ((src_t >= 0) & (src_t < L))[:, None] & mask_d[None, :]
        x = tl.load(x_base + src_t[:, None] * stride_xl, mask=mask, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + offs_d * stride_wd + k, mask=mask_d, other=0.0).to(tl.float32)
        acc += x * w[None, :]
    if SILU:
        acc = acc / (1.0 + tl.exp(-acc))
    out_ptrs = out_ptr + batch * stride_ob + offs_t[:, None] * stride_ol + offs_d[None, :]
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=(offs_t < L)[:, None] & mask_d[None, :])


def _conv_blocks(seq_len: int, channels: int, device: torch.device) -> tuple[int, int]:
    """(BLOCK_L, BLOCK_D): on CPU (the interpreter) as few programs as possible; on GPU, 32 time steps
    by 128 contiguous channels per program."""
    if device.type != "cuda":
        return min(64, triton.next_power_of_2(seq_len)), min(256, triton.next_power_of_2(channels))
    return 32, min(128, triton.next_power_of_2(channels))


def causal_conv1d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, silu: bool
) -> torch.Tensor:
    """Triton ``causal_conv1d_ref``: x float (B, L, D) with a contiguous last dim (other strides free),
    weight float (D, W) with W <= 4, bias float (D,) or None. Returns x's dtype, (B, L, D) contiguous."""
    check_tensor("x", x, FLOAT_DTYPES, (3,))
    device = x.device
    check_unit_last_stride("x", x)
    check_tensor("weight", weight, FLOAT_DTYPES, (2,), device)
    check_unit_last_stride("weight", weight)
    batch, seq_len, channels = x.shape
    if weight.shape[0] != channels or not 1 <= weight.shape[1] <= MAX_WIDTH:
        raise ValueError(
            f"weight must have shape (D={channels}, W) with 1 <= W <= {MAX_WIDTH}, got {tuple(weight.shape)}"
        )
    if bias is not None:
        check_tensor("bias", bias, FLOAT_DTYPES, (1,), device)
        check_shape("bias", bias, (channels,))
        check_unit_last_stride("bias", bias)

    out = torch.empty(batch, seq_len, channels, dtype=x.dtype, device=device)
    if out.numel() == 0:
        return out
    block_l, block_d = _conv_blocks(seq_len, channels, device)
    grid = (batch, triton.cdiv(seq_len, block_l), triton.cdiv(channels, block_d))
    _causal_conv1d_kernel[grid](
        x, weight, bias if bias is not None else weight, out,
        seq_len, channels, x.stride(0), x.stride(1), weight.stride(0), out.stride(0), out.stride(1),
        WIDTH=weight.shape[1], HAS_BIAS=bias is not None, SILU=silu, BLOCK_L=block_l, BLOCK_D=block_d,
    )
    return out
