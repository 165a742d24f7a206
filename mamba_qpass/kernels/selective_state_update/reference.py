"""One token of the selective scan from a given state: the specification of the decode-step kernel.

It is, by definition, ``selective_scan_ref`` (or ``selective_scan_int8_ref`` given scales) over a sequence
of length 1 that starts from ``state``: the same float32 arithmetic, so a decode step continues a prefill
exactly as the rest of the prefill would have.

    delta = softplus(dt + dt_bias);  h = exp(delta * A) * state + (delta * B) * u
    y = sum_n h * C + D * u;  out = y * silu(z)
"""

import torch

from mamba_qpass.kernels.int8_linear.reference import int8_linear_ref
from mamba_qpass.kernels.selective_scan.reference import ScanInputScales, selective_scan_int8_ref, selective_scan_ref


def selective_state_update_ref(
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
    scales: "ScanInputScales | torch.Tensor | None" = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """u, delta, z: (B, 1, D); B, C: (B, 1, N), float, or int8 codes when ``scales`` is given; state float32
    (B, D, N). Returns ``(out (B, 1, D), new_state (B, D, N) float32)``."""
    if u.shape[1] != 1:
        raise ValueError(f"a state update takes one token, (batch, 1, channels), got u of shape {tuple(u.shape)}")
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, out_dtype, state)
    if scales is None:
        return selective_scan_ref(*args)
    return selective_scan_int8_ref(*args, scales=scales)


def selective_state_update_dt_proj_ref(
    u: torch.Tensor,
    low_rank: torch.Tensor,
    dt_weight: torch.Tensor,
    dt_dequant_scale: torch.Tensor,
    dt_out_inv_scale: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
    delta_softplus: bool,
    out_dtype: torch.dtype | None,
    state: torch.Tensor,
    scales: "ScanInputScales | torch.Tensor",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The int8 state update with dt_proj fused: delta's codes are dt_proj's int8 GEMM of the low-rank dt
    codes (B, 1, dt_rank), then the state update as above. The decode step's fused kernel is tested
    against this."""
    delta = int8_linear_ref(low_rank, dt_weight, dt_dequant_scale, None, dt_out_inv_scale)
    return selective_state_update_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, out_dtype, state, scales)
