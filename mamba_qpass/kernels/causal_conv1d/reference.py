"""Depthwise causal conv1d in plain PyTorch: the specification of ``mamba_qpass::causal_conv1d``.

Layout is token-major, ``x[b, t, d]``, so the graph needs no transposes around the op.
"""

import torch
import torch.nn.functional as F


def causal_conv1d_ref(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    silu: bool,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``out[b, t, d] = act(bias[d] + sum_k weight[d, k] * x[b, t - (K-1) + k, d])``, where the K-1 steps
    before t=0 are ``initial_state`` (zeros when None).

    x: (B, L, D); weight: (D, K); bias: (D,) or None; initial_state: (B, K-1, D) or None. Computed in the
    weight's dtype, returned in x's. Returns ``(out, final_state)``: final_state (B, K-1, D) in x's dtype
    is the last K-1 inputs, the state to continue from.
    """
    channels, width = weight.shape
    seq_len = x.shape[1]
    history = conv_history(x, width, initial_state)
    if initial_state is None:
        out = F.conv1d(
            x.transpose(1, 2).to(weight.dtype), weight.unsqueeze(1), bias, padding=width - 1, groups=channels
        )[:, :, :seq_len]
    else:
        out = F.conv1d(history.transpose(1, 2).to(weight.dtype), weight.unsqueeze(1), bias, groups=channels)
    if silu:
        out = F.silu(out)
    return out.transpose(1, 2).to(x.dtype).contiguous(), final_conv_state(history, width)


def conv_history(x: torch.Tensor, width: int, initial_state: torch.Tensor | None) -> torch.Tensor:
    """(B, K-1 + L, D): the K-1 steps before t=0 (``initial_state``, or zeros) followed by x."""
    if initial_state is None:
        return F.pad(x, (0, 0, width - 1, 0))
    expected = (x.shape[0], width - 1, x.shape[2])
    if tuple(initial_state.shape) != expected or initial_state.dtype != x.dtype:
        raise ValueError(
            f"initial_state must be {x.dtype} of shape {expected} (batch, width - 1, channels), like x, got "
            f"{initial_state.dtype} {tuple(initial_state.shape)}"
        )
    return torch.cat([initial_state, x], dim=1)


def final_conv_state(history: torch.Tensor, width: int) -> torch.Tensor:
    """The last K-1 steps of ``history``: what the next call's window reaches back to."""
    return history[:, history.shape[1] - (width - 1) :].contiguous()
