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

With an ``XProjection`` the kernel goes on to x_proj, whose only input is the conv's output: each program
that has just finished the conv of its x columns multiplies those codes by x_proj's weight columns, adds
the exact int32 partial sums into a workspace with atomics (integer sums are exact in any order), and the
last of the x tiles to arrive (a counter per row tile says which) takes the totals through
``int8_linear``'s epilogue to x_proj's codes. At one token x_proj is a GEMV of a few microseconds of
launch and latency over a weight of about 1 MB, so its launch goes too; every code is ``int8_linear``'s.
"""

import dataclasses

import torch
import triton
import triton.language as tl

from mamba_qpass.kernels.checks import check_f64_vector, check_shape, check_tensor, check_unit_last_stride
from mamba_qpass.kernels.conv_window import check_int8_conv_inputs, conv_state_out, int8_conv_epilogue
from mamba_qpass.kernels.dependent_launch import wait_for_earlier_kernels
from mamba_qpass.kernels.int8_linear import tiles
from mamba_qpass.kernels.int8_linear.tiles import TiledKernel, split_k_workspace, sum_workspace
from mamba_qpass.kernels.int8_linear.triton import (
    check_int8_linear_inputs, grouped_tile, int8_tile_accumulate_split, int8_tile_codes, int8_tile_values,
)

# x_proj's outputs are taken this many at a time (its 192 at 2.8b in three): the partial products of a tile
# are (rows, X_CHUNK) int32 in registers
MAX_X_CHUNK = 64


@dataclasses.dataclass(frozen=True)
class XProjection:
    """x_proj as ``int8_linear`` holds it after lowering, giving int8 codes without a bias: weight int8
    (R, D) over the conv's D channels, dequant_scale and out_inv_scale float64 (R,)."""

    weight: torch.Tensor
    dequant_scale: torch.Tensor
    out_inv_scale: torch.Tensor

    def check(self, channels: int, device: torch.device) -> int:
        """The number of outputs R, once the tensors are checked against the conv's channels."""
        check_tensor("x_proj weight", self.weight, (torch.int8,), (2,), device)
        check_unit_last_stride("x_proj weight", self.weight)
        rows = self.weight.shape[0]
        check_shape("x_proj weight", self.weight, (rows, channels))
        check_f64_vector("x_proj dequant_scale", self.dequant_scale, rows, device)
        check_f64_vector("x_proj out_inv_scale", self.out_inv_scale, rows, device)
        return rows


@triton.jit
def _x_proj_partial_sums(conv_codes, offs_m, offs_n, mask_m, mask_d, xw_ptr, stride_xw, ws_ptr,
                         BLOCK_M: tl.constexpr, X_ROWS: tl.constexpr, X_CHUNK: tl.constexpr):
    """Adds conv_codes (BLOCK_M, BLOCK_N) times x_proj's weight columns ``offs_n`` into the int32 sums
    ``ws`` (rows, X_ROWS): on the CUDA cores for one row, on the tensor cores for more."""
    for first in tl.static_range(0, X_ROWS, X_CHUNK):
        offs_r = first + tl.arange(0, X_CHUNK)
        mask_r = offs_r < X_ROWS
        w = tl.load(xw_ptr + offs_r[:, None] * stride_xw + offs_n[None, :], mask=mask_r[:, None] & mask_d[None, :], other=0)
        if BLOCK_M == 1:
            part = tl.sum(w.to(tl.int32) * conv_codes.to(tl.int32), axis=1)[None, :]
        else:
            part = tl.dot(conv_codes, tl.trans(w), out_dtype=tl.int32)
        tl.atomic_add(ws_ptr + offs_m[:, None] * X_ROWS + offs_r[None, :], part, mask=mask_m[:, None] & mask_r[None, :],
                      sem="relaxed")  # see _x_proj_codes


@triton.jit
def _x_proj_codes(offs_m, mask_m, ws_ptr, dequant_ptr, inv_ptr, x_codes_ptr, stride_xo,
                  BLOCK_M: tl.constexpr, X_ROWS: tl.constexpr, X_CHUNK: tl.constexpr):
    """x_proj's codes of rows ``offs_m`` from their finished sums, leaving the sums at zero.

    The sums' atomics are relaxed, where split K's (``int8_tile_accumulate_split``) are acq_rel: an acq_rel
    atomic a value fences each one, some 24 a thread here, and the fused x_proj with them took a 2.8b step
    of 8 layers from 0.620 to 0.827 ms at B=16 (H200). The order needs no more: every thread's adds are
    issued before the barrier, the counter's acq_rel atomic then releases them all, and the last program
    to arrive reads them after acquiring the counter. So ordered, the step with it ran bit for bit like the
    functional step on an H200 and took 0.656 ms (twentieth session)."""
    for first in tl.static_range(0, X_ROWS, X_CHUNK):
        offs_r = first + tl.arange(0, X_CHUNK)
        mask_r = offs_r < X_ROWS
        mask = mask_m[:, None] & mask_r[None, :]
        acc = tl.atomic_xchg(ws_ptr + offs_m[:, None] * X_ROWS + offs_r[None, :],
                             tl.zeros((BLOCK_M, X_CHUNK), dtype=tl.int32), mask=mask, sem="relaxed")
        tl.store(x_codes_ptr + offs_m[:, None] * stride_xo + offs_r[None, :],
                 int8_tile_codes(int8_tile_values(acc, offs_r, mask_r, dequant_ptr, dequant_ptr, False), offs_r, mask_r, inv_ptr),
                 mask=mask)


