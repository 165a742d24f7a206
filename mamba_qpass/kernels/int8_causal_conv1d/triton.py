"""Triton depthwise causal conv1d on int8 codes, matching ``int8_causal_conv1d_ref`` code for code.

The epilogue runs in float32, and in float64 only where float32 could round to a different code.
Codes change only at the half-integers -127.5 .. 126.5. So for each value the kernel computes t32, the
float32 value that is rounded, and a bound on its distance from the float64 value t64 (derived in
``_float32_codes``). A value at least that bound away from every half-integer rounds to the same code
in both; a value nearer (about 1e-4 of them on realistic data) takes the code of the float64 epilogue
shared with the one-token kernels (``conv_window.int8_conv_epilogue``, the reference's arithmetic).

A program walks BLOCK_L time steps of BLOCK_D channels one step (a row) at a time, four steps to a
loop iteration: it loads each input row once, adds it to the partial window sums it enters, finishes
one of them and stores its codes, noting the steps that hold a near value. After the walk, only those
steps are done again, every value of the step in float64, and their codes stored over float32's (Triton
has no per-value branches). The per-channel weights, scales and bias, and the float32 epilogue's
constants, are made once per program. ``prefill_tiling`` holds the sizes.

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
from mamba_qpass.kernels.fast_math import LOG2_E
from mamba_qpass.kernels.quant_math import EXACT_FP_LAUNCH

UNIT_ROUNDOFF_F32 = tl.constexpr(2.0**-24)
ERROR_SAFETY = tl.constexpr(4.0)  # room for the neglected terms of second order and for float64's own error
TINY = tl.constexpr(2.0**-100)  # absolute error in y from underflow: a flushed subnormal, exp(-v) past float32
# The bound's coefficients, in units of ERROR_SAFETY * UNIT_ROUNDOFF_F32 (derived in _float32_codes)
INPUT_ERROR = tl.constexpr(2.2)  # on |acc * S * I| + |Bb * I|: the error in v I
RELATIVE_ERROR = tl.constexpr(15.4)  # on |t'|: SiLU's exp, 1 + exp, rsqrt, its square, the product
EXPONENT_ERROR = tl.constexpr(3.4)  # on |v'| |t'|: exp's error growing with its argument


@triton.jit
def _epilogue_constants(scale, bias, inv_scale, HAS_BIAS: tl.constexpr, SILU: tl.constexpr):
    """The float32 constants of ``_float32_codes``, once per program, from the float64 per-channel ``scale``
    and ``bias`` (1, BLOCK_D) and the scalar ``inv_scale``: (scaled, offset, exponent, per_acc, floor,
    per_v), each rounded once from float64."""
    scaled = (scale * inv_scale).to(tl.float32)
    if HAS_BIAS:
        offset = (bias * inv_scale).to(tl.float32)
    else:
        offset = tl.zeros_like(scaled)
    unit = ERROR_SAFETY * UNIT_ROUNDOFF_F32
    inv_magnitude = tl.abs(inv_scale.to(tl.float32))
    per_acc = (INPUT_ERROR * unit) * tl.abs(scaled)
    floor = (INPUT_ERROR * unit) * tl.abs(offset) + inv_magnitude * TINY
    exponent = 0.0
    per_v = 0.0
    if SILU:
        exponent = ((1.0 / inv_scale) * -LOG2_E).to(tl.float32)
        per_v = (EXPONENT_ERROR * unit) / inv_magnitude
    return scaled, offset, exponent, per_acc, floor, per_v


@triton.jit
def _float32_codes(acc, scaled, offset, exponent, per_acc, floor, per_v, SILU: tl.constexpr):
    """(codes, near): ``int8_conv_epilogue`` in float32 with the output scale folded in, and where its codes
    may differ from float64's.

    Exact values, for the float64 scale S, bias Bb and inverse output scale I: v = acc * S + Bb,
    y = SiLU(v) (or v), t = y * I, the value rounded to a code. In float32, with u = 2**-24 and primes for
    computed values (``_epilogue_constants``: scaled = S I, offset = Bb I, exponent = -log2(e) / I, each
    rounded once):
      v I:  vi' = fl(acc * scaled + offset), one fused multiply-add (acc is exact in float32, |acc| <= 4 *
            128 * 128). With the roundings of scaled and offset, |vi' - v I| <= 2u (|acc scaled| + |offset|)
            (1 + u). Let v' = vi' / I, the v at which SiLU is then evaluated.
      exp:  e' = 2**fl(vi' * exponent), the argument -v' log2(e) times two roundings. On the GPU ex2.approx,
            the code of CUDA's __expf, which the CUDA guide bounds by 2 + 1.173 |v| ulp with the one
            rounding of __expf's own product; the second rounding adds |v'| u. Interpreted, numpy's exp2
            (a few ulp, taken as 4) of the twice-rounded argument: (8 + 2 |v'|) u. An ulp is at most 2u
            relative, so e' errs by at most (8 + 3.4 |v'|) u relative.
      y I:  t' = fl(vi' * r'**2) for r' = rsqrt(1 + e'): 1 + e' adds u; r' errs by 2**-22.9 < 2.2u (the GPU's
            rsqrt.approx.ftz, by the PTX ISA; interpreted, 1 / sqrt rounds twice), twice that in r'**2 plus
            its rounding, 5.4u; the product u. With e''s error, which 1 / (1 + e) passes on at most whole:
            |t' - I SiLU(v')| <= (15.4 + 3.4 |v'|) u |t'|, to first order.
      SiLU's derivative lies in [-0.1, 1.1], so |I SiLU(v') - I SiLU(v)| <= 1.1 |vi' - v I|.
    Together |t' - t| <= u (2.2 (|acc scaled| + |offset|) + (15.4 + 3.4 |v'|) |t'|), and without SiLU (t' =
    vi') u 2.2 (|acc scaled| + |offset|). The float64 epilogue errs by the same count of roundings in
    2**-53, which ERROR_SAFETY covers with the neglected u**2 terms and the bound's own float32 roundings
    (a few u, relative, all its terms being positive). On 2e7 random values (acc, scales, biases and
    inverse scales spread over decades) numpy's float32, as the interpreter computes, stays below 0.90 of
    the bound without the factor, 0.33 with SiLU. Where exp overflows (v' < -88.7: 1 + e' = inf,
    r' = 0, t' = -0) or a value underflows, the error in y is absolute and below 2**-120, hence the
    |I| TINY in ``floor`` (where that underflows, |I| < 2**-26, so such a t is below 2**-146 and t' is 0 or
    another value far below a half).

    Far (not near) means the float32 sum |c - r| + bound is below a half, for the clamped c of t' and its
    code r: then t lies within a half of r, strictly, and rounds to r too (a t' clamped to 127 that is far
    has t > 127 - 0.5, the same code; likewise at -128). c - r is exact (Sterbenz), and a rounded sum at
    least a half whenever the exact one is, so the test errs only towards near; infinite and NaN bounds
    (inputs beyond float32's range) count as near, and so does a NaN t' (the clamp keeps it NaN). The
    codes are the low bytes of c + 1.5 * 2**23 (``quant_math.tl_round_half_even_clamp_int8``), a
    conversion saved."""
    accf = acc.to(tl.float32)
    vi = tl.fma(accf, scaled, offset)
    bound = tl.fma(per_acc, tl.abs(accf), floor)
    if SILU:
        root = tl.math.rsqrt(1.0 + tl.exp2(vi * exponent))
        t = vi * (root * root)
        growth = tl.fma(tl.abs(vi), per_v, RELATIVE_ERROR * ERROR_SAFETY * UNIT_ROUNDOFF_F32)
        bound = tl.fma(growth, tl.abs(t), bound)
    else:
        t = vi
    # a NaN t' stays NaN through the clamp, so the test below finds it near
    clamped = tl.minimum(tl.maximum(t, -128.0, propagate_nan=tl.PropagateNan.ALL), 127.0,
                         propagate_nan=tl.PropagateNan.ALL)
    shifted = clamped + 12582912.0  # 1.5 * 2**23: float32 rounds half to even
    rounded = shifted - 12582912.0
    near = ~(tl.abs(clamped - rounded) + bound < 0.5)
    return shifted.to(tl.int32, bitcast=True).to(tl.int8), near


@triton.jit
def _bit_or(a, b):
    return a | b


STEPS_A_GROUP = tl.constexpr(4)


@triton.jit
def _group_rows(x_base, first, stride_xl, mask):
    """The inputs of a group's STEPS_A_GROUP (4) steps from ``first`` on, one row each."""
    rows = x_base + first * stride_xl
    return (tl.load(rows, mask=mask, other=0), tl.load(rows + stride_xl, mask=mask, other=0),
            tl.load(rows + 2 * stride_xl, mask=mask, other=0), tl.load(rows + 3 * stride_xl, mask=mask, other=0))


@triton.jit
def _step(x, p0, p1, p2, w0, w1, w2, w3, near_steps, out_ptrs, mask, epilogue, SILU: tl.constexpr,
          FIX_NEAR: tl.constexpr):
    """One step of the walk: its inputs ``x`` complete the window ending there (p0 holds the window's sum
    over the steps before) and enter the three after it; the step's codes are stored, and its bit shifted
    into ``near_steps`` from the right, set where a value is near a boundary. Returns the new (p0, p1, p2,
    near_steps)."""
    x = x.to(tl.int32)
    codes, near = _float32_codes(p0 + w3 * x, *epilogue, SILU)
    tl.store(out_ptrs, codes, mask=mask)
    if FIX_NEAR:
        # a constant shift, where setting bit ``step`` would build 1 << step at every step
        near_steps = near_steps * 2 + near.to(tl.int32)
    return p1 + w2 * x, p2 + w1 * x, w0 * x, near_steps


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
    scale = tl.load(dequant_scale_ptr + offs_d, mask=mask_d, other=0.0)[None, :]
    bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0)[None, :]  # unread without a bias
    inv_scale = tl.load(out_inv_scale_ptr)
    scaled, offset, exponent, per_acc, floor, per_v = _epilogue_constants(scale, bias, inv_scale, HAS_BIAS, SILU)

    # Each input enters the four windows that hold it once loaded: p0, p1, p2 carry the sums of the
    # windows ending at t, t + 1, t + 2 over the steps before t, so a step loads and widens one row.
    # (Carrying the inputs instead lets LLVM narrow them back to int8 and widen them at every use.)
    x0 = _history_row(x_base, state_base, start - 3, mask_d, L, stride_xl, stride_sl, WIDTH, HAS_STATE)
    x1 = _history_row(x_base, state_base, start - 2, mask_d, L, stride_xl, stride_sl, WIDTH, HAS_STATE)
    x2 = _history_row(x_base, state_base, start - 1, mask_d, L, stride_xl, stride_sl, WIDTH, HAS_STATE)
    p0 = w0 * x0 + w1 * x1 + w2 * x2
    p1 = w0 * x1 + w1 * x2
    p2 = w0 * x2
    # Bit j of a value's near_steps: step end - 1 - j has it near a rounding boundary. Collected per value
    # and resolved once per program, after the walk: a per-step test of the whole row would cost a
    # reduction across the warp and a branch at every step.
    near_steps = tl.zeros((1, BLOCK_D), dtype=tl.int32)
    epilogue = (scaled, offset, exponent, per_acc, floor, per_v)
    mask = mask_d[None, :]
    if (end - start == BLOCK_L) & (tl.constexpr(BLOCK_L) % STEPS_A_GROUP == 0):
        # A whole block (every program but a sequence's last, where BLOCK_L does not divide L): groups of
        # steps unrolled, each group's rows loaded while the group before computes (the last group reloads
        # its own), and the loop's own instructions (addresses, counter, moving the partial sums between
        # registers) paid once a group.
        row0, row1, row2, row3 = _group_rows(x_base, start, stride_xl, mask)
        for group in range(start, end, STEPS_A_GROUP):
            following = tl.minimum(group + STEPS_A_GROUP, end - STEPS_A_GROUP)
            next0, next1, next2, next3 = _group_rows(x_base, following, stride_xl, mask)
            out = out_base + group * stride_ol
            p0, p1, p2, near_steps = _step(row0, p0, p1, p2, w0, w1, w2, w3, near_steps, out, mask,
                                           epilogue, SILU, FIX_NEAR)
            p0, p1, p2, near_steps = _step(row1, p0, p1, p2, w0, w1, w2, w3, near_steps,
                                           out + stride_ol, mask, epilogue, SILU, FIX_NEAR)
            p0, p1, p2, near_steps = _step(row2, p0, p1, p2, w0, w1, w2, w3, near_steps,
                                           out + 2 * stride_ol, mask, epilogue, SILU, FIX_NEAR)
            p0, p1, p2, near_steps = _step(row3, p0, p1, p2, w0, w1, w2, w3, near_steps,
                                           out + 3 * stride_ol, mask, epilogue, SILU, FIX_NEAR)
            row0, row1, row2, row3 = next0, next1, next2, next3
    else:
        # Step by step, each step's row loaded a step ahead (the last step reloads its own).
        x_next = tl.load(x_base + start * stride_xl, mask=mask, other=0)
        for t in range(start, end):
            row = x_next
            x_next = tl.load(x_base + tl.minimum(t + 1, end - 1) * stride_xl, mask=mask, other=0)
            p0, p1, p2, near_steps = _step(row, p0, p1, p2, w0, w1, w2, w3, near_steps,
                                           out_base + t * stride_ol, mask, epilogue, SILU, FIX_NEAR)
    if FIX_NEAR:
        # Steps with a near value, rare (about one in 10**4 values on realistic data), are done again in
        # float64 (the reference's arithmetic), every value of the step, and stored over float32's codes.
        steps = tl.reduce(tl.reshape(near_steps, (BLOCK_D,)), 0, _bit_or)
        if steps != 0:
            # float64 scale and bias read again, not held through the walk: registers for the common case
            scale = tl.load(dequant_scale_ptr + offs_d, mask=mask_d, other=0.0)[None, :]
            bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0)[None, :]
            # the window summed again step by step, not by conv_window.add_causal_window: its loads' layout
            # costs the whole kernel registers (253 instead of 168 at 32 x 256)
            for t in range(start, end):
                if (steps >> (end - 1 - t)) & 1:
                    acc = w0 * _history_row(x_base, state_base, t - 3, mask_d, L, stride_xl, stride_sl, WIDTH, HAS_STATE)
                    acc += w1 * _history_row(x_base, state_base, t - 2, mask_d, L, stride_xl, stride_sl, WIDTH, HAS_STATE)
                    acc += w2 * _history_row(x_base, state_base, t - 1, mask_d, L, stride_xl, stride_sl, WIDTH, HAS_STATE)
                    acc += w3 * _history_row(x_base, state_base, t, mask_d, L, stride_xl, stride_sl, WIDTH, HAS_STATE)
                    exact = int8_conv_epilogue(acc, scale, bias, inv_scale, HAS_BIAS, SILU)
                    tl.store(out_base + t * stride_ol, exact, mask=mask)
    if WRITE_FINAL:
        if end == L:  # the last WIDTH - 1 steps, all in x as L >= WIDTH - 1, copied again from the cache
            final_base = final_ptr + batch * (WIDTH - 1) * D + offs_d[None, :]
            for k in tl.static_range(WIDTH - 1):
                row = tl.load(x_base + (L - (WIDTH - 1) + k) * stride_xl, mask=mask_d[None, :])
                tl.store(final_base + k * D, row, mask=mask_d[None, :])


