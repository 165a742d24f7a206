"""Triton depthwise causal conv1d on int8 codes, matching ``int8_causal_conv1d_ref`` code for code.

The epilogue runs in float32, and in float64 only where float32 could round to a different code.
Codes change only at the half-integers -127.5 .. 126.5. So for each value the kernel computes t32, the
float32 value that is rounded, and a bound on its distance from the float64 value t64 (derived in
``_float32_codes``). A value at least that bound away from every half-integer rounds to the same code
in both; a value nearer (about 1e-4 of them on realistic data) takes the code of the float64 epilogue
shared with the one-token kernels (``conv_window.int8_conv_epilogue``, the reference's arithmetic).

A program walks BLOCK_L time steps in sub-tiles of SUB_L steps by BLOCK_D channels, and only a sub-tile
holding a near value runs the float64 epilogue, for all its values (a branch on the whole sub-tile, as
Triton has no per-value branches), keeping the near ones. Small sub-tiles make the float64 work rare
and keep its registers few, so occupancy stays high; the per-channel weights, scales and bias are
loaded once per program. ``prefill_tiling`` holds the sizes.

Codes can then differ from the reference only where float64 exp rounds differently in the last bit
and the value lies within ~1e-15 (relative) of a rounding boundary; without SiLU they are identical.
"""

import torch
import triton
import triton.language as tl

from mamba_qpass.kernels.conv_window import (
    causal_inputs, check_int8_conv_inputs, int8_conv_epilogue, last_conv_inputs,
)
from mamba_qpass.kernels.quant_math import EXACT_FP_LAUNCH

UNIT_ROUNDOFF_F32 = tl.constexpr(2.0**-24)
ERROR_SAFETY = tl.constexpr(4.0)  # room for the neglected terms of second order and for float64's own error
TINY = tl.constexpr(2.0**-100)  # absolute error in y from underflow: a flushed subnormal, exp(-v) past float32


@triton.jit
def _float32_codes(acc, scale, bias, inv_scale, HAS_BIAS: tl.constexpr, SILU: tl.constexpr):
    """(codes, near): ``int8_conv_epilogue`` in float32, and where its codes may differ from float64's.

    With u = 2**-24 and primes for the float32 values (scale', bias', inv' rounded from float64), the
    exact values a = acc * scale, v = a + bias, y = SiLU(v), t = y * inv satisfy, to first order in u:
      a'  = fl(acc * scale'): acc is exact in float32 (|acc| <= 4 * 128 * 128), two roundings: 2u |a|
      v'  = fl(a' + bias'): those plus bias' and the sum's roundings, 3u (|a'| + |bias'|), the sum of
            magnitudes since a + bias may cancel
      y'  = SiLU: as SiLU's derivative lies in [-0.1, 1.1], 1.1 times the error in v', plus y' times the
            relative errors of exp, 1 + exp and the division. exp is numpy's when interpreted (a few
            ulp, taken as 4) or on the GPU Triton's ex2.approx(v * log2(e)), the code of CUDA's __expf,
            which the CUDA guide bounds by 2 + 1.173 |v| ulp; an ulp is at most 2u relative, so exp
            errs by <= (8 + 2.35 |v'|) u. 1 + exp adds u, the division 2 ulp = 4u (the GPU's
            div.full.f32; numpy's division rounds correctly)
      t'  = fl(y' * inv'): inv's rounding and the product's, 2u |t'|
    giving |t' - t| <= u |inv'| (3.3 (|a'| + |bias'|) + (15 + 2.35 |v'|) |y'|), and without SiLU
    u |inv'| (3 (|a'| + |bias'|) + 2 |y'|). The float64 epilogue errs by the same count of roundings
    in 2**-53, which the safety factor covers with the neglected u**2 terms (on 2e7 random values the
    interpreter's error stays below 0.8 of the bound without the factor). Where exp overflows
    (v' < -88.7: 1 + exp = inf, y' = -0) or a value underflows, the error in y is absolute and below
    2**-120, hence the TINY term.

    Far (not near) means that r +- 0.5, for the code r of the clamped t', are at least the bound away.
    c - r is exact (Sterbenz), and so is 0.5 - |c - r| wherever it is below a quarter, hence bounds of
    a quarter or more count as near; so do infinite and NaN ones (inputs beyond float32's range). A t'
    clamped to 127 that is far has t64 > 127 - 0.5, the same code (likewise at -128)."""
    a = acc.to(tl.float32) * scale
    if HAS_BIAS:
        v = a + bias
        size = tl.abs(a) + tl.abs(bias)
    else:
        v = a
        size = tl.abs(a)
    if SILU:
        y = v / (1.0 + tl.exp(-v))
        ulps = 3.3 * size + (15.0 + 2.35 * tl.abs(v)) * tl.abs(y)
    else:
        y = v
        ulps = 3.0 * size + 2.0 * tl.abs(y)
    t = y * inv_scale
    bound = tl.abs(inv_scale) * (ulps * (ERROR_SAFETY * UNIT_ROUNDOFF_F32) + TINY)
    clamped = tl.minimum(tl.maximum(t, -128.0), 127.0)
    rounded = (clamped + 12582912.0) - 12582912.0  # 1.5 * 2**23: float32 rounds half to even
    far = (0.5 - tl.abs(clamped - rounded) >= bound) & (bound < 0.25)
    return rounded.to(tl.int8), ~far


