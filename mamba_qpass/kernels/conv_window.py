"""What the depthwise causal conv1d kernels share: the checks on x and the weight; how a tile reads its
inputs (x, or the state before t = 0); the window sum over a (time, channel) tile and its tiling (the
float prefill kernel); the float64 epilogue of the int8 kernels (the int8 prefill kernel's fallback, see
``int8_causal_conv1d.triton``)."""

import torch
import triton
import triton.language as tl

from mamba_qpass.kernels.checks import (
    check_f64_scalar, check_f64_vector, check_shape, check_tensor, check_unit_last_stride,
)
from mamba_qpass.kernels.quant_math import tl_round_half_even_clamp_int8

MAX_WIDTH = 4


@triton.jit
def causal_inputs(x_base, state_base, src_t, mask_d, L, stride_xl, stride_sl, WIDTH: tl.constexpr,
                  HAS_STATE: tl.constexpr):
    """x at the steps src_t (one row per step, the tile's channels), in x's dtype; before t = 0 the state's
    step src_t + WIDTH - 1 (B, WIDTH - 1, D) with HAS_STATE, else zero. ``x_base`` and ``state_base``
    point at the batch row's channels (a (1, BLOCK_D) block of pointers)."""
    mask = ((src_t >= 0) & (src_t < L))[:, None] & mask_d[None, :]
    x = tl.load(x_base + src_t[:, None] * stride_xl, mask=mask, other=0)
    if HAS_STATE:  # exactly one of the two loads is unmasked, the other adds zero
        in_state = ((src_t < 0) & (src_t + WIDTH - 1 >= 0))[:, None] & mask_d[None, :]
        x += tl.load(state_base + (src_t + WIDTH - 1)[:, None] * stride_sl, mask=in_state, other=0)
    return x


@triton.jit
def add_causal_window(
    acc, x_ptr, w_ptr, state_ptr, batch, offs_t, offs_d, mask_d, L, stride_xb, stride_xl, stride_wd,
    stride_sb, stride_sl, WIDTH: tl.constexpr, HAS_STATE: tl.constexpr,
):
    """acc + sum_k x[batch, t - (WIDTH - 1) + k, d] * w[d, k] over the tile, in acc's dtype, x as
    ``causal_inputs`` reads it. The caller chooses the start value (its bias, or zero) and so the rounding
    order."""
    x_base = x_ptr + batch * stride_xb + offs_d[None, :]
    state_base = state_ptr + batch * stride_sb + offs_d[None, :]
    for k in tl.static_range(WIDTH):
        src_t = offs_t - (WIDTH - 1) + k  # the tap k steps into the window ending at t
        x = causal_inputs(x_base, state_base, src_t, mask_d, L, stride_xl, stride_sl, WIDTH, HAS_STATE)
        w = tl.load(w_ptr + offs_d * stride_wd + k, mask=mask_d, other=0).to(acc.dtype)
        acc += x.to(acc.dtype) * w[None, :]
    return acc


@triton.jit
def int8_conv_epilogue(acc, dequant_scale, bias, out_inv_scale, HAS_BIAS: tl.constexpr, SILU: tl.constexpr):
    """int8 codes of an exact int32 window sum: ``int8_causal_conv1d_epilogue`` in float64 (scale, + bias,
    SiLU, inverse output scale, clamp, round half to even). The scale and bias broadcast against acc."""
    v = acc.to(tl.float64) * dequant_scale
    if HAS_BIAS:
        v = v + bias
    if SILU:
        v = v / (1.0 + tl.exp(-v))
    return tl_round_half_even_clamp_int8(v * out_inv_scale)


def conv_blocks(seq_len: int, channels: int, device: torch.device) -> tuple[int, int]:
    """(BLOCK_L, BLOCK_D): on CPU (the interpreter) as few programs as possible; on GPU, 32 time steps
    by 128 contiguous channels per program."""
    if device.type != "cuda":
        return min(64, triton.next_power_of_2(seq_len)), min(256, triton.next_power_of_2(channels))
    return 32, min(128, triton.next_power_of_2(channels))


def check_conv_state(initial_state: torch.Tensor | None, x: torch.Tensor, width: int) -> None:
    """The state a conv continues from: x's dtype and device, (B, W-1, D), a contiguous last dim."""
    if initial_state is None:
        return
    check_tensor("initial_state", initial_state, (x.dtype,), (3,), x.device)
    check_shape("initial_state", initial_state, (x.shape[0], width - 1, x.shape[2]))
    check_unit_last_stride("initial_state", initial_state)


def last_conv_inputs(x: torch.Tensor, width: int, initial_state: torch.Tensor | None) -> torch.Tensor:
    """The last W-1 inputs of the state followed by x: (B, W-1, D), contiguous. A copy of at most W-1
    steps by PyTorch, so no Triton kernel of its own; still a launch on the GPU, which the int8 prefill
    kernel saves by storing those steps itself whenever x holds them all."""
    steps = width - 1
    if x.shape[1] >= steps:
        return x[:, x.shape[1] - steps :].contiguous()
    before = initial_state if initial_state is not None else x.new_zeros(x.shape[0], steps, x.shape[2])
    return torch.cat([before, x], dim=1)[:, x.shape[1] :].contiguous()


def check_conv_inputs(x: torch.Tensor, weight: torch.Tensor, dtypes: tuple[torch.dtype, ...]) -> tuple[int, int, int]:
    """Checks x (B, L, D) and weight (D, W), W <= MAX_WIDTH, both with a unit last stride; returns (B, L, D)."""
    check_tensor("x", x, dtypes, (3,))
    check_unit_last_stride("x", x)
    check_tensor("weight", weight, dtypes, (2,), x.device)
    check_unit_last_stride("weight", weight)
    batch, seq_len, channels = x.shape
    if weight.shape[0] != channels or not 1 <= weight.shape[1] <= MAX_WIDTH:
        raise ValueError(
            f"weight must have shape (D={channels}, W) with 1 <= W <= {MAX_WIDTH}, got {tuple(weight.shape)}"
        )
    return batch, seq_len, channels


def check_int8_conv_inputs(
    x: torch.Tensor, weight: torch.Tensor, dequant_scale: torch.Tensor, bias: torch.Tensor | None,
    out_inv_scale: torch.Tensor, state: torch.Tensor | None,
) -> tuple[int, int, int, int]:
    """The int8 conv's inputs: codes x and weight, the state it continues from, float64 (D,) dequant_scale
    and bias, float64 scalar out_inv_scale. Returns (B, L, D, W)."""
    batch, seq_len, channels = check_conv_inputs(x, weight, (torch.int8,))
    width = weight.shape[1]
    check_conv_state(state, x, width)
    check_f64_vector("dequant_scale", dequant_scale, channels, x.device)
    if bias is not None:
        check_f64_vector("bias", bias, channels, x.device)
    check_f64_scalar("out_inv_scale", out_inv_scale, x.device)
    return batch, seq_len, channels, width


def conv_state_out(state: torch.Tensor, state_out: torch.Tensor | None) -> torch.Tensor:
    """Where a one-token int8 conv writes its new state: ``state_out`` (which may be ``state`` itself, for
    an update in place), checked, or a new tensor."""
    if state_out is None:
        return torch.empty(state.shape, dtype=torch.int8, device=state.device)
    if state_out.shape != state.shape or state_out.dtype != torch.int8 or state_out.stride(-1) != 1:
        raise ValueError("state_out must be an int8 tensor of state's shape with a contiguous last dim")
    return state_out