MAX_BLOCK_L = 32  # steps a program walks: one bit each in near_steps, an int32
# From this many tokens (batch rows x steps) the GPU tiling takes longer walks over wider rows.
_MANY_TOKENS = 8 * 2048


def prefill_tiling(batch: int, seq_len: int, channels: int, device: torch.device) -> dict:
    """The kernel's BLOCK_L (steps a program walks, one row of BLOCK_D channels at a time, the float64
    fallback's unit) and BLOCK_D, and launch options. GPU: one warp a program, 2 or 4 consecutive channels
    a thread (a 2- or 4-byte load a row). Timed on an H200 (fifteenth session, ``sweep_tilings.py``, 7
    tilings of the walk in steps of four, each exact): for one sequence 16 steps of 64 channels, 20.2 us
    at (1, 2048, 5120) against 20.8 for 16 x 128 and 28.9 for 32 x 256, and 8.1 against 9.1 us at (1, 2048,
    1536); with many rows of tokens 32 steps of 128 channels, 237 against 313 us for 32 x 256 at (16, 2048,
    5120). Compiled for sm_90, with SiLU, a step takes 29.2 instructions a value at 128 channels (96
    registers); before the walk in steps of four (the output scale folded in, the near test after the
    walk) it took 36.
    CPU (the interpreter): few programs, since each op costs the same whatever its size."""
    if device.type == "cuda":
        if batch * seq_len >= _MANY_TOKENS:
            return dict(BLOCK_L=32, BLOCK_D=128, num_warps=1)
        return dict(BLOCK_L=16, BLOCK_D=64, num_warps=1)
    return dict(BLOCK_L=min(MAX_BLOCK_L, triton.next_power_of_2(seq_len)), BLOCK_D=min(256, triton.next_power_of_2(channels)))


