"""Triton depthwise causal conv1d on int8 codes, matching ``int8_causal_conv1d_ref`` code for code.

The epilogue runs in float32, and in float64 only where float32 could round to a different code.
Codes change only at the half-integers -127.5 .. 126.5. So for each value the kernel computes t32, the
float32 value that is rounded, and a bound on its distance from the float64 value t64 (derived in
``_float32_codes``). A value at least that bound away from every half-integer rounds to the same code
in both; a value nearer (about 1e-4 of them on realistic data) takes the code of the float64 epilogue
shared with the one-token kernels (``conv_window.int8_conv_epilogue``, the reference's arithmetic).

A program walks BLOCK_L time steps of BLOCK_D channels one step (a row) at a time: it loads each input
row once, adds it to the partial window sums it enters, and finishes one of them. Only a row holding a
near value runs the float64 epilogue, for all its values (a branch on the whole row, as Triton has no
per-value branches), keeping the near ones. The per-channel weights, scales and bias are loaded once
per program. ``prefill_tiling`` holds the sizes.

Codes can then differ from the reference only where float64 exp rounds differently in the last bit
and the value lies within ~1e-15 (relative) of a rounding boundary; without SiLU they are identical.
"""

import torch
import triton
import triton.language as tl

from mamba_qpass.kernels.conv_window import (
    causal_inputs, check_int8_conv_inputs, int8_conv_epilogue, last_conv_inputs,
)
from mamba_qpass.kernels.dependent_launch import dependent_launch, wait_for_earlier_kernels
from mamba_qpass.kernels.quant_math import EXACT_FP_LAUNCH

UNIT_ROUNDOFF_F32 = tl.constexpr(2.0**-24)
ERROR_SAFETY = tl.constexpr(4.0)  # room for the neglected terms of second order and for float64's own error
TINY = tl.constexpr(2.0**-100)  # absolute error in y from underflow: a flushed subnormal, exp(-v) past float32
NEG_LOG2_E = tl.constexpr(-1.4426950408889634)  # exp(-v) = 2**(v * NEG_LOG2_E), the product as tl.exp forms it


@triton.jit
def _bound_terms(bias, inv_scale, HAS_BIAS: tl.constexpr, SILU: tl.constexpr):
    """(per_a, floor): the parts of ``_float32_codes``'s bound that do not change along time, computed
    once per program, so that a value's bound is ``per_a * |a'| + floor + growth * |t'|`` (three FMAs);
    ``bias`` float32 (1, BLOCK_D), ``inv_scale`` float32."""
    scale_err = tl.abs(inv_scale) * (ERROR_SAFETY * UNIT_ROUNDOFF_F32)
    per_a = (3.3 if SILU else 3.0) * scale_err
    floor = tl.zeros_like(bias) + tl.abs(inv_scale) * TINY
    if HAS_BIAS:
        floor += per_a * tl.abs(bias)
    return per_a, floor


