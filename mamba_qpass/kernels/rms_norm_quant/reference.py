"""RMSNorm followed by int8 quantisation, all in float64, in plain PyTorch: the specification.

Per row of H values:

    var = (sum_h x_h * x_h) * (1 / H)  float64; each square of a 16/32-bit float is exact; 1 / H is the
                                       Python float, the same product on every device
    r   = 1 / sqrt(var + eps)          float64, correctly rounded sqrt and division
    y_h = (x_h * r) * weight_h
    out = codes of y * out_inv_scale   clamp, round half to even

Only the sum of squares depends on summation order (the kernel reduces as a tree); its rounding error
is ~1e-16 relative, so codes can differ from the kernel's only for a value within that distance of a
rounding boundary.
"""

import torch

from mamba_qpass.numerics import int8_grid


def rms_norm_quant_epilogue(
    x: torch.Tensor, weight: torch.Tensor, eps: float, out_inv_scale: torch.Tensor
) -> torch.Tensor:
    """The whole op, which has no integer part: the int8 codes of the normalised x, as float64."""
    x64 = x.to(torch.float64)
    var = (x64 * x64).sum(-1, keepdim=True) * (1.0 / x.shape[-1])
    r = torch.reciprocal(torch.sqrt(var + eps))
    y = (x64 * r) * weight.to(torch.float64)
    return int8_grid(y * out_inv_scale)


def rms_norm_quant_ref(
    x: torch.Tensor, weight: torch.Tensor, eps: float, out_inv_scale: torch.Tensor
) -> torch.Tensor:
    """x: float (..., H); weight: float (H,); out_inv_scale: float64 scalar. Returns int8 (..., H)."""
    return rms_norm_quant_epilogue(x, weight, eps, out_inv_scale.reshape(())).to(torch.int8)
