"""Selective scan (Mamba-1 S6) in plain PyTorch: the specification of ``mamba_qpass::selective_scan`` and,
on int8 codes with ``ScanInputScales``, of ``mamba_qpass::int8_selective_scan`` (dequantise, then scan).

Per batch b, channel d and state n, with time t:

    delta_t = softplus(dt_t + dt_bias)            (when softplus is on)
    h_t     = exp(delta_t * A) * h_{t-1} + (delta_t * B_t) * u_t
    y_t     = sum_n h_t * C_t + D * u_t
    out_t   = y_t * silu(z_t)

Layouts are token-major: u, delta, z (B, L, D); B, C (B, L, N); A (D, N); D, dt_bias (D,).
The state is float32. A per-time-step loop over a vectorised (B, D, N) state keeps the recurrence
readable; the per-step factors are precomputed a chunk of time steps at a time to bound memory.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

_TIME_CHUNK = 64


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
    ys = []
    for start in range(0, seq_len, _TIME_CHUNK):
        stop = min(start + _TIME_CHUNK, seq_len)
        dt_c = dt[:, start:stop, :, None]  # (B, T, D, 1)
        decay = torch.exp(dt_c * A32)  # (B, T, D, N)
        drive = (dt_c * B32[:, start:stop, None, :]) * u32[:, start:stop, :, None]
        for t in range(stop - start):
            state = decay[:, t] * state + drive[:, t]
            # A matmul, not (state * C).sum(-1): it rounds as transformers' eager scan does, which
            # matters on randomly initialised deep configs that amplify ulp differences.
            ys.append(torch.matmul(state, C32[:, start + t, :, None])[..., 0])
    y = torch.stack(ys, dim=1) if ys else u32.new_zeros(batch, 0, channels)
    if D is not None:
        y = y + u32 * D.float()
    if z is not None:
        y = y * F.silu(z.float())
    if out_dtype is None:
        out_dtype = u.dtype if u.dtype.is_floating_point else torch.float32
    return y.to(out_dtype), state


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