@triton.jit
def _float32_codes(acc, scale, bias, inv_scale, per_a, floor, HAS_BIAS: tl.constexpr, SILU: tl.constexpr):
    """(codes, near): ``int8_conv_epilogue`` in float32, and where its codes may differ from float64's.

    With u = 2**-24 and primes for the float32 values (scale', bias', inv' rounded from float64), the
    exact values a = acc * scale, v = a + bias, y = SiLU(v), t = y * inv satisfy, to first order in u:
      a'  = fl(acc * scale'): acc is exact in float32 (|acc| <= 4 * 128 * 128), two roundings: 2u |a|
      v'  = fl(a' + bias'): those plus bias' and the sum's roundings, 3u (|a'| + |bias'|), the sum of
            magnitudes since a + bias may cancel
      y'  = SiLU, v' r**2 for r = rsqrt(1 + exp(-v')): as SiLU's derivative lies in [-0.1, 1.1], 1.1
            times the error in v', plus y' times the relative errors of exp, 1 + exp, r, r**2 and the
            product. exp(-v') is 2**fl(v' * -log2(e)): on the GPU ex2.approx.ftz of the product, the
            code of CUDA's __expf, which the CUDA guide bounds by 2 + 1.173 |v| ulp (a 2**x below
            2**-126 flushed to zero leaves 1 + exp as it is), and, interpreted, numpy's exp2 (a few
            ulp, taken as 4) of a product whose rounding and float32 log2(e) add 1.3 |v| u; an ulp is at
            most 2u relative, so exp errs by <= (8 + 2.35 |v'|) u. 1 + exp adds u; r errs by 2**-22.9
            < 2.2u (the GPU's rsqrt.approx.ftz, by the PTX ISA; interpreted, 1 / sqrt rounds twice),
            twice that in r**2 plus its rounding, 5.4u; the product u
      t'  = fl(y' * inv'): inv's rounding and the product's, 2u |t'|
    giving |t' - t| <= u |inv'| (3.3 (|a'| + |bias'|) + (17.5 + 2.35 |v'|) |y'|), and without SiLU
    u |inv'| (3 (|a'| + |bias'|) + 2 |y'|). The float64 epilogue errs by the same count of roundings
    in 2**-53, which the safety factor covers with the neglected u**2 terms (on 2e7 random values, acc,
    scales, biases and inverse scales spread over decades, the interpreter's error stays below 0.84 of
    the bound without the factor, 0.34 with SiLU). Where exp overflows (v' < -88.7: 1 + exp = inf,
    r = 0, y' = -0) or a value underflows, the error in y is absolute and below 2**-120, hence the
    TINY term.

    The bound is that times the safety factor, computed as ``per_a * |a'| + floor + growth * |t'|``
    (``_bound_terms``): |inv'| |y'| is |t'| within u, and the bound's own float32 roundings (a few u,
    relative, all its terms being positive) are as small, both inside the safety factor. Where
    |inv'| TINY underflows in ``floor`` (|inv'| < 2**-49), a t' with |t'| > 0.25, the only ones a
    bound below a quarter can leave near, has |y'| > 2**47, far from any underflow.

    Far (not near) means that r +- 0.5, for the code r of the clamped t', are at least the bound away.
    c - r is exact (Sterbenz), and so is 0.5 - |c - r| wherever it is below a quarter, hence bounds of
    a quarter or more count as near; so do infinite and NaN ones (inputs beyond float32's range). A t'
    clamped to 127 that is far has t64 > 127 - 0.5, the same code (likewise at -128). The codes are the
    low bytes of c + 1.5 * 2**23 (``quant_math.tl_round_half_even_clamp_int8``), a conversion saved."""
    a = acc.to(tl.float32) * scale
    if HAS_BIAS:
        v = a + bias
    else:
        v = a
    if SILU:
        root = tl.math.rsqrt(1.0 + tl.exp2(v * NEG_LOG2_E))
        y = v * (root * root)
        growth = tl.fma(tl.abs(v), 2.35 * ERROR_SAFETY * UNIT_ROUNDOFF_F32, 17.5 * ERROR_SAFETY * UNIT_ROUNDOFF_F32)
    else:
        y = v
        growth = 2.0 * ERROR_SAFETY * UNIT_ROUNDOFF_F32
    t = y * inv_scale
    bound = tl.fma(growth, tl.abs(t), tl.fma(per_a, tl.abs(a), floor))
    clamped = tl.minimum(tl.maximum(t, -128.0), 127.0)
    shifted = clamped + 12582912.0  # 1.5 * 2**23: float32 rounds half to even
    rounded = shifted - 12582912.0
    far = (0.5 - tl.abs(clamped - rounded) >= bound) & (bound < 0.25)
    return shifted.to(tl.int32, bitcast=True).to(tl.int8), ~far


@triton.jit
def _tap_weight(w_col, mask_d, k: tl.constexpr):
    """Weight column k as int32 (1, BLOCK_D); zero for k < 0, a tap that a kernel narrower than
    MAX_WIDTH lacks."""
    return tl.load(w_col + k, mask=mask_d & (k >= 0), other=0).to(tl.int32)[None, :]


