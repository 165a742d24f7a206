"""int8 quantisation of a float tensor in plain PyTorch: the specification of ``mamba_qpass::quantize``.

    out = codes of f64(x) * out_inv_scale        clamp, round half to even
"""

import torch

from mamba_qpass.numerics import int8_grid


def quantize_epilogue(x: torch.Tensor, out_inv_scale: torch.Tensor) -> torch.Tensor:
    """The whole op, which has no integer part: x's int8 codes as float64."""
    return int8_grid(x.to(torch.float64) * out_inv_scale)


def quantize_ref(x: torch.Tensor, out_inv_scale: torch.Tensor) -> torch.Tensor:
    """x: float (...); out_inv_scale: float64 scalar (shape () or (1,)). Returns int8 codes of x's shape."""
    return quantize_epilogue(x, out_inv_scale.reshape(())).to(torch.int8)
