"""Triton selective scan (Mamba-1 S6) for ``selective_scan_ref`` and, given ``ScanInputScales``, for
``selective_scan_int8_ref`` (int8 u, delta, B, C, z dequantised in-kernel as ``code.to(fp32) * scale``).

One program owns a batch row and a block of channels and walks time in order, keeping its
(BLOCK_D, N) float32 state in registers. Outputs match the references to float32 rounding, not bit
for bit: exp and log are approximate on GPU and the state sum runs in a different order.
"""

import torch
import triton
import triton.language as tl

from mamba_qpass.kernels.checks import check_shape, check_tensor, check_unit_last_stride
from mamba_qpass.kernels.quant_math import EXACT_FP_LAUNCH
from mamba_qpass.kernels.selective_scan.reference import ScanInputScales, scan_scales_tensor

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
def _selective_scan_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, delta_bias_ptr, init_ptr, scales_ptr,
    out_ptr, state_ptr,
    L, DIM, N,
    stride_ub, stride_ul, stride_db, stride_dl, stride_Bb, stride_Bl, stride_Cb, stride_Cl,
    stride_zb, stride_zl, stride_Ad, stride_ib, stride_id, stride_ob, stride_ol,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DELTA_BIAS: tl.constexpr,
    DELTA_SOFTPLUS: tl.constexpr, HAS_INIT: tl.constexpr, INT8_INPUTS: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    batch = tl.program_id(0)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d = offs_d < DIM
    mask_n = offs_n < N
    mask_dn = mask_d[:, None] & mask_n[None, :]

    # Padded state lanes stay zero: A = 0 there gives decay 1, and B = 0 gives no drive.
    A = tl.load(A_ptr + offs_d[:, None] * stride_Ad + offs_n[None, :], mask=mask_dn, other=0.0).to(tl.float32)
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

    u_ptrs = u_ptr + batch * stride_ub + offs_d
    delta_ptrs = delta_ptr + batch * stride_db + offs_d
    B_ptrs = B_ptr + batch * stride_Bb + offs_n
    C_ptrs = C_ptr + batch * stride_Cb + offs_n
    z_ptrs = z_ptr + batch * stride_zb + offs_d
    out_ptrs = out_ptr + batch * stride_ob + offs_d
    for _ in range(L):
        u = tl.load(u_ptrs, mask=mask_d, other=0).to(tl.float32)
        dt = tl.load(delta_ptrs, mask=mask_d, other=0).to(tl.float32)
        B_t = tl.load(B_ptrs, mask=mask_n, other=0).to(tl.float32)
        C_t = tl.load(C_ptrs, mask=mask_n, other=0).to(tl.float32)
        if INT8_INPUTS:
            u = u * s_u
            dt = dt * s_delta
            B_t = B_t * s_B
            C_t = C_t * s_C
        if HAS_DELTA_BIAS:
            dt = dt + delta_bias
        if DELTA_SOFTPLUS:
            dt = _softplus(dt)
        decay = tl.exp(dt[:, None] * A)
        drive = (dt[:, None] * B_t[None, :]) * u[:, None]
        state = decay * state + drive
        y = tl.sum(state * C_t[None, :], axis=1)
        if HAS_D:
            y = y + u * d_skip
        if HAS_Z:
            z = tl.load(z_ptrs, mask=mask_d, other=0).to(tl.float32)
            if INT8_INPUTS:
                z = z * s_z
            y = y * (z / (1.0 + tl.exp(-z)))
            z_ptrs += stride_zl
        tl.store(out_ptrs, y.to(out_ptr.dtype.element_ty), mask=mask_d)
        u_ptrs += stride_ul
        delta_ptrs += stride_dl
        B_ptrs += stride_Bl
        C_ptrs += stride_Cl
        out_ptrs += stride_ol

    state_ptrs = state_ptr + batch * DIM * N + offs_d[:, None] * N + offs_n[None, :]
    tl.store(state_ptrs, state, mask=mask_dn)


def _check_inputs(u, delta, A, B, C, D, z, delta_bias, initial_state, scales) -> None:
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
    sequences = [("delta", delta, u.shape), ("B", B, per_state), ("C", C, per_state)]
    if z is not None:
        sequences.append(("z", z, u.shape))
    for name, t, shape in sequences:
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
        check_tensor("initial_state", initial_state, (torch.float32,), (3,), device)
        check_shape("initial_state", initial_state, (batch, channels, state_size))
        check_unit_last_stride("initial_state", initial_state)


def _scan_blocks(channels: int, state_size: int, device: torch.device) -> tuple[int, int, dict]:
    """(BLOCK_D, BLOCK_N, launch options). GPU: 16 channels per program for enough programs at batch 1.
    CPU (the interpreter): every channel in one program, since each op costs the same whatever its size."""
    block_n = triton.next_power_of_2(state_size)
    if device.type == "cuda":
        return 16, block_n, {"num_warps": 1}
    return min(256, triton.next_power_of_2(channels)), block_n, {}


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
    _check_inputs(u, delta, A, B, C, D, z, delta_bias, initial_state, scales)
    scales_arg = scan_scales_tensor(scales, u.device) if scales is not None else A  # unread if not INT8_INPUTS
    if out_dtype is None:
        out_dtype = u.dtype if u.dtype.is_floating_point else torch.float32
    if out_dtype not in FLOAT_DTYPES:
        raise ValueError(f"out_dtype must be one of {FLOAT_DTYPES}, got {out_dtype}")
    batch, seq_len, channels = u.shape
    state_size = A.shape[1]
    device = u.device
    out = torch.empty(batch, seq_len, channels, dtype=out_dtype, device=device)
    final_state = torch.empty(batch, channels, state_size, dtype=torch.float32, device=device)
    if final_state.numel() == 0:
        return out, final_state

    block_d, block_n, options = _scan_blocks(channels, state_size, device)
    # No FMA contraction: with it the int8 variant could fuse its in-kernel dequantisation
    # (code * scale) into the next add, which the float variant, fed ``code * scale`` computed
    # outside, cannot; both variants then round identically and the modes built on them
    # (w8a8's int8 scan, fp32_ssm's dequantise + float scan) agree bit for bit on the GPU too.
    z_arg = z if z is not None else u
    init = initial_state if initial_state is not None else final_state  # not read without HAS_INIT
    _selective_scan_kernel[(batch, triton.cdiv(channels, block_d))](
        u, delta, A, B, C, D if D is not None else A, z_arg,
        delta_bias if delta_bias is not None else A, init, scales_arg, out, final_state,
        seq_len, channels, state_size,
        u.stride(0), u.stride(1), delta.stride(0), delta.stride(1), B.stride(0), B.stride(1),
        C.stride(0), C.stride(1), z_arg.stride(0), z_arg.stride(1), A.stride(0),
        init.stride(0), init.stride(1), out.stride(0), out.stride(1),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_DELTA_BIAS=delta_bias is not None,
        DELTA_SOFTPLUS=delta_softplus, HAS_INIT=initial_state is not None, INT8_INPUTS=scales is not None,
        BLOCK_D=block_d, BLOCK_N=block_n, **options, **EXACT_FP_LAUNCH,
    )
    return out, final_state