@triton.jit
def _history_row(x_base, state_base, t, mask_d, L, stride_xl, stride_sl, WIDTH: tl.constexpr,
                 HAS_STATE: tl.constexpr):
    """The inputs at step t (before t = 0 from the state, ``conv_window.causal_inputs``) as int32
    (1, BLOCK_D)."""
    src_t = t + tl.zeros((1,), tl.int32)
    return causal_inputs(x_base, state_base, src_t, mask_d, L, stride_xl, stride_sl, WIDTH, HAS_STATE).to(tl.int32)


@triton.jit
def _int8_causal_conv1d_kernel(
    x_ptr, w_ptr, dequant_scale_ptr, bias_ptr, out_inv_scale_ptr, state_ptr, out_ptr, final_ptr,
    L, D, stride_xb, stride_xl, stride_wd, stride_sb, stride_sl, stride_ob, stride_ol,
    WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr, HAS_STATE: tl.constexpr,
    WRITE_FINAL: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr, FIX_NEAR: tl.constexpr = True,
    USE_GDC: tl.constexpr = False,
):
    """With WRITE_FINAL (L >= WIDTH - 1), the program holding the last steps also stores the last
    WIDTH - 1 inputs as the final state, contiguous (B, WIDTH - 1, D): a copy launched on its own would
    cost a kernel per layer. FIX_NEAR=False keeps float32's codes everywhere (off by one near a rounding
    boundary at times): for the tests and timings that show what the float64 fallback does and costs."""
    batch = tl.program_id(0)
    start = tl.program_id(1) * BLOCK_L
    end = tl.minimum(start + BLOCK_L, L)
    offs_d = tl.program_id(2) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    x_base = x_ptr + batch * stride_xb + offs_d[None, :]
    state_base = state_ptr + batch * stride_sb + offs_d[None, :]
    out_base = out_ptr + batch * stride_ob + offs_d[None, :]
    wait_for_earlier_kernels(USE_GDC)

    # Four taps (MAX_WIDTH), right-aligned: tap j multiplies x[t - 3 + j] by weight column j + WIDTH - 4,
    # so a narrower kernel's first taps are zero (and their products wasted). Held for the whole program.
    w_col = w_ptr + offs_d * stride_wd
    w0 = _tap_weight(w_col, mask_d, WIDTH - 4)
    w1 = _tap_weight(w_col, mask_d, WIDTH - 3)
    w2 = _tap_weight(w_col, mask_d, WIDTH - 2)
    w3 = _tap_weight(w_col, mask_d, WIDTH - 1)
    scale32 = tl.load(dequant_scale_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)[None, :]
    bias32 = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)[None, :]  # unread without a bias
    inv_scale = tl.load(out_inv_scale_ptr)
    inv_scale32 = inv_scale.to(tl.float32)
    per_a, floor = _bound_terms(bias32, inv_scale32, HAS_BIAS, SILU)

    # Each input enters the four windows that hold it once loaded: p0, p1, p2 carry the sums of the
    # windows ending at t, t + 1, t + 2 over the steps before t, so a step loads and widens one row.
    # (Carrying the inputs instead lets LLVM narrow them back to int8 and widen them at every use.)
    x0 = _history_row(x_base, state_base, start - 3, mask_d, L, stride_xl, stride_sl, WIDTH, HAS_STATE)
    x1 = _history_row(x_base, state_base, start - 2, mask_d, L, stride_xl, stride_sl, WIDTH, HAS_STATE)
    x2 = _history_row(x_base, state_base, start - 1, mask_d, L, stride_xl, stride_sl, WIDTH, HAS_STATE)
    p0 = w0 * x0 + w1 * x1 + w2 * x2
    p1 = w0 * x1 + w1 * x2
    p2 = w0 * x2
    # Each step's row is loaded a step ahead (the last step reloads its own), so its latency overlaps the
    # step before.
    x_next = tl.load(x_base + start * stride_xl, mask=mask_d[None, :], other=0)
    for t in range(start, end):
        x = x_next.to(tl.int32)
        x_next = tl.load(x_base + tl.minimum(t + 1, end - 1) * stride_xl, mask=mask_d[None, :], other=0)
        acc = p0 + w3 * x
        p0 = p1 + w2 * x
        p1 = p2 + w1 * x
        p2 = w0 * x
        codes, near = _float32_codes(acc, scale32, bias32, inv_scale32, per_a, floor, HAS_BIAS, SILU)
        if FIX_NEAR:
            if tl.max(near.to(tl.int32)) > 0:  # a branch on the whole row: Triton has no per-value ones
                # float64 scale and bias read again here, not held: registers for the common case
                scale = tl.load(dequant_scale_ptr + offs_d, mask=mask_d, other=0.0)[None, :]
                bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0)[None, :]
                exact = int8_conv_epilogue(acc, scale, bias, inv_scale, HAS_BIAS, SILU)
                codes = tl.where(near, exact, codes)
        tl.store(out_base + t * stride_ol, codes, mask=mask_d[None, :])
    if WRITE_FINAL:
        if end == L:  # the last WIDTH - 1 steps, all in x as L >= WIDTH - 1, copied again from the cache
            final_base = final_ptr + batch * (WIDTH - 1) * D + offs_d[None, :]
            for k in tl.static_range(WIDTH - 1):
                row = tl.load(x_base + (L - (WIDTH - 1) + k) * stride_xl, mask=mask_d[None, :])
                tl.store(final_base + k * D, row, mask=mask_d[None, :])


