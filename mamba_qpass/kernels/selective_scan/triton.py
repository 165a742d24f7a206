"""Triton selective scan (Mamba-1 S6) for ``selective_scan_ref`` and, given ``ScanInputScales``, for
``selective_scan_int8_ref`` (int8 u, delta, B, C, z dequantised in-kernel as ``code.to(fp32) * scale``).

One program owns a batch row, a block of channels and a segment of time, in one warp. Its tiles are
(time, state, channel) with channels across lanes: each thread holds a chunk of ``CHUNK`` steps for a
share of one channel's states, so the recurrence ``h -> decay*h + drive`` runs step by step in that
thread's registers (``tl.associative_scan`` over the chunk's time axis, which lies within the thread),
and only the output's sum over states crosses a few lanes. A chunk's decays ``exp2(delta*A*log2 e)`` and
drives ``(delta*u)*B`` are computed at once, and the next chunk's inputs are loaded while the current one
computes.

A long sequence with few rows would leave most SMs idle, so time is split into segments (``scan_tiling``
decides): a first launch summarises every segment but the last (its final state from a zero state, and
its summed delta, since the decays over a segment multiply to ``exp2(A*log2 e * sum delta)``); the second
scans each segment from the state its predecessors' summaries give, and writes the outputs.

Outputs match the references to float32 rounding, not bit for bit: exp and log are approximate on GPU,
each step is one fused multiply-add and segments are composed through their summaries. The int8 and
float variants run the same operations on the same float32 values, so they agree bit for bit with each
other, provided both use the same tiling: it is a fixed rule of the shape (``scan_tiling``), never
autotuned.
"""

import torch
import triton
import triton.language as tl

from mamba_qpass.kernels.checks import check_shape, check_tensor, check_unit_last_stride
from mamba_qpass.kernels.dependent_launch import dependent_launch, wait_for_earlier_kernels
from mamba_qpass.kernels.fast_math import LOG2_E, fast_math, log2_f32, reciprocal_f32
from mamba_qpass.kernels.quant_math import EXACT_FP_LAUNCH
from mamba_qpass.kernels.selective_scan.reference import ScanInputScales, scan_out_dtype, scan_scales_tensor

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_STATE = 256


# Below it, softplus(x) = log1p(e) with e = exp(x) < 1/16 is summed as its series to e**6 (truncation under
# e**6 / 7 < 1e-8 of the value); above it 1 + e >= 1.0625, whose log the approximate log2 gives within 3e-6.
_SOFTPLUS_SERIES_BELOW = tl.constexpr(0.0625)


@triton.jit
def _softplus(x, FAST_MATH: tl.constexpr):
    """torch's softplus: log1p(exp(x)), or x above the threshold 20 (``fast_math`` for the log)."""
    e = tl.exp2(x * LOG2_E)
    series = e * tl.fma(e, tl.fma(e, tl.fma(e, tl.fma(e, tl.fma(e, -1.0 / 6.0, 0.2), -0.25), 1.0 / 3.0), -0.5), 1.0)
    log1p_e = tl.where(e < _SOFTPLUS_SERIES_BELOW, series, log2_f32(1.0 + e, FAST_MATH) * 0.6931471805599453)
    return tl.where(x > 20.0, x, log1p_e)


@triton.jit
def _silu_gate(y, z, FAST_MATH: tl.constexpr):
    """``y * silu(z)``: the output gate of the scan and of the decode step."""
    return y * (z * reciprocal_f32(1.0 + tl.exp2(z * -LOG2_E), FAST_MATH))


@triton.jit
def advance_state(decay, state, drive):
    """One step of the recurrence, ``decay * h + drive``, rounded once (a fused multiply-add). The prefill
    scan and the decode step both take it, with ``drive = (delta * u) * B``, so decoding from a prefill's
    final state continues the arithmetic the prefill itself would have done."""
    return tl.fma(decay, state, drive)


@triton.jit
def _then(decay_first, drive_first, decay_next, drive_next):
    """Composition of two affine state updates: h -> decay_first*h + drive_first, then the next."""
    return decay_first * decay_next, advance_state(decay_next, drive_first, drive_next)