@triton.jit
def _int8_linear_conv_step_kernel(
    a_ptr, w_ptr, dequant_scale_ptr, out_inv_scale_ptr, codes_ptr,
    conv_w_ptr, conv_dequant_ptr, conv_bias_ptr, conv_inv_ptr, state_ptr, state_out_ptr, conv_out_ptr, ws_ptr, count_ptr,
    xw_ptr, x_dequant_ptr, x_inv_ptr, x_codes_ptr, x_ws_ptr, x_count_ptr,
    M, N, K, D, stride_am, stride_wn, stride_om, stride_cw, stride_sb, stride_sl, stride_tb, stride_tl, stride_cb,
    stride_xw, stride_xo, M_BUCKET,
    WIDTH: tl.constexpr, CONV_HAS_BIAS: tl.constexpr, SILU: tl.constexpr, X_ROWS: tl.constexpr, X_CHUNK: tl.constexpr,
    EVEN_K: tl.constexpr,
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

            if X_ROWS > 0:
                _x_proj_partial_sums(out, offs_m, offs_n, mask_m, mask_d, xw_ptr, stride_xw, x_ws_ptr,
                                     BLOCK_M, X_ROWS, X_CHUNK)
                # as split K's counter (int8_tile_accumulate_split): every thread's adds are issued first
                tl.debug_barrier()
                if tl.atomic_add(x_count_ptr + pid_m, 1) == tl.cdiv(D, BLOCK_N) - 1:
                    _x_proj_codes(offs_m, mask_m, x_ws_ptr, x_dequant_ptr, x_inv_ptr, x_codes_ptr, stride_xo,
                                  BLOCK_M, X_ROWS, X_CHUNK)
                    tl.atomic_xchg(x_count_ptr + pid_m, 0)


_int8_linear_conv_step = TiledKernel(
    _int8_linear_conv_step_kernel, key=["M_BUCKET", "N", "K", "D", "WIDTH", "CONV_HAS_BIAS", "SILU", "X_ROWS"],
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
    x_proj: XProjection | None = None,
) -> tuple[torch.Tensor, ...]:
    """Triton ``int8_linear_conv_step_ref``: a int8 (B, 1, K) with a contiguous last dim; the rest as the
    reference. Returns ``(codes (B, 1, N), conv out (B, 1, D), new state)``, and x_proj's codes (B, 1, R)
    fourth when ``x_proj`` is given; the new state is written to ``state_out`` (which may be ``state``
    itself, for an update in place) or to a new tensor. ``config`` (one of ``tiles.GPU_CONFIGS``) fixes the
    tile, as for ``int8_linear``; with x_proj a tile of several rows must be at least ``tiles.MIN_DOT_K``
    columns wide."""
    n, k = check_int8_linear_inputs(a, weight, dequant_scale, (3,))
    device = a.device
    if a.shape[1] != 1:
        raise ValueError(f"in_proj with the conv's step takes one token, a of shape (batch, 1, K), got {tuple(a.shape)}")
    check_f64_vector("out_inv_scale", out_inv_scale, n, device)
    channels = conv_weight.shape[0] if conv_weight.dim() == 2 else -1
    if not 1 <= channels <= n:
        raise ValueError(f"conv_weight must be (D, W) with D <= N={n} (x is in_proj's first D outputs), got {tuple(conv_weight.shape)}")
    x_rows = x_proj.check(channels, device) if x_proj is not None else 0
    if x_rows and config is not None and not tiles.runs_a_second_product(config):
        raise ValueError(f"with x_proj a tile of several rows needs BLOCK_N >= {tiles.MIN_DOT_K}, got {config.kwargs}")
    batch = a.shape[0]
    codes = torch.empty(batch, 1, n, dtype=torch.int8, device=device)
    _, _, _, width = check_int8_conv_inputs(codes[..., :channels], conv_weight, conv_dequant_scale, conv_bias,
                                            conv_out_inv_scale, state)
    state_out = conv_state_out(state, state_out)
    conv_out = torch.empty(batch, 1, channels, dtype=torch.int8, device=device)
    if x_proj is None:
        results = (codes, conv_out, state_out)
    else:
        x_codes = torch.empty(batch, 1, x_rows, dtype=torch.int8, device=device)
        results = (codes, conv_out, state_out, x_codes)
    if batch == 0:
        return results
    workspace = split_k_workspace(device, batch, n, config)
    if x_proj is None:  # never read without X_ROWS: stand-ins of the right kinds
        x_weight, x_dequant, x_inv, x_out, x_workspace = weight, dequant_scale, dequant_scale, codes, workspace
    else:
        x_weight, x_dequant, x_inv, x_out = x_proj.weight, x_proj.dequant_scale, x_proj.out_inv_scale, x_codes
        x_workspace = sum_workspace(device, triton.next_power_of_2(batch), x_rows)
    args = (
        a, weight, dequant_scale, out_inv_scale, codes,
        conv_weight, conv_dequant_scale, conv_bias if conv_bias is not None else conv_dequant_scale,
        conv_out_inv_scale, state, state_out, conv_out, *workspace, x_weight, x_dequant, x_inv, x_out, *x_workspace,
        batch, n, k, channels, a.stride(0), weight.stride(0), codes.stride(0), conv_weight.stride(0),
        state.stride(0), state.stride(1), state_out.stride(0), state_out.stride(1), conv_out.stride(0),
        x_weight.stride(0), x_out.stride(0), triton.next_power_of_2(batch),
    )
    x_chunk = min(MAX_X_CHUNK, max(16, triton.next_power_of_2(x_rows)))
    flags = dict(WIDTH=width, CONV_HAS_BIAS=conv_bias is not None, SILU=silu, X_ROWS=x_rows, X_CHUNK=x_chunk)
    _int8_linear_conv_step.launch(batch, n, k, config, device, *args, **flags)
    return results