# From this many tokens (batch rows x steps) the GPU tiling takes longer walks over wider rows.
_MANY_TOKENS = 8 * 2048


def prefill_tiling(batch: int, seq_len: int, channels: int, device: torch.device) -> dict:
    """The kernel's BLOCK_L (steps a program walks, one row of BLOCK_D channels at a time, the float64
    fallback's unit) and BLOCK_D, and launch options. GPU: one warp a program, 4 or 8 consecutive channels
    a thread (a 4- or 8-byte load a row). Compiled for sm_90 a step takes 37 instructions a value at
    128 channels (98 registers) and 34 at 256 (166 registers), against 74 for the 4 x 64 sub-tiles of
    four overlapping tap loads that this walk replaced. Timed on an H200 (eighth session, 9 tilings, each
    exact): 16 steps of 128 channels were fastest for one sequence, 22.7 us at (1, 2048, 5120) against
    32.5 for the sub-tiles and 9.0 against 12.1 at (1, 2048, 1536); with many rows of tokens 32 steps of
    256 channels, 330.9 against 483.6 us at (16, 2048, 5120) (16 x 128: 355.9).
    CPU (the interpreter): few programs, since each op costs the same whatever its size."""
    if device.type == "cuda":
        if batch * seq_len >= _MANY_TOKENS:
            return dict(BLOCK_L=32, BLOCK_D=256, num_warps=1)
        return dict(BLOCK_L=16, BLOCK_D=128, num_warps=1)
    return dict(BLOCK_L=min(64, triton.next_power_of_2(seq_len)), BLOCK_D=min(256, triton.next_power_of_2(channels)))


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
    tiling = prefill_tiling(batch, seq_len, channels, device)
    grid = (batch, triton.cdiv(seq_len, tiling["BLOCK_L"]), triton.cdiv(channels, tiling["BLOCK_D"]))
    _int8_causal_conv1d_kernel[grid](
        x, weight, dequant_scale, bias if bias is not None else dequant_scale, out_inv_scale, state, out,
        final_state, seq_len, channels, x.stride(0), x.stride(1), weight.stride(0), state.stride(0),
        state.stride(1), out.stride(0), out.stride(1),
        WIDTH=width, HAS_BIAS=bias is not None, SILU=silu, HAS_STATE=initial_state is not None,
        WRITE_FINAL=write_final, **tiling, **EXACT_FP_LAUNCH, **dependent_launch(device, batch * seq_len),
    )
    return out, final_state
