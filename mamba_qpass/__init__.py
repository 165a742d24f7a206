"""mamba-qpass: quantize Mamba language models as torch.fx graph rewrites with Triton INT8 kernels."""

from mamba_qpass.capture import capture
from mamba_qpass.errors import UnsupportedModelError

__all__ = ["capture", "UnsupportedModelError"]
