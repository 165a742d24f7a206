"""Triton one-token selective scan from a state (the decode step), for ``selective_state_update_ref``.

One program owns ROWS batch rows and a block of channels: it reads their state (ROWS, BLOCK_D, N) once,
applies one step of the recurrence with D and the z gate fused, and writes the output and the new state. The
operations and their order are the chunked scan kernel's for one step (``selective_scan/triton.py``):
``exp2(delta * A * log2 e)`` decay, ``(delta * u) * B`` drive, ``advance_state``, the C reduction, then
``+ u * D`` and ``* silu(z)``; int8 inputs are dequantised in-kernel as ``code.to(fp32) * scale``.

With ``dt_proj`` given, the program also computes its channels' delta codes from the low-rank dt codes
(x_proj's first dt_rank outputs) and dt_proj's int8 weight rows: the exact int32 dot product (on the
int8 tensor cores) and ``int8_linear``'s float64 epilogue, so the codes are the dt_proj GEMM's, and a
decode step saves that launch (``selective_state_update_dt_proj_ref`` is the composition).

Outputs match the reference to float32 rounding (exp is approximate on GPU). The int8 and float variants
run the same operations on the same float32 values and are launched without FMA contraction, so they agree
bit for bit with each other: w8a8 and fp32_ssm decode identically.
"""

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from mamba_qpass.kernels.checks import check_f64_vector, check_shape, check_tensor, check_unit_last_stride
from mamba_qpass.kernels.dependent_launch import dependent_launch, wait_for_earlier_kernels
from mamba_qpass.kernels.fast_math import LOG2_E, fast_math
from mamba_qpass.kernels.quant_math import EXACT_FP_LAUNCH, tl_round_half_even_clamp_int8
from mamba_qpass.kernels.selective_scan.reference import ScanInputScales, scan_scales_tensor
from mamba_qpass.kernels.selective_scan.triton import _silu_gate, _softplus, advance_state, check_scan_inputs, checked_out_dtype


# dt_rank columns of dt_proj's weight multiplied at a time (at 32, sm_90 code stages each through shared memory)
DT_CHUNK = 64
# a dot's narrowest side: the dt_proj product's columns, one a batch row of the program
MAX_ROWS_WITH_DT_PROJ = 16
DOT_COLUMNS = tl.constexpr(MAX_ROWS_WITH_DT_PROJ)
# float16 for a state kept in less precision between decode steps. Not bfloat16: Triton's interpreter
# truncates float32 -> bfloat16 where torch and the GPU round to nearest even, so the CPU tests could not
# show that kernel and reference agree.
STATE_DTYPES = (torch.float32, torch.float16)