@triton.jit
def _load_chunk(u_ptrs, delta_ptrs, z_ptrs, B_ptrs, C_ptrs, t, t_end, mask_d, mask_n, HAS_Z: tl.constexpr):
    """One chunk's raw inputs: u, delta, z (CHUNK, BLOCK_D) and B, C (CHUNK, BLOCK_N); zeros from t_end."""
    mask_t = t < t_end
    mask_td = mask_t[:, None] & mask_d[None, :]
    mask_tn = mask_t[:, None] & mask_n[None, :]
    u = tl.load(u_ptrs, mask=mask_td, other=0)
    dt = tl.load(delta_ptrs, mask=mask_td, other=0)
    if HAS_Z:
        z = tl.load(z_ptrs, mask=mask_td, other=0)
    else:
        z = u
    B_t = tl.load(B_ptrs, mask=mask_tn, other=0)
    C_t = tl.load(C_ptrs, mask=mask_tn, other=0)
    return u, dt, z, B_t, C_t


@triton.jit
def _selective_scan_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, delta_bias_ptr, init_ptr, scales_ptr,
    out_ptr, state_ptr, seg_state_ptr, seg_delta_ptr,
    L, DIM, N, SEGMENT, SEGMENTS,
    stride_ub, stride_ul, stride_db, stride_dl, stride_Bb, stride_Bl, stride_Cb, stride_Cl,
    stride_zb, stride_zl, stride_Ad, stride_ib, stride_id, stride_ob, stride_ol,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DELTA_BIAS: tl.constexpr,
    DELTA_SOFTPLUS: tl.constexpr, HAS_INIT: tl.constexpr, INT8_INPUTS: tl.constexpr, SUMMARY: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, CHUNK: tl.constexpr, FAST_MATH: tl.constexpr,
    USE_GDC: tl.constexpr = False,
):
    """With SUMMARY, the program scans its segment of time from a zero state and writes only that
    segment's final state and its summed delta; otherwise it starts from the state the earlier segments'
    summaries give and writes the outputs (and, for the last segment, the final state)."""
    batch = tl.program_id(0)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    segment = tl.program_id(2)
    offs_n = tl.arange(0, BLOCK_N)
    offs_t = tl.arange(0, CHUNK)
    mask_d = offs_d < DIM
    mask_n = offs_n < N
    mask_nd = mask_n[:, None] & mask_d[None, :]
    t_start = segment * SEGMENT
    t_end = tl.minimum(t_start + SEGMENT, L)
    wait_for_earlier_kernels(USE_GDC)

    # Tiles are (time, state, channel): channels across lanes, so a chunk's steps and a share of a
    # channel's states sit in one thread's registers and the recurrence never crosses threads.
    # exp(delta*A) as exp2(delta*(A*log2 e)). Padded state lanes stay zero: A = 0 there gives decay 1,
    # and B = 0 gives no drive.
    A = tl.load(A_ptr + offs_d[None, :] * stride_Ad + offs_n[:, None], mask=mask_nd, other=0.0).to(tl.float32)
    A_log2 = A * LOG2_E
    # Summaries (batch, SEGMENTS - 1, DIM, N) and (batch, SEGMENTS - 1, DIM): the last segment needs none.
    seg_offs = batch * (SEGMENTS - 1) * DIM * N + offs_d[None, :] * N + offs_n[:, None]
    seg_delta_offs = batch * (SEGMENTS - 1) * DIM + offs_d
    state = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    if not SUMMARY:
        if HAS_INIT:
            init_ptrs = init_ptr + batch * stride_ib + offs_d[None, :] * stride_id + offs_n[:, None]
            state = tl.load(init_ptrs, mask=mask_nd, other=0.0).to(tl.float32)
        # Fold in the earlier segments: over a segment the state maps h -> exp2(A_log2 * sum delta) * h + h_local.
        for earlier in range(0, segment):
            seg_delta = tl.load(seg_delta_ptr + seg_delta_offs + earlier * DIM, mask=mask_d, other=0.0)
            local = tl.load(seg_state_ptr + seg_offs + earlier * DIM * N, mask=mask_nd, other=0.0)
            state = advance_state(tl.exp2(seg_delta[None, :] * A_log2), state, local)
    if HAS_D:
        d_skip = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_DELTA_BIAS:
        delta_bias = tl.load(delta_bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    if INT8_INPUTS:
        s_u = tl.load(scales_ptr + 0)
        s_delta = tl.load(scales_ptr + 1)
        s_B = tl.load(scales_ptr + 2)
        s_C = tl.load(scales_ptr + 3)
        s_z = tl.load(scales_ptr + 4)

    # Pointers to the segment's first chunk; each advances by CHUNK steps per chunk.
    rows = t_start + offs_t
    u_ptrs = u_ptr + batch * stride_ub + rows[:, None] * stride_ul + offs_d[None, :]
    delta_ptrs = delta_ptr + batch * stride_db + rows[:, None] * stride_dl + offs_d[None, :]
    z_ptrs = z_ptr + batch * stride_zb + rows[:, None] * stride_zl + offs_d[None, :]
    B_ptrs = B_ptr + batch * stride_Bb + rows[:, None] * stride_Bl + offs_n[None, :]
    C_ptrs = C_ptr + batch * stride_Cb + rows[:, None] * stride_Cl + offs_n[None, :]
    out_ptrs = out_ptr + batch * stride_ob + rows[:, None] * stride_ol + offs_d[None, :]
    first_step = (offs_t == 0)[:, None, None]
    last_step = (offs_t == CHUNK - 1)[:, None, None]
    delta_sum = tl.zeros((BLOCK_D,), dtype=tl.float32)

    u_raw, dt_raw, z_raw, B_raw, C_raw = _load_chunk(
        u_ptrs, delta_ptrs, z_ptrs, B_ptrs, C_ptrs, rows, t_end, mask_d, mask_n, HAS_Z)
    for start in range(t_start, t_end, CHUNK):
        t = start + offs_t
        # Issue the next chunk's loads before computing this one.
        u_ptrs += CHUNK * stride_ul
        delta_ptrs += CHUNK * stride_dl
        z_ptrs += CHUNK * stride_zl
        B_ptrs += CHUNK * stride_Bl
        C_ptrs += CHUNK * stride_Cl
        u_next, dt_next, z_next, B_next, C_next = _load_chunk(
            u_ptrs, delta_ptrs, z_ptrs, B_ptrs, C_ptrs, t + CHUNK, t_end, mask_d, mask_n, HAS_Z)

        u = u_raw.to(tl.float32)
        dt = dt_raw.to(tl.float32)
        B_t = B_raw.to(tl.float32)
        if INT8_INPUTS:
            u = u * s_u
            dt = dt * s_delta
            B_t = B_t * s_B
        if HAS_DELTA_BIAS:
            dt = dt + delta_bias[None, :]
        if DELTA_SOFTPLUS:
            dt = _softplus(dt, FAST_MATH)
        # Steps past the segment leave the state alone: decay exp2(0) = 1, drive 0.
        dt = tl.where((t < t_end)[:, None], dt, 0.0)

        decay = tl.exp2(dt[:, None, :] * A_log2[None, :, :])
        drive = (dt * u)[:, None, :] * B_t[:, :, None]
        # The carried-in state enters through the first step, so the scan over the chunk is the plain
        # recurrence, step by step in each thread's registers.
        drive = tl.where(first_step, advance_state(decay, state[None, :, :], drive), drive)
        _, h = tl.associative_scan((decay, drive), 0, _then)
        state = tl.sum(tl.where(last_step, h, 0.0), axis=0)
        if SUMMARY:
            delta_sum += tl.sum(dt, axis=0)
        else:
            C_t = C_raw.to(tl.float32)
            if INT8_INPUTS:
                C_t = C_t * s_C
            y = tl.sum(h * C_t[:, :, None], axis=1)
            if HAS_D:
                y = y + u * d_skip[None, :]
            if HAS_Z:
                z = z_raw.to(tl.float32)
                if INT8_INPUTS:
                    z = z * s_z
                y = _silu_gate(y, z, FAST_MATH)
            tl.store(out_ptrs, y.to(out_ptr.dtype.element_ty), mask=(t < t_end)[:, None] & mask_d[None, :])
            out_ptrs += CHUNK * stride_ol
        u_raw, dt_raw, z_raw, B_raw, C_raw = u_next, dt_next, z_next, B_next, C_next

    if SUMMARY:
        tl.store(seg_state_ptr + seg_offs + segment * DIM * N, state, mask=mask_nd)
        tl.store(seg_delta_ptr + seg_delta_offs + segment * DIM, delta_sum, mask=mask_d)
    elif segment == SEGMENTS - 1:
        state_ptrs = state_ptr + batch * DIM * N + offs_d[None, :] * N + offs_n[:, None]
        tl.store(state_ptrs, state, mask=mask_nd)


def check_scan_inputs(u, delta, A, B, C, D, z, delta_bias, initial_state, scales,
                      state_name: str = "initial_state", state_dtypes=(torch.float32,)) -> None:
    """The scan's inputs (``delta`` None: its caller checks it) and the state it continues from, of
    ``state_dtypes``."""
    codes = scales is not None
    seq_dtypes = (torch.int8,) if codes else FLOAT_DTYPES
    kind = "int8 (scales given)" if codes else "float (no scales)"
    check_tensor(f"u [{kind}]", u, seq_dtypes, (3,))
    device = u.device
    batch, seq_len, channels = u.shape
    check_tensor("A", A, FLOAT_DTYPES, (2,), device)
    if A.shape[0] != channels or not 1 <= A.shape[1] <= MAX_STATE:
        raise ValueError(f"A must have shape (D={channels}, N) with N <= {MAX_STATE}, got {tuple(A.shape)}")
    state_size = A.shape[1]
    per_state = (batch, seq_len, state_size)
    sequences = [("delta", delta, u.shape), ("B", B, per_state), ("C", C, per_state), ("z", z, u.shape)]
    for name, t, shape in sequences:
        if t is None:  # z absent, or delta checked by the caller
            continue
        check_tensor(f"{name} [{kind}]", t, seq_dtypes, (3,), device)
        check_shape(name, t, shape)
        check_unit_last_stride(name, t)
    check_unit_last_stride("u", u)
    check_unit_last_stride("A", A)
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None:
            check_tensor(name, t, FLOAT_DTYPES, (1,), device)
            check_shape(name, t, (channels,))
            check_unit_last_stride(name, t)
    if initial_state is not None:
        check_tensor(state_name, initial_state, state_dtypes, (3,), device)
        check_shape(state_name, initial_state, (batch, channels, state_size))
        check_unit_last_stride(state_name, initial_state)


def checked_out_dtype(u: torch.Tensor, out_dtype: torch.dtype | None) -> torch.dtype:
    """``scan_out_dtype``, which must be one a kernel stores."""
    out_dtype = scan_out_dtype(u, out_dtype)
    if out_dtype not in FLOAT_DTYPES:
        raise ValueError(f"out_dtype must be one of {FLOAT_DTYPES}, got {out_dtype}")
    return out_dtype


# Programs that split no time fill an H200 from this many (batch row, channel) pairs on.
_ROWS_WITHOUT_SEGMENTS = 16 * 1536
# A sequence at least this long is split into segments when it would leave SMs idle: of GPU_SEGMENT steps,
# or shorter ones for a single row of a prefill-length sequence.
_SEGMENTED_FROM = 1024
GPU_SEGMENT = 256
_SHORT_SEGMENTS_UP_TO = (5120, 2048)  # (batch rows x channels, steps): as far as timed, with one row


def scan_tiling(batch: int, seq_len: int, channels: int, state_size: int, device: torch.device) -> dict:
    """BLOCK_D, BLOCK_N, CHUNK, SEGMENT and launch options for a scan of this shape. The program's layout
    (BLOCK_D) and the segment length decide the order in which the recurrence is composed (the chunk
    length does not: each thread steps through a chunk as through the whole segment), so the bits of a
    result depend on the shape through this rule alone, never on timing: the int8 and the float variant
    of a scan get the same bits, and so do a sequence alone and inside a batch when both get the same
    tiling.

    GPU, from the tilings timed on an H200 (``benchmarks/RESULTS.md``): one warp a program, each thread
    a channel's chunk of steps for a share of its states. Many rows fill the GPU as they are; one or a
    few long rows would leave most SMs idle, so time is split into segments that are summarised first
    (a segment's final state from zero, and its summed delta) and then scanned from the state their
    predecessors' summaries give. Times on an H200 (``benchmarks/RESULTS.md``, eighth session), the int8
    variant, against the earlier rule (16 or 8 channels, 256-step segments): (1, 2048, 5120) 182.5 against
    189.5 us with 32 channels and 160-step segments, (1, 2048, 4096) 157.1 against 159.8, (1, 2048, 2560)
    94.0 against 119.0, (1, 2048, 1536) 64.0 against 72.1 with 16 channels and 192 steps; at L = 8192 and
    with 2 or more rows of 5120 channels short segments gained nothing (within 2 %), so those keep the
    earlier rule, as do lengths between 2048 and 8192, not timed. CPU (the interpreter): few, large
    programs, since each op costs the same whatever its size, one step a chunk, since the interpreter
    runs ``tl.associative_scan`` one Python call per element, and one segment (the chunked and segmented
    compositions are tested there on their own, at tiny shapes)."""
    block_n = triton.next_power_of_2(state_size)
    if device.type != "cuda":
        return dict(BLOCK_D=min(256, triton.next_power_of_2(channels)), BLOCK_N=block_n, CHUNK=1, SEGMENT=1 << 30)
    if batch * channels >= _ROWS_WITHOUT_SEGMENTS:
        return dict(BLOCK_D=16, BLOCK_N=block_n, CHUNK=4, SEGMENT=1 << 30, num_warps=1)
    if seq_len < _SEGMENTED_FROM:
        return dict(BLOCK_D=8, BLOCK_N=block_n, CHUNK=16, SEGMENT=1 << 30, num_warps=1)
    if batch * channels <= _SHORT_SEGMENTS_UP_TO[0] and seq_len <= _SHORT_SEGMENTS_UP_TO[1]:
        # session 8, 26 tilings a shape: one row of 2048 steps ran 4 to 21 % faster in shorter segments
        # (more programs), 32 channels a warp from 2048 channels on
        wide = channels >= 2048
        return dict(BLOCK_D=32 if wide else 16, BLOCK_N=block_n, CHUNK=8, SEGMENT=160 if wide else 192, num_warps=1)
    return dict(BLOCK_D=16 if channels >= 4096 else 8, BLOCK_N=block_n, CHUNK=8, SEGMENT=GPU_SEGMENT, num_warps=1)


_TILING_KEYS = ("BLOCK_D", "BLOCK_N", "CHUNK", "SEGMENT")


def checked_tiling(tiling: dict, state_size: int) -> dict:
    """``tiling`` if the kernel can run it: powers of two for its tiles' sides, every state in BLOCK_N,
    whole chunks in a segment."""
    missing = [k for k in _TILING_KEYS if k not in tiling]
    unknown = sorted(set(tiling) - set(_TILING_KEYS) - {"num_warps"})
    if missing or unknown:
        raise ValueError(f"scan tiling: {missing} missing, {unknown} unknown, got {tiling}; a tiling names "
                         f"{list(_TILING_KEYS)} and optionally num_warps")
    for key in ("BLOCK_D", "BLOCK_N", "CHUNK"):
        if tiling[key] < 1 or tiling[key] & (tiling[key] - 1):
            raise ValueError(f"scan tiling: {key} must be a power of two, got {tiling}")
    if tiling["BLOCK_N"] < state_size:
        raise ValueError(f"scan tiling: BLOCK_N must hold the {state_size} states, got {tiling}")
    if tiling["SEGMENT"] < 1 or tiling["SEGMENT"] % tiling["CHUNK"]:
        raise ValueError(f"scan tiling: SEGMENT must be a multiple of CHUNK, got {tiling}")
    return tiling


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = True,
    out_dtype: torch.dtype | None = None,
    initial_state: torch.Tensor | None = None,
    scales: ScanInputScales | torch.Tensor | None = None,
    tiling: dict | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton ``selective_scan_ref`` (scales None: float u, delta, B, C, z) or ``selective_scan_int8_ref``
    (scales given, as ``ScanInputScales`` or its float32 (5,) tensor: int8 codes).

    u, delta, z: (B, L, D); B, C: (B, L, N); all with a contiguous last dim, other strides free. Returns
    ``(out (B, L, D) in out_dtype, final_state (B, D, N) float32)``; out_dtype defaults to u's float
    dtype, or float32 for int8 u. ``tiling`` replaces ``scan_tiling``'s (BLOCK_D, BLOCK_N, CHUNK, SEGMENT
    and launch options; ``benchmarks/sweep_tilings.py`` times the candidates); the bits of the output
    depend on it, so the int8 and float variants agree bit for bit only under the same tiling."""
    check_scan_inputs(u, delta, A, B, C, D, z, delta_bias, initial_state, scales)
    scales_arg = scan_scales_tensor(scales, u.device) if scales is not None else A  # unread if not INT8_INPUTS
    out_dtype = checked_out_dtype(u, out_dtype)
    batch, seq_len, channels = u.shape
    state_size = A.shape[1]
    device = u.device
    out = torch.empty(batch, seq_len, channels, dtype=out_dtype, device=device)
    final_state = torch.empty(batch, channels, state_size, dtype=torch.float32, device=device)
    if final_state.numel() == 0:
        return out, final_state

    tiling = checked_tiling(tiling or scan_tiling(batch, seq_len, channels, state_size, device), state_size)
    segments = max(1, triton.cdiv(seq_len, tiling["SEGMENT"]))
    # Each segment but the last leaves a summary: its final state from zero and its summed delta.
    seg_state = torch.empty(batch, segments - 1, channels, state_size, dtype=torch.float32, device=device)
    seg_delta = torch.empty(batch, segments - 1, channels, dtype=torch.float32, device=device)
    z_arg = z if z is not None else u
    init = initial_state if initial_state is not None else final_state  # not read without HAS_INIT
    args = (
        u, delta, A, B, C, D if D is not None else A, z_arg,
        delta_bias if delta_bias is not None else A, init, scales_arg, out, final_state, seg_state, seg_delta,
        seq_len, channels, state_size, tiling["SEGMENT"], segments,
        u.stride(0), u.stride(1), delta.stride(0), delta.stride(1), B.stride(0), B.stride(1),
        C.stride(0), C.stride(1), z_arg.stride(0), z_arg.stride(1), A.stride(0),
        init.stride(0), init.stride(1), out.stride(0), out.stride(1),
    )
    # No FMA contraction: with it the int8 variant could fuse its in-kernel dequantisation
    # (code * scale) into the next add, which the float variant, fed ``code * scale`` computed
    # outside, cannot; both variants then round identically and the modes built on them
    # (w8a8's int8 scan, fp32_ssm's dequantise + float scan) agree bit for bit on the GPU too.
    flags = dict(
        HAS_D=D is not None, HAS_Z=z is not None, HAS_DELTA_BIAS=delta_bias is not None,
        DELTA_SOFTPLUS=delta_softplus, HAS_INIT=initial_state is not None, INT8_INPUTS=scales is not None,
        **{k: v for k, v in tiling.items() if k != "SEGMENT"}, **fast_math(device), **EXACT_FP_LAUNCH,
        **dependent_launch(device, batch * seq_len),
    )
    blocks = triton.cdiv(channels, tiling["BLOCK_D"])
    if segments > 1:
        _selective_scan_kernel[(batch, blocks, segments - 1)](*args, SUMMARY=True, **flags)
    _selective_scan_kernel[(batch, blocks, segments)](*args, SUMMARY=False, **flags)
    return out, final_state
