"""One token of the int8 causal conv1d from its state: the specification of the decode-step kernel.

It is, by definition, ``int8_causal_conv1d_ref`` over a sequence of length 1 that starts from ``state``
(the codes of the last W-1 inputs): the same exact int32 window sum and the same float64 epilogue (+ bias,
SiLU, requantisation), so a decode step gives the codes the prefill would have given. The new state is
the window shifted by one: the last W-2 state steps, then x.
"""

import torch

from mamba_qpass.kernels.int8_causal_conv1d.reference import int8_causal_conv1d_ref


def int8_conv_state_update_ref(
    x: torch.Tensor,
    weight: torch.Tensor,
    dequant_scale: torch.Tensor,
    bias: torch.Tensor | None,
    out_inv_scale: torch.Tensor,
    silu: bool,
    state: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """x: int8 (B, 1, D); state: int8 (B, W-1, D); the rest as ``int8_causal_conv1d_ref``. Returns
    ``(out int8 (B, 1, D), new_state int8 (B, W-1, D))``."""
    if x.shape[1] != 1:
        raise ValueError(f"a conv state update takes one token, (batch, 1, channels), got x of shape {tuple(x.shape)}")
    return int8_causal_conv1d_ref(x, weight, dequant_scale, bias, out_inv_scale, silu, state)
