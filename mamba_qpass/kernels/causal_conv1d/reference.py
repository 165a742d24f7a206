"""Depthwise causal conv1d in plain PyTorch: the specification of ``mamba_qpass::causal_conv1d``.

Layout is token-major, ``x[b, t, d]``, so the graph needs no transposes around the op.
"""

import torch
import torch.nn.functional as F


def causal_conv1d_ref(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, silu: bool
) -> torch.Tensor:
    """``out[b, t, d] = act(bias[d] + sum_k weight[d, k] * x[b, t - (K-1) + k, d])``, zeros before t=0.

    x: (B, L, D); weight: (D, K); bias: (D,) or None. Computed in the weight's dtype, returned in x's.
    """
    channels, width = weight.shape
    seq_len = x.shape[1]
    out = F.conv1d(
        x.transpose(1, 2).to(weight.dtype),
        weight.unsqueeze(1),
        bias,
        padding=width - 1,
        groups=channels,
    )[:, :, :seq_len]
    if silu:
        out = F.silu(out)
    return out.transpose(1, 2).to(x.dtype).contiguous()
