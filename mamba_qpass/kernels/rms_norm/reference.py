"""RMSNorm in plain PyTorch: the specification of ``mamba_qpass::rms_norm``."""

import torch


def rms_norm_ref(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``weight * x / sqrt(mean(x^2) + eps)`` over the last dim, in float32; returned in weight's dtype.

    x is first cast to the weight's dtype, as transformers' MambaRMSNorm does, so a half-precision
    model sees the same rounding as its eager forward.
    """
    x32 = x.to(weight.dtype).float()
    variance = x32.pow(2).mean(-1, keepdim=True)
    normed = x32 * torch.rsqrt(variance + eps)
    return weight * normed.to(weight.dtype)