@triton.jit
def _dt_proj_sums(delta_ptr, dt_w_ptr, first, offs_d, mask_d, BATCH, DT_RANK, stride_db, stride_wd, ROWS: tl.constexpr,
                  BLOCK_D: tl.constexpr, BLOCK_R: tl.constexpr, DT_CHUNK: tl.constexpr):
    """The exact int32 dot products of the channels' dt_proj weight rows with the low-rank codes of batch
    rows first .. first + ROWS - 1, as (ROWS, BLOCK_D). On the int8 tensor cores, DOT_COLUMNS being a dot's
    narrowest side (columns past ROWS and rows past BATCH are zero): widening each weight byte and
    multiplying on the CUDA cores cost about three instructions a weight, for every batch row, and ROWS
    rows a program read the weight rows once for all of them."""
    cols = tl.arange(0, DOT_COLUMNS)
    row_mask = (cols < ROWS) & (first + cols < BATCH)
    acc = tl.zeros((BLOCK_D, DOT_COLUMNS), dtype=tl.int32)
    for r0 in tl.static_range(0, BLOCK_R, DT_CHUNK):
        offs_r = r0 + tl.arange(0, DT_CHUNK)
        mask_r = offs_r < DT_RANK
        low = tl.load(delta_ptr + (first + cols)[None, :] * stride_db + offs_r[:, None],
                      mask=mask_r[:, None] & row_mask[None, :], other=0)
        w = tl.load(dt_w_ptr + offs_d[:, None] * stride_wd + offs_r[None, :], mask=mask_d[:, None] & mask_r[None, :],
                    other=0)
        acc = tl.dot(w, low, acc, out_dtype=tl.int32)
    # the first ROWS columns, transposed: groups of ROWS columns, all but the first zeroed and added (exact)
    by_row = tl.reshape(tl.trans(acc), (DOT_COLUMNS // ROWS, ROWS, BLOCK_D))
    group = tl.arange(0, DOT_COLUMNS // ROWS)[:, None, None]
    return tl.sum(tl.where(group == 0, by_row, 0), axis=0)


@triton.jit
def _selective_state_update_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, delta_bias_ptr, state_ptr, scales_ptr,
    out_ptr, state_out_ptr, dt_w_ptr, dt_dequant_ptr, dt_inv_ptr,
    BATCH, DIM, N, DT_RANK,
    stride_ub, stride_db, stride_Bb, stride_Cb, stride_zb, stride_Ad, stride_sb, stride_sd, stride_ob, stride_tb, stride_td,
    stride_wd,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DELTA_BIAS: tl.constexpr, DELTA_SOFTPLUS: tl.constexpr,
    INT8_INPUTS: tl.constexpr, DT_PROJ: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_R: tl.constexpr, DT_CHUNK: tl.constexpr, ROWS: tl.constexpr, FAST_MATH: tl.constexpr,
    USE_GDC: tl.constexpr = False,
):
    """A program updates ROWS batch rows from ROWS * program_id(0) on, all at once as a (ROWS, BLOCK_D,
    BLOCK_N) tile: each element takes the instructions it would in a program of one row, and the rows'
    loads are in flight together (with DT_PROJ they also share the weight rows' reads)."""
    first = tl.program_id(0) * ROWS
    rows = first + tl.arange(0, ROWS)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d = offs_d < DIM
    mask_n = offs_n < N
    mask_r = rows < BATCH
    mask_rd = mask_r[:, None] & mask_d[None, :]
    mask_rn = mask_r[:, None] & mask_n[None, :]
    mask_rdn = mask_rd[:, :, None] & mask_n[None, None, :]
    wait_for_earlier_kernels(USE_GDC)

    if DT_PROJ:  # delta_ptr holds the dt_rank low-rank codes: delta's codes are dt_proj's, computed here
        sums = _dt_proj_sums(delta_ptr, dt_w_ptr, first, offs_d, mask_d, BATCH, DT_RANK, stride_db, stride_wd, ROWS,
                             BLOCK_D, BLOCK_R, DT_CHUNK)
        dt_dequant = tl.load(dt_dequant_ptr + offs_d, mask=mask_d, other=0.0)
        dt_inv = tl.load(dt_inv_ptr + offs_d, mask=mask_d, other=0.0)
        dt = tl_round_half_even_clamp_int8(sums.to(tl.float64) * dt_dequant[None, :] * dt_inv[None, :]).to(tl.float32)
    else:
        dt = tl.load(delta_ptr + rows[:, None] * stride_db + offs_d[None, :], mask=mask_rd, other=0).to(tl.float32)
    # Padded state lanes stay zero: A = 0 there gives decay 1, and B = 0 gives no drive.
    A = tl.load(A_ptr + offs_d[:, None] * stride_Ad + offs_n[None, :], mask=mask_d[:, None] & mask_n[None, :],
                other=0.0).to(tl.float32)
    A_log2 = A * LOG2_E
    u = tl.load(u_ptr + rows[:, None] * stride_ub + offs_d[None, :], mask=mask_rd, other=0).to(tl.float32)
    B_t = tl.load(B_ptr + rows[:, None] * stride_Bb + offs_n[None, :], mask=mask_rn, other=0).to(tl.float32)
    C_t = tl.load(C_ptr + rows[:, None] * stride_Cb + offs_n[None, :], mask=mask_rn, other=0).to(tl.float32)
    if INT8_INPUTS:
        u = u * tl.load(scales_ptr + 0)
        dt = dt * tl.load(scales_ptr + 1)
        B_t = B_t * tl.load(scales_ptr + 2)
        C_t = C_t * tl.load(scales_ptr + 3)
    if HAS_DELTA_BIAS:
        dt = dt + tl.load(delta_bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)[None, :]
    if DELTA_SOFTPLUS:
        dt = _softplus(dt, FAST_MATH)

    state_offs = rows[:, None, None] * stride_sb + offs_d[None, :, None] * stride_sd + offs_n[None, None, :]
    state = tl.load(state_ptr + state_offs, mask=mask_rdn, other=0.0)
    state = state.to(tl.float32)  # a state kept in float16 between steps is computed on in float32
    decay = tl.exp2(dt[:, :, None] * A_log2[None, :, :])
    drive = (dt * u)[:, :, None] * B_t[:, None, :]
    h = advance_state(decay, state, drive)
    y = tl.sum(h * C_t[:, None, :], axis=2)
    if HAS_D:
        y = y + u * tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)[None, :]
    if HAS_Z:
        z = tl.load(z_ptr + rows[:, None] * stride_zb + offs_d[None, :], mask=mask_rd, other=0).to(tl.float32)
        if INT8_INPUTS:
            z = z * tl.load(scales_ptr + 4)
        y = _silu_gate(y, z, FAST_MATH)
    tl.store(out_ptr + rows[:, None] * stride_ob + offs_d[None, :], y.to(out_ptr.dtype.element_ty), mask=mask_rd)
    # rounded to nearest even, as torch's .to() (a no-op for a float32 state)
    h_out = h.to(state_out_ptr.dtype.element_ty, fp_downcast_rounding="rtne")
    state_out_offs = rows[:, None, None] * stride_tb + offs_d[None, :, None] * stride_td + offs_n[None, None, :]
    tl.store(state_out_ptr + state_out_offs, h_out, mask=mask_rdn)


@dataclass(frozen=True)
class DtProjection:
    """dt_proj as ``int8_linear`` holds it after lowering, without a bias (lowering moves dt_proj's bias
    into the scan's delta_bias): weight int8 (D, dt_rank), dequant_scale and out_inv_scale float64 (D,)."""

    weight: torch.Tensor
    dequant_scale: torch.Tensor
    out_inv_scale: torch.Tensor

    def check(self, low_rank: torch.Tensor, u: torch.Tensor) -> None:
        batch, _, channels = u.shape
        check_tensor("dt_proj weight", self.weight, (torch.int8,), (2,), u.device)
        check_unit_last_stride("dt_proj weight", self.weight)
        check_tensor("delta [dt_proj's int8 input]", low_rank, (torch.int8,), (3,), u.device)
        check_shape("delta [dt_proj's int8 input]", low_rank, (batch, 1, self.weight.shape[1]))
        check_unit_last_stride("delta [dt_proj's int8 input]", low_rank)
        if self.weight.shape[0] != channels:
            raise ValueError(f"dt_proj weight must have {channels} rows (one per channel), got {tuple(self.weight.shape)}")
        check_f64_vector("dt_proj dequant_scale", self.dequant_scale, channels, u.device)
        check_f64_vector("dt_proj out_inv_scale", self.out_inv_scale, channels, u.device)


def state_update_tiling(batch: int, device: torch.device, dt_proj: bool = False) -> dict:
    """GPU: one warp a program over the whole state of 16 channels for one batch row; beyond one row, with
    dt_proj fused, up to 8 rows a program as one tile of 16 channels in 2 warps (the fused dt_proj reads
    its weight rows once for all of them), else one row of 32 channels in one warp. Timed on an H200 from
    cold L2 (``sweep_tilings.py``, outputs and states bit-equal across tilings), 2.8b config. Fifteenth
    session: one row with dt_proj 4.9 us against 6.2 for the 32-channel, 2-warp tiling shipped before (3.1
    against 4.2 without dt_proj); 16 rows 5.6 against 6.2 (16 channels: 6.2); 64 rows 14.6 against 16.0.
    Eighteenth session, 16 rows with dt_proj: 7.4 us for the 8-row tile against 8.9 for one row a program
    and 9.5 for dt_proj's GEMM then the unfused update (which the rows tiles do not speed up: 5.6 us for
    one row, 6.3 for 8; 14.8 against 16.2 at 64 rows); in a CUDA-graph step of 8 layers at B=16, 0.616
    ms against 0.619 with dt_proj's GEMM and 0.622 fused with one row a program (two runs alike). The
    int8 and float variants compute every element alike, and the output's C reduction is laid out alike
    at every tiling (the sm_90 compile test checks it), so the tiling does not change a bit of the
    outputs. CPU (the interpreter): few, large programs."""
    if device.type == "cuda":
        if batch == 1:
            return dict(BLOCK_D=16, ROWS=1, num_warps=1)
        if dt_proj:
            return dict(BLOCK_D=16, ROWS=min(8, triton.next_power_of_2(batch)), num_warps=2)
        return dict(BLOCK_D=32, ROWS=1, num_warps=1)
    return dict(BLOCK_D=256, ROWS=1)


def selective_state_update(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
    delta_softplus: bool,
    out_dtype: torch.dtype | None,
    state: torch.Tensor,
    scales: ScanInputScales | torch.Tensor | None = None,
    state_out: torch.Tensor | None = None,
    dt_proj: DtProjection | None = None,
    tiling: dict | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton ``selective_state_update_ref``: u, delta, z (B, 1, D), B, C (B, 1, N), float or (with scales)
    int8 codes, contiguous last dim; state (B, D, N) float32, or float16 for a state kept in
    less precision between steps (read into float32, the new state rounded to its dtype). Returns
    ``(out (B, 1, D), new state)``; the new state is written to ``state_out`` (which may be ``state``
    itself, for an update in place) or to a new tensor of state's dtype.

    With ``dt_proj`` (int8 codes only), ``delta`` is dt_proj's int8 input (B, 1, dt_rank), and the delta
    codes are ``int8_linear_ref(delta, *dt_proj)``'s, computed in the kernel
    (``selective_state_update_dt_proj_ref``). ``tiling`` replaces ``state_update_tiling``'s (BLOCK_D, ROWS
    batch rows a program, at most 16 with dt_proj, and launch options; ``benchmarks/sweep_tilings.py`` times
    the candidates)."""
    if u.dim() != 3 or u.shape[1] != 1:
        raise ValueError(f"a state update takes one token, u of shape (batch, 1, channels), got {tuple(u.shape)}")
    if dt_proj is not None:
        if scales is None:
            raise ValueError("dt_proj is fused only into the int8 state update (scales given)")
        dt_proj.check(delta, u)  # delta is dt_proj's low-rank input, of dt_rank's shape
    check_scan_inputs(u, None if dt_proj is not None else delta, A, B, C, D, z, delta_bias, state, scales,
                      state_name="state", state_dtypes=STATE_DTYPES)
    out_dtype = checked_out_dtype(u, out_dtype)
    batch, _, channels = u.shape
    state_size = A.shape[1]
    out = torch.empty(batch, 1, channels, dtype=out_dtype, device=u.device)
    if state_out is None:
        state_out = torch.empty(state.shape, dtype=state.dtype, device=state.device)
    elif state_out.shape != state.shape or state_out.dtype != state.dtype or state_out.stride(-1) != 1:
        raise ValueError("state_out must be a tensor of state's shape and dtype with a contiguous last dim")
    if out.numel() == 0:
        return out, state_out
    scales_arg = scan_scales_tensor(scales, u.device) if scales is not None else A  # unread without INT8_INPUTS
    z_arg = z if z is not None else u
    if dt_proj is not None:
        dt_args, dt_rank = (dt_proj.weight, dt_proj.dequant_scale, dt_proj.out_inv_scale), delta.shape[-1]
    else:  # unread without DT_PROJ
        dt_args, dt_rank = (A, A, A), 0
    tiling = {"ROWS": 1, **(tiling or state_update_tiling(batch, u.device, dt_proj is not None))}
    rows = tiling["ROWS"]
    if rows < 1 or rows & (rows - 1) or (dt_proj is not None and rows > MAX_ROWS_WITH_DT_PROJ):
        raise ValueError(f"state update tiling: ROWS must be a power of two, at most {MAX_ROWS_WITH_DT_PROJ} with "
                         f"dt_proj, got {tiling}")
    _selective_state_update_kernel[(triton.cdiv(batch, rows), triton.cdiv(channels, tiling["BLOCK_D"]))](
        u, delta, A, B, C, D if D is not None else A, z_arg, delta_bias if delta_bias is not None else A,
        state, scales_arg, out, state_out, *dt_args,
        batch, channels, state_size, dt_rank,
        u.stride(0), delta.stride(0), B.stride(0), C.stride(0), z_arg.stride(0), A.stride(0),
        state.stride(0), state.stride(1), out.stride(0), state_out.stride(0), state_out.stride(1),
        dt_args[0].stride(0),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_DELTA_BIAS=delta_bias is not None,
        DELTA_SOFTPLUS=delta_softplus, INT8_INPUTS=scales is not None, DT_PROJ=dt_proj is not None,
        BLOCK_N=triton.next_power_of_2(state_size), BLOCK_R=max(DT_CHUNK, triton.cdiv(dt_rank, DT_CHUNK) * DT_CHUNK), DT_CHUNK=DT_CHUNK,
        **tiling, **fast_math(u.device), **EXACT_FP_LAUNCH, **dependent_launch(u.device, batch),
    )
    return out, state_out