@triton.jit
def _tap_weight(w_col, mask_d, k: tl.constexpr):
    """Weight column k as int32 (1, BLOCK_D); zero for k < 0, a tap that a kernel narrower than
    MAX_WIDTH lacks."""
    return tl.load(w_col + k, mask=mask_d & (k >= 0), other=0).to(tl.int32)[None, :]


@triton.jit
def _tap_inputs(x_base, state_base, src_t, mask_d, L, stride_xl, stride_sl, WIDTH: tl.constexpr,
                HAS_STATE: tl.constexpr):
    """``conv_window.causal_inputs`` as int32 (SUB_L, BLOCK_D)."""
    return causal_inputs(x_base, state_base, src_t, mask_d, L, stride_xl, stride_sl, WIDTH, HAS_STATE).to(tl.int32)


@triton.jit
def _int8_causal_conv1d_kernel(
    x_ptr, w_ptr, dequant_scale_ptr, bias_ptr, out_inv_scale_ptr, state_ptr, out_ptr, final_ptr,
    L, D, stride_xb, stride_xl, stride_wd, stride_sb, stride_sl, stride_ob, stride_ol,
    WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr, HAS_STATE: tl.constexpr,
    WRITE_FINAL: tl.constexpr, BLOCK_L: tl.constexpr, SUB_L: tl.constexpr, BLOCK_D: tl.constexpr,
    FIX_NEAR: tl.constexpr = True,
):
    """With WRITE_FINAL (L >= WIDTH - 1), the programs holding the last WIDTH - 1 steps also store their
    inputs as the final state, contiguous (B, WIDTH - 1, D): a copy launched on its own would cost a
    kernel per layer. FIX_NEAR=False keeps float32's codes everywhere (off by one near a rounding
    boundary at times): for the tests and timings that show what the float64 fallback does and costs."""
    batch = tl.program_id(0)
    start = tl.program_id(1) * BLOCK_L
    offs_d = tl.program_id(2) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    x_base = x_ptr + batch * stride_xb + offs_d[None, :]
    state_base = state_ptr + batch * stride_sb + offs_d[None, :]
    out_base = out_ptr + batch * stride_ob + offs_d[None, :]

    # Four taps (MAX_WIDTH), right-aligned: tap j multiplies x[t - 3 + j] by weight column j + WIDTH - 4,
    # so a narrower kernel's first taps are zero (and their loads wasted). Held for the whole program.
    w_col = w_ptr + offs_d * stride_wd
    w0 = _tap_weight(w_col, mask_d, WIDTH - 4)
    w1 = _tap_weight(w_col, mask_d, WIDTH - 3)
    w2 = _tap_weight(w_col, mask_d, WIDTH - 2)
    w3 = _tap_weight(w_col, mask_d, WIDTH - 1)
    scale32 = tl.load(dequant_scale_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)[None, :]
    bias32 = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)[None, :]  # unread without a bias
    inv_scale = tl.load(out_inv_scale_ptr)
    inv_scale32 = inv_scale.to(tl.float32)

    for t0 in range(start, tl.minimum(start + BLOCK_L, L), SUB_L):
        offs_t = t0 + tl.arange(0, SUB_L)
        acc = w0 * _tap_inputs(x_base, state_base, offs_t - 3, mask_d, L, stride_xl, stride_sl, WIDTH, HAS_STATE)
        acc += w1 * _tap_inputs(x_base, state_base, offs_t - 2, mask_d, L, stride_xl, stride_sl, WIDTH, HAS_STATE)
        acc += w2 * _tap_inputs(x_base, state_base, offs_t - 1, mask_d, L, stride_xl, stride_sl, WIDTH, HAS_STATE)
        x_now = _tap_inputs(x_base, state_base, offs_t, mask_d, L, stride_xl, stride_sl, WIDTH, HAS_STATE)
        acc += w3 * x_now
        if WRITE_FINAL:
            if t0 + SUB_L > L - (WIDTH - 1):  # a sub-tile holding some of the last steps (the others skip)
                step = offs_t - (L - (WIDTH - 1))  # the step's place in the final state, if it has one
                tl.store(final_ptr + batch * (WIDTH - 1) * D + step[:, None] * D + offs_d[None, :], x_now.to(tl.int8),
                         mask=((step >= 0) & (offs_t < L))[:, None] & mask_d[None, :])
        codes, near = _float32_codes(acc, scale32, bias32, inv_scale32, HAS_BIAS, SILU)
        if FIX_NEAR:
            if tl.max(near.to(tl.int32)) > 0:
                # float64 scale and bias read again here, not held: registers for the common case
                scale = tl.load(dequant_scale_ptr + offs_d, mask=mask_d, other=0.0)[None, :]
                bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0)[None, :]
                exact = int8_conv_epilogue(acc, scale, bias, inv_scale, HAS_BIAS, SILU)
                codes = tl.where(near, exact, codes)
        tl.store(out_base + offs_t[:, None] * stride_ol, codes, mask=(offs_t < L)[:, None] & mask_d[None, :])