def int8_causal_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    dequant_scale: torch.Tensor,
    bias: torch.Tensor | None,
    out_inv_scale: torch.Tensor,
    silu: bool = True,
    initial_state: torch.Tensor | None = None,
    tiling: dict | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton ``int8_causal_conv1d_ref``: x int8 (B, L, D) with a contiguous last dim (time and batch
    strides are free), weight int8 (D, W) with W <= 4, float64 (D,) dequant_scale and bias, float64
    scalar out_inv_scale, initial_state int8 (B, W-1, D) or None. Returns ``(out, final_state)``: int8
    (B, L, D) contiguous, and the codes of the last W-1 inputs. ``tiling`` replaces ``prefill_tiling``'s
    (BLOCK_L, BLOCK_D and launch options; ``benchmarks/sweep_tilings.py`` times the candidates)."""
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
    tiling = tiling or prefill_tiling(batch, seq_len, channels, device)
    if tiling["BLOCK_L"] > MAX_BLOCK_L:
        raise ValueError(f"int8 conv tiling: BLOCK_L must be at most {MAX_BLOCK_L}, got {tiling}")
    grid = (batch, triton.cdiv(seq_len, tiling["BLOCK_L"]), triton.cdiv(channels, tiling["BLOCK_D"]))
    _int8_causal_conv1d_kernel[grid](
        x, weight, dequant_scale, bias if bias is not None else dequant_scale, out_inv_scale, state, out,
        final_state, seq_len, channels, x.stride(0), x.stride(1), weight.stride(0), state.stride(0),
        state.stride(1), out.stride(0), out.stride(1),
        WIDTH=width, HAS_BIAS=bias is not None, SILU=silu, HAS_STATE=initial_state is not None,
        WRITE_FINAL=write_final, **tiling, **EXACT_FP_LAUNCH, **dependent_launch(device, batch * seq_len),
    )
    return out, final_state
