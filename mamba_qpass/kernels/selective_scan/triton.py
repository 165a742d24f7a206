"""Triton selective scan (Mamba-1 S6) for ``selective_scan_ref`` and, given ``ScanInputScales``, for
``selective_scan_int8_ref`` (int8 u, delta, B, C, z dequantised in-kernel as ``code.to(fp32) * scale``).

Chunk-parallel: one program owns a batch row and a block of channels and walks time a chunk of
``CHUNK`` steps at a time. Within a chunk every step's decay ``exp(delta*A)`` and drive
``(delta*B)*u`` are computed at once, the first-order recurrence ``h -> decay*h + drive`` is composed
over the chunk with ``tl.associative_scan``, and the chunk's state carried in from the previous chunk
is applied to every step in one multiply-add. The next chunk's inputs are loaded while the current one
computes, so a program waits on memory once per kernel rather than once per time step.

Outputs match the references to float32 rounding, not bit for bit: exp and log are approximate on GPU
and the recurrence is composed in a different order. The int8 and float variants run the same
operations on the same float32 values, so they agree bit for bit with each other, provided both use the
same chunking: the tiling is a fixed rule (``scan_tiling``), never autotuned.
"""

import torch
import triton
import triton.language as tl

from mamba_qpass.kernels.checks import check_shape, check_tensor, check_unit_last_stride
from mamba_qpass.kernels.quant_math import EXACT_FP_LAUNCH
from mamba_qpass.kernels.selective_scan.reference import ScanInputScales, scan_out_dtype, scan_scales_tensor

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_STATE = 256


@triton.jit
def _softplus(x):
    """torch's softplus: log1p(exp(x)), or x above the threshold 20. log1p is built from log (no libdevice under the
    interpreter): log(w) * e / (w - 1) with w = 1 + e cancels the rounding of w (exact when w == 1)."""
    e = tl.exp(x)
    w = 1.0 + e
    log1p_e = tl.where(w == 1.0, e, tl.log(w) * (e / (w - 1.0)))
    return tl.where(x > 20.0, x, log1p_e)


@triton.jit
def _then(decay_first, drive_first, decay_next, drive_next):
    """Composition of two affine state updates: h -> decay_first*h + drive_first, then the next."""
    return decay_first * decay_next, decay_next * drive_first + drive_next


@triton.jit
def _load_chunk(u_ptrs, delta_ptrs, z_ptrs, B_ptrs, C_ptrs, t, L, mask_d, mask_n, HAS_Z: tl.constexpr):
    """One chunk's raw inputs: u, delta, z (CHUNK, BLOCK_D) and B, C (CHUNK, BLOCK_N); zeros past L."""
    mask_t = t < L
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
    out_ptr, state_ptr,
    L, DIM, N,
    stride_ub, stride_ul, stride_db, stride_dl, stride_Bb, stride_Bl, stride_Cb, stride_Cl,
    stride_zb, stride_zl, stride_Ad, stride_ib, stride_id, stride_ob, stride_ol,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DELTA_BIAS: tl.constexpr,
    DELTA_SOFTPLUS: tl.constexpr, HAS_INIT: tl.constexpr, INT8_INPUTS: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, CHUNK: tl.constexpr,
):
    batch = tl.program_id(0)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    offs_t = tl.arange(0, CHUNK)
    mask_d = offs_d < DIM
    mask_n = offs_n < N
    mask_dn = mask_d[:, None] & mask_n[None, :]

    # exp(delta*A) as exp2(delta*(A*log2 e)). Padded state lanes stay zero: A = 0 there gives decay 1,
    # and B = 0 gives no drive.
    A = tl.load(A_ptr + offs_d[:, None] * stride_Ad + offs_n[None, :], mask=mask_dn, other=0.0).to(tl.float32)
    A_log2 = A * 1.4426950408889634
    if HAS_INIT:
        init_ptrs = init_ptr + batch * stride_ib + offs_d[:, None] * stride_id + offs_n[None, :]
        state = tl.load(init_ptrs, mask=mask_dn, other=0.0).to(tl.float32)
    else:
        state = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
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

    # Pointers to the chunk starting at time 0; each advances by CHUNK steps per chunk.
    u_ptrs = u_ptr + batch * stride_ub + offs_t[:, None] * stride_ul + offs_d[None, :]
    delta_ptrs = delta_ptr + batch * stride_db + offs_t[:, None] * stride_dl + offs_d[None, :]
    z_ptrs = z_ptr + batch * stride_zb + offs_t[:, None] * stride_zl + offs_d[None, :]
    B_ptrs = B_ptr + batch * stride_Bb + offs_t[:, None] * stride_Bl + offs_n[None, :]
    C_ptrs = C_ptr + batch * stride_Cb + offs_t[:, None] * stride_Cl + offs_n[None, :]
    out_ptrs = out_ptr + batch * stride_ob + offs_t[:, None] * stride_ol + offs_d[None, :]
    last_step = (offs_t == CHUNK - 1)[:, None, None]

    u_raw, dt_raw, z_raw, B_raw, C_raw = _load_chunk(
        u_ptrs, delta_ptrs, z_ptrs, B_ptrs, C_ptrs, offs_t, L, mask_d, mask_n, HAS_Z)
    for start in range(0, L, CHUNK):
        t = start + offs_t
        # Issue the next chunk's loads before computing this one.
        u_ptrs += CHUNK * stride_ul
        delta_ptrs += CHUNK * stride_dl
        z_ptrs += CHUNK * stride_zl
        B_ptrs += CHUNK * stride_Bl
        C_ptrs += CHUNK * stride_Cl
        u_next, dt_next, z_next, B_next, C_next = _load_chunk(
            u_ptrs, delta_ptrs, z_ptrs, B_ptrs, C_ptrs, t + CHUNK, L, mask_d, mask_n, HAS_Z)

        u = u_raw.to(tl.float32)
        dt = dt_raw.to(tl.float32)
        B_t = B_raw.to(tl.float32)
        C_t = C_raw.to(tl.float32)
        if INT8_INPUTS:
            u = u * s_u
            dt = dt * s_delta
            B_t = B_t * s_B
            C_t = C_t * s_C
        if HAS_DELTA_BIAS:
            dt = dt + delta_bias[None, :]
        if DELTA_SOFTPLUS:
            dt = _softplus(dt)
        # Steps past L leave the state alone: decay exp2(0) = 1, drive 0.
        dt = tl.where((t < L)[:, None], dt, 0.0)

        decay = tl.exp2(dt[:, :, None] * A_log2[None, :, :])
        drive = (dt[:, :, None] * B_t[:, None, :]) * u[:, :, None]
        if CHUNK > 1:
            decay_in, drive_in = tl.associative_scan((decay, drive), 0, _then)
        else:  # one step a chunk: the plain recurrence
            decay_in, drive_in = decay, drive
        h = decay_in * state[None, :, :] + drive_in
        y = tl.sum(h * C_t[:, None, :], axis=2)
        state = tl.sum(tl.where(last_step, h, 0.0), axis=0)

        if HAS_D:
            y = y + u * d_skip[None, :]
        if HAS_Z:
            z = z_raw.to(tl.float32)
            if INT8_INPUTS:
                z = z * s_z
            y = y * (z / (1.0 + tl.exp(-z)))
        tl.store(out_ptrs, y.to(out_ptr.dtype.element_ty), mask=(t < L)[:, None] & mask_d[None, :])
        out_ptrs += CHUNK * stride_ol
        u_raw, dt_raw, z_raw, B_raw, C_raw = u_next, dt_next, z_next, B_next, C_next

    state_ptrs = state_ptr + batch * DIM * N + offs_d[:, None] * N + offs_n[None, :]
    tl.store(state_ptrs, state, mask=mask_dn)


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