def prefill_tiling(seq_len: int, channels: int, device: torch.device) -> dict:
    """The kernel's BLOCK_L (steps a program walks), SUB_L (steps of a sub-tile, the float64 fallback's
    unit), BLOCK_D and launch options. GPU: 4 steps x 64 channels in one warp, one sub-tile a program.
    Session 5 timed 12 tilings on an H200 and took 4 x 128 (34.1 us at (1, 2048, 5120) where the float64
    kernel took 60 us; a 64-step walk in 1 x 128 sub-tiles: 464 us at (16, 2048, 5120) but 41 us at
    batch 1); session 7 timed 8 more in one run, every one exact, and 4 x 64 was the fastest at each
    shape: 32.9 against 35.1 us at (1, 2048, 5120), 493.4 against 512.2 at (16, 2048, 5120), 12.3 against
    13.8 at (1, 2048, 1536) (a sub-tile of half the values takes the float64 path about half as often).
    CPU (the interpreter): one sub-tile per program and few programs, since each op costs the same
    whatever its size."""
    if device.type == "cuda":
        return dict(BLOCK_L=4, SUB_L=4, BLOCK_D=64, num_warps=1)
    block_l = min(64, triton.next_power_of_2(seq_len))
    return dict(BLOCK_L=block_l, SUB_L=block_l, BLOCK_D=min(256, triton.next_power_of_2(channels)))


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
    write_final = seq_len >= width - 1  # else the state's own steps are part of the final state
    final_state = (torch.empty(batch, width - 1, channels, dtype=torch.int8, device=device) if write_final
                   else last_conv_inputs(x, width, initial_state))
    if out.numel() == 0:
        return out, final_state
    state = initial_state if initial_state is not None else out  # not read without HAS_STATE
    tiling = prefill_tiling(seq_len, channels, device)
    grid = (batch, triton.cdiv(seq_len, tiling["BLOCK_L"]), triton.cdiv(channels, tiling["BLOCK_D"]))
    _int8_causal_conv1d_kernel[grid](
        x, weight, dequant_scale, bias if bias is not None else dequant_scale, out_inv_scale, state, out,
        final_state, seq_len, channels, x.stride(0), x.stride(1), weight.stride(0), state.stride(0),
        state.stride(1), out.stride(0), out.stride(1),
        WIDTH=width, HAS_BIAS=bias is not None, SILU=silu, HAS_STATE=initial_state is not None,
        WRITE_FINAL=write_final, **tiling, **EXACT_FP_LAUNCH,
    )
    return out, final_state
