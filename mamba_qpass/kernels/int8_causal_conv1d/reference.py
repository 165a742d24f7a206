"""Depthwise causal conv1d on int8 codes with a float64 epilogue, in plain PyTorch: the specification.

    acc[b, t, d] = sum_{k < W} weight[d, k] * x[b, t - (W-1) + k, d]     exact int32, x = 0 before t = 0
    v            = f64(acc) * dequant_scale[d] + bias[d]                 two separately rounded float64 ops
    y            = v / (1 + exp(-v))                                     SiLU in float64, if ``silu``
    out          = codes of y * out_inv_scale                            clamp, round half to even

Layout is token-major, x[b, t, d], like ``causal_conv1d_ref``.
"""

import torch

from mamba_qpass.kernels.causal_conv1d.reference import conv_history, final_conv_state
from mamba_qpass.numerics import int8_grid


def silu_f64(v: torch.Tensor) -> torch.Tensor:
    """SiLU written as the kernel writes it, so only exp can differ (by an ulp or so, in float64)."""
    return v / (1.0 + torch.exp(-v))


def int8_causal_conv1d_epilogue(
    acc: torch.Tensor,
    dequant_scale: torch.Tensor,
    bias: torch.Tensor | None,
    out_inv_scale: torch.Tensor,
    silu: bool,
) -> torch.Tensor:
    """Integer-valued accumulator (any dtype holding it exactly) -> int8 codes as float64."""
    v = acc.to(torch.float64) * dequant_scale
    if bias is not None:
        v = v + bias
    if silu:
        v = silu_f64(v)
    return int8_grid(v * out_inv_scale)


def int8_causal_conv1d_ref(
    x: torch.Tensor,
    weight: torch.Tensor,
    dequant_scale: torch.Tensor,
    bias: torch.Tensor | None,
    out_inv_scale: torch.Tensor,
    silu: bool = True,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """x: int8 (B, L, D); weight: int8 (D, W); dequant_scale, bias: float64 (D,);
    out_inv_scale: float64 scalar (shape () or (1,)); initial_state: int8 (B, W-1, D), the codes of the
    W-1 steps before t = 0 (zeros when None). Returns ``(out, final_state)``: int8 (B, L, D) and the
    int8 codes of the last W-1 inputs (B, W-1, D)."""
    width = weight.shape[1]
    seq_len = x.shape[1]
    history = conv_history(x, width, initial_state)
    h32 = history.to(torch.int32)
    w32 = weight.to(torch.int32)
    acc = sum(w32[:, k] * h32[:, k : k + seq_len, :] for k in range(width))
    out = int8_causal_conv1d_epilogue(acc, dequant_scale, bias, out_inv_scale.reshape(()), silu).to(torch.int8)
    return out, final_conv_state(history, width)
