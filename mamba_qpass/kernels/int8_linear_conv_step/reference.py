"""in_proj and the conv's one-token update as one kernel: the specification of that decode-step kernel.

It is, by definition, ``int8_linear_ref``'s codes of the in_proj GEMM (one token a row, a per-column output
scale, no bias), then ``int8_conv_state_update_ref`` on the first D of them (x, D the conv's channels):
every value exactly what the two ops give one after the other. The codes of all N columns are returned
too, since the scan reads the rest (z).
"""

import torch

from mamba_qpass.kernels.int8_conv_state_update.reference import int8_conv_state_update_ref
from mamba_qpass.kernels.int8_linear.reference import int8_linear_ref


def int8_linear_conv_step_ref(
    a: torch.Tensor,
    weight: torch.Tensor,
    dequant_scale: torch.Tensor,
    out_inv_scale: torch.Tensor,
    conv_weight: torch.Tensor,
    conv_dequant_scale: torch.Tensor,
    conv_bias: torch.Tensor | None,
    conv_out_inv_scale: torch.Tensor,
    silu: bool,
    state: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """a: int8 (B, 1, K); weight int8 (N, K) with float64 (N,) dequant_scale and out_inv_scale; the conv's
    int8 (D, W) weight, float64 (D,) dequant_scale and bias, float64 scalar out_inv_scale, over the first
    D <= N columns, from its int8 state (B, W-1, D). Returns ``(codes (B, 1, N), conv out (B, 1, D), new
    state (B, W-1, D))``, all int8."""
    codes = int8_linear_ref(a, weight, dequant_scale, None, out_inv_scale)
    x = codes[..., : conv_weight.shape[0]]
    out, new_state = int8_conv_state_update_ref(
        x, conv_weight, conv_dequant_scale, conv_bias, conv_out_inv_scale, silu, state
    )
    return codes, out, new_state