def scan_tiling(channels: int, state_size: int, device: torch.device) -> dict:
    """BLOCK_D, BLOCK_N, CHUNK and launch options. The chunk length and the program's layout decide the
    order in which the recurrence is composed, so on one device they depend on nothing but the state
    size: the int8 and the float variant of a scan, and a sequence alone or inside a bigger batch, get
    the same bits. GPU: 8 channels x 16 steps in two warps was the fastest of ten tilings timed on an
    H200 at (1, 2048, 5120, 16), within 4 % of the best at (16, 2048, 1536, 16). CPU (the interpreter):
    few, large programs, since each op costs the same whatever its size, and one step a chunk, since the
    interpreter runs ``tl.associative_scan`` one Python call per element (the chunked composition is
    tested there on its own, at a tiny shape)."""
    block_n = triton.next_power_of_2(state_size)
    if device.type == "cuda":
        return dict(BLOCK_D=8, BLOCK_N=block_n, CHUNK=16, num_warps=2)
    return dict(BLOCK_D=min(256, triton.next_power_of_2(channels)), BLOCK_N=block_n, CHUNK=1)


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
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton ``selective_scan_ref`` (scales None: float u, delta, B, C, z) or ``selective_scan_int8_ref``
    (scales given, as ``ScanInputScales`` or its float32 (5,) tensor: int8 codes).

    u, delta, z: (B, L, D); B, C: (B, L, N); all with a contiguous last dim, other strides free. Returns
    ``(out (B, L, D) in out_dtype, final_state (B, D, N) float32)``; out_dtype defaults to u's float
    dtype, or float32 for int8 u."""
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

    tiling = scan_tiling(channels, state_size, device)
    # No FMA contraction: with it the int8 variant could fuse its in-kernel dequantisation
    # (code * scale) into the next add, which the float variant, fed ``code * scale`` computed
    # outside, cannot; both variants then round identically and the modes built on them
    # (w8a8's int8 scan, fp32_ssm's dequantise + float scan) agree bit for bit on the GPU too.
    z_arg = z if z is not None else u
    init = initial_state if initial_state is not None else final_state  # not read without HAS_INIT
    _selective_scan_kernel[(batch, triton.cdiv(channels, tiling["BLOCK_D"]))](
        u, delta, A, B, C, D if D is not None else A, z_arg,
        delta_bias if delta_bias is not None else A, init, scales_arg, out, final_state,
        seq_len, channels, state_size,
        u.stride(0), u.stride(1), delta.stride(0), delta.stride(1), B.stride(0), B.stride(1),
        C.stride(0), C.stride(1), z_arg.stride(0), z_arg.stride(1), A.stride(0),
        init.stride(0), init.stride(1), out.stride(0), out.stride(1),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_DELTA_BIAS=delta_bias is not None,
        DELTA_SOFTPLUS=delta_softplus, HAS_INIT=initial_state is not None, INT8_INPUTS=scales is not None,
        **tiling, **EXACT_FP_LAUNCH,
    )
    return out, final_state
