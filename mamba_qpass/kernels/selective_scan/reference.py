"""Selective scan (Mamba-1 S6) in plain PyTorch: the specification of ``mamba_qpass::selective_scan``.

Per batch b, channel d and state n, with time t:

    delta_t = softplus(dt_t + dt_bias)            (when softplus is on)
    h_t     = exp(delta_t * A) * h_{t-1} + (delta_t * B_t) * u_t
    y_t     = sum_n h_t * C_t + D * u_t
    out_t   = y_t * silu(z_t)

Layouts are token-major: u, delta, z (B, L, D); B, C (B, L, N); A (D, N); D, dt_bias (D,).
The state is float32. A per-time-step loop over a vectorised (B, D, N) state keeps the recurrence
readable; the per-step factors are precomputed a chunk of time steps at a time to bound memory.
"""

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
