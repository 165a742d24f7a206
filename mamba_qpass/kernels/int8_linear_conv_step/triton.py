"""Triton ``int8_linear_conv_step_ref``: in_proj's int8 GEMM for one token a row, with the conv's one-token
state update done in the epilogue of the tiles that hold x's columns.

A decode step's conv needs, for each channel, only that channel's new x code, its W-1 state codes and its
W weights, so the program that has just computed a tile of in_proj's codes can finish the conv of those
columns at once: the exact int32 window sum and the conv's float64 epilogue (``int8_conv_epilogue``), the
new state written over ``state_out`` (which may be ``state``: each program reads a state element before
writing the slot below it, and owns its columns). The GEMM is ``int8_linear``'s tile loop and epilogue
(``int8_tile_accumulate_split``, ``int8_tile_values``), so every code equals what the two kernels give one after
the other, and a decode step saves the conv's launch.

The tile is int8_linear's: autotuned among the same decode candidates with the same timer (``tiles.py``),
split K included (the conv then runs in the tile's last program to arrive, which holds the whole sum). The
tuning replays the kernel, so the autotuner restores the state after each timed call: an in-place update
is applied once.

x_proj, whose only input is the conv's output, was once done here too (each x tile adding its exact int32
share into a workspace with atomics, the last to arrive running ``int8_linear``'s epilogue): exact and one
launch a layer fewer, but the longer kernel cost more than x_proj's launch, an H200 step of 8 layers of
2.8b taking 0.656 against 0.619 ms at B=16 and 0.436 against 0.377 at B=1 (benchmarks/RESULTS.md), so
x_proj stays its own GEMV.
"""

import torch
import triton
import triton.language as tl

from mamba_qpass.kernels.checks import check_f64_vector
from mamba_qpass.kernels.conv_window import check_int8_conv_inputs, conv_state_out, int8_conv_epilogue
from mamba_qpass.kernels.dependent_launch import wait_for_earlier_kernels
from mamba_qpass.kernels.int8_linear.tiles import TiledKernel, split_k_workspace
from mamba_qpass.kernels.int8_linear.triton import (
    check_int8_linear_inputs, grouped_tile, int8_tile_accumulate_split, int8_tile_codes, int8_tile_values,
)


