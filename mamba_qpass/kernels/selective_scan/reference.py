"""Selective scan (Mamba-1 S6) in plain PyTorch: the specification of ``mamba_qpass::selective_scan`` and,
on int8 codes with ``ScanInputScales``, of ``mamba_qpass::int8_selective_scan`` (dequantise, then scan).

Per batch b, channel d and state n, with time t:

    delta_t = softplus(dt_t + dt_bias)            (when softplus is on)
    h_t     = exp(delta_t * A) * h_{t-1} + (delta_t * B_t) * u_t
    y_t     = sum_n h_t * C_t + D * u_t
    out_t   = y_t * silu(z_t)

Layouts are token-major: u, delta, z (B, L, D); B, C (B, L, N); A (D, N); D, dt_bias (D,).
The state is float32. A per-time-step loop over a vectorised (B, D, N) state keeps the recurrence
readable. The per-step factors are precomputed a chunk of time steps at a time, and each chunk's
states are written into one buffer whose y is one batched matmul: the loop then costs one multiply
and one add per step, on operands that stay in cache. Each step still rounds as
``decay * state + drive`` (two roundings, no fused multiply-add) and each y_t as its own matmul.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Time steps whose factors are precomputed together, in buffers reused by every chunk; (B, 16, D, N)
# float32 is 8 MB at the checkpoint's calibration shapes, within a CPU's last-level cache.
_TIME_CHUNK = 16


def selective_scan_ref(
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
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns ``(out, final_state)``: out (B, L, D) in ``out_dtype`` (default u's float dtype, or
    float32 for integer u), final_state (B, D, N) float32."""
    batch, seq_len, channels = u.shape
    u32 = u.float()
    dt = delta.float()
    if delta_bias is not None:
        dt = dt + delta_bias.float()
    if delta_softplus:
        dt = F.softplus(dt)
    A32 = A.float()
    B32 = B.float()
    C32 = C.float()

    state = (
        torch.zeros(batch, channels, A.shape[1], dtype=torch.float32, device=u.device)
        if initial_state is None
        else initial_state.float().clone()
    )
    y = u32.new_empty(batch, seq_len, channels)
    # (B, T, D, N) buffers reused by every chunk: a fresh one per chunk (or per step) costs the
    # allocator's page faults, which cost more than the arithmetic.
    chunk = (batch, min(_TIME_CHUNK, seq_len), channels, A.shape[1])
    decay_buf, drive_buf, states_buf = (u32.new_empty(chunk) for _ in range(3))
    for start in range(0, seq_len, _TIME_CHUNK):
        stop = min(start + _TIME_CHUNK, seq_len)
        steps = stop - start
        decay, drive, states = decay_buf[:, :steps], drive_buf[:, :steps], states_buf[:, :steps]
        dt_c = dt[:, start:stop, :, None]  # (B, T, D, 1)
        torch.exp(torch.mul(dt_c, A32, out=decay), out=decay)
        torch.mul(dt_c, B32[:, start:stop, None, :], out=drive).mul_(u32[:, start:stop, :, None])
        for t in range(steps):
            state = torch.mul(decay[:, t], state, out=states[:, t]).add_(drive[:, t])
        # A matmul, not (states * C).sum(-1): it rounds as transformers' eager scan does (a matmul per
        # step), which matters on randomly initialised deep configs that amplify ulp differences. A
        # batched matmul over the chunk rounds each step's product as that per-step matmul does, except
        # for a batch of one row, which torch computes per step as a matrix-vector product instead.
        if batch == 1:
            for t in range(steps):
                y[:, start + t] = torch.matmul(states[:, t], C32[:, start + t, :, None])[..., 0]
        else:
            y[:, start:stop] = torch.matmul(states, C32[:, start:stop, :, None])[..., 0]
    if D is not None:
        y = y + u32 * D.float()
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(scan_out_dtype(u, out_dtype)), state.clone()


def scan_out_dtype(u: torch.Tensor, out_dtype: torch.dtype | None) -> torch.dtype:
    """The scan output's dtype: ``out_dtype`` when given, else u's float dtype, or float32 for int8 u."""
    if out_dtype is not None:
        return out_dtype
    return u.dtype if u.dtype.is_floating_point else torch.float32


@dataclass(frozen=True)
class ScanInputScales:
    """Per-tensor scales of the int8 scan inputs; an input's value is ``code.to(float32) * scale``, with
    the scale rounded once to float32 (``as_tensor``), so kernel and reference multiply by the same number.
    ``z`` is ignored when the scan has no z gate."""

    u: float
    delta: float
    B: float
    C: float
    z: float = 1.0

    def as_tensor(self, device: torch.device | str) -> torch.Tensor:
        """float32 (5,): [u, delta, B, C, z], the layout the kernel reads."""
        return torch.tensor([self.u, self.delta, self.B, self.C, self.z], dtype=torch.float32, device=device)


def scan_scales_tensor(scales: "ScanInputScales | torch.Tensor", device: torch.device) -> torch.Tensor:
    """The float32 (5,) [u, delta, B, C, z] tensor of ``scales``: a ``ScanInputScales``, or that tensor
    already (what a graph keeps as a buffer; passing it avoids a host round trip per call)."""
    if isinstance(scales, ScanInputScales):
        return scales.as_tensor(device)
    if not isinstance(scales, torch.Tensor):
        raise ValueError(f"scales must be a ScanInputScales or a float32 (5,) tensor, got {type(scales).__name__}")
    if scales.dtype != torch.float32 or tuple(scales.shape) != (5,) or scales.device != device:
        raise ValueError(
            f"a scales tensor must be float32 of shape (5,) on {device} ([u, delta, B, C, z]), "
            f"got {scales.dtype} {tuple(scales.shape)} on {scales.device}"
        )
    return scales


def dequantize_scan_inputs(
    scales: "ScanInputScales | torch.Tensor",
    u: torch.Tensor,
    delta: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    z: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """float32 values of the codes u, delta, B, C, z (z may be None): the int8 scan's arithmetic before
    its float32 recurrence, which is ``selective_scan_ref``'s."""
    s = scan_scales_tensor(scales, u.device)
    return tuple(None if t is None else t.to(torch.float32) * s[k] for k, t in enumerate((u, delta, B, C, z)))


def selective_scan_int8_ref(
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
    *,
    scales: "ScanInputScales | torch.Tensor",
) -> tuple[torch.Tensor, torch.Tensor]:
    """u, delta, z: int8 (B, L, D); B, C: int8 (B, L, N); scales: see ``scan_scales_tensor``; the rest as
    in ``selective_scan_ref``. Returns ``(out, final_state)``; out defaults to float32."""
    u32, delta32, B32, C32, z32 = dequantize_scan_inputs(scales, u, delta, B, C, z)
    return selective_scan_ref(
        u32, delta32, A, B32, C32, D, z32, delta_bias, delta_softplus,
        out_dtype or torch.float32, initial_state,
    )