@triton.jit
def _int8_linear_conv_step_kernel(
    a_ptr, w_ptr, dequant_scale_ptr, out_inv_scale_ptr, codes_ptr,
    conv_w_ptr, conv_dequant_ptr, conv_bias_ptr, conv_inv_ptr, state_ptr, state_out_ptr, conv_out_ptr, ws_ptr, count_ptr,
    M, N, K, D, stride_am, stride_wn, stride_om, stride_cw, stride_sb, stride_sl, stride_tb, stride_tl, stride_cb, M_BUCKET,
    WIDTH: tl.constexpr, CONV_HAS_BIAS: tl.constexpr, SILU: tl.constexpr, EVEN_K: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr, SPLIT_K: tl.constexpr,
    K_STEPS: tl.constexpr, SWAP_AB: tl.constexpr, USE_GDC: tl.constexpr = False,
):
    wait_for_earlier_kernels(USE_GDC)
    pid = tl.program_id(0)
    pid_m, pid_n = grouped_tile(pid, M, N, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < N
    acc, last = int8_tile_accumulate_split(a_ptr, w_ptr, ws_ptr, count_ptr, pid, offs_m, offs_n,
                                           mask_m[:, None] & mask_n[None, :], M, N, K, stride_am, stride_wn,
                                           EVEN_K, BLOCK_M, BLOCK_N, BLOCK_K, SPLIT_K, K_STEPS, SWAP_AB)
    if last:
        v = int8_tile_values(acc, offs_n, mask_n, dequant_scale_ptr, dequant_scale_ptr, False)
        codes = int8_tile_codes(v, offs_n, mask_n, out_inv_scale_ptr)
        tl.store(codes_ptr + offs_m[:, None] * stride_om + offs_n[None, :], codes, mask=mask_m[:, None] & mask_n[None, :])

        if pid_n * BLOCK_N < D:  # this tile holds x columns: their conv, from the state
            mask_d = offs_n < D
            mask = mask_m[:, None] & mask_d[None, :]
            window = codes.to(tl.int32) * tl.load(conv_w_ptr + offs_n * stride_cw + (WIDTH - 1), mask=mask_d, other=0).to(tl.int32)[None, :]
            for k in tl.static_range(WIDTH - 1):
                past = tl.load(state_ptr + offs_m[:, None] * stride_sb + k * stride_sl + offs_n[None, :], mask=mask, other=0)
                window += past.to(tl.int32) * tl.load(conv_w_ptr + offs_n * stride_cw + k, mask=mask_d, other=0).to(tl.int32)[None, :]
                if k > 0:
                    tl.store(state_out_ptr + offs_m[:, None] * stride_tb + (k - 1) * stride_tl + offs_n[None, :], past, mask=mask)
            if WIDTH > 1:
                tl.store(state_out_ptr + offs_m[:, None] * stride_tb + (WIDTH - 2) * stride_tl + offs_n[None, :], codes, mask=mask)
            dequant = tl.load(conv_dequant_ptr + offs_n, mask=mask_d, other=0.0)[None, :]
            bias = tl.load(conv_bias_ptr + offs_n, mask=mask_d, other=0.0)[None, :]  # without a bias: unread
            out = int8_conv_epilogue(window, dequant, bias, tl.load(conv_inv_ptr), CONV_HAS_BIAS, SILU)
            tl.store(conv_out_ptr + offs_m[:, None] * stride_cb + offs_n[None, :], out, mask=mask)


_int8_linear_conv_step = TiledKernel(
    _int8_linear_conv_step_kernel, key=["M_BUCKET", "N", "K", "D", "WIDTH", "CONV_HAS_BIAS", "SILU"],
    restore_value=["state_out_ptr"],
)


def int8_linear_conv_step(
    a: torch.Tensor,
    weight: torch.Tensor,
    dequant_scale: torch.Tensor,
    out_inv_scale: torch.Tensor,
    conv_weight: torch.Tensor,
    conv_dequant_scale: torch.Tensor,
    conv_bias: torch.Tensor | None,
    conv_out_inv_scale: torch.Tensor,
    silu: bool,
    state: torch.Tensor,
    state_out: torch.Tensor | None = None,
    config: triton.Config | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Triton ``int8_linear_conv_step_ref``: a int8 (B, 1, K) with a contiguous last dim; the rest as the
    reference. Returns ``(codes (B, 1, N), conv out (B, 1, D), new state)``; the new state is written to
    ``state_out`` (which may be ``state`` itself, for an update in place) or to a new tensor. ``config``
    (one of ``tiles.GPU_CONFIGS``) fixes the tile, as for ``int8_linear``."""
    n, k = check_int8_linear_inputs(a, weight, dequant_scale, (3,))
    device = a.device
    if a.shape[1] != 1:
        raise ValueError(f"in_proj with the conv's step takes one token, a of shape (batch, 1, K), got {tuple(a.shape)}")
    check_f64_vector("out_inv_scale", out_inv_scale, n, device)
    channels = conv_weight.shape[0] if conv_weight.dim() == 2 else -1
    if not 1 <= channels <= n:
        raise ValueError(f"conv_weight must be (D, W) with D <= N={n} (x is in_proj's first D outputs), got {tuple(conv_weight.shape)}")
    batch = a.shape[0]
    codes = torch.empty(batch, 1, n, dtype=torch.int8, device=device)
    _, _, _, width = check_int8_conv_inputs(codes[..., :channels], conv_weight, conv_dequant_scale, conv_bias,
                                            conv_out_inv_scale, state)
    state_out = conv_state_out(state, state_out)
    conv_out = torch.empty(batch, 1, channels, dtype=torch.int8, device=device)
    if batch == 0:
        return codes, conv_out, state_out
    args = (
        a, weight, dequant_scale, out_inv_scale, codes,
        conv_weight, conv_dequant_scale, conv_bias if conv_bias is not None else conv_dequant_scale,
        conv_out_inv_scale, state, state_out, conv_out, *split_k_workspace(device, batch, n, config),
        batch, n, k, channels, a.stride(0), weight.stride(0), codes.stride(0), conv_weight.stride(0),
        state.stride(0), state.stride(1), state_out.stride(0), state_out.stride(1), conv_out.stride(0),
        triton.next_power_of_2(batch),
    )
    flags = dict(WIDTH=width, CONV_HAS_BIAS=conv_bias is not None, SILU=silu)
    _int8_linear_conv_step.launch(batch, n, k, config, device, *args, **flags)
    return codes, conv_out, state_out
