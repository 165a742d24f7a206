"""mamba-qpass: quantize Mamba language models as torch.fx graph rewrites with Triton INT8 kernels."""

from mamba_qpass import cuda_kernels  # noqa: F401  (registers the Triton kernels for CUDA)
from mamba_qpass.api import apply, apply_mode, calibrate, mode_graph, mode_model
from mamba_qpass.capture import capture
from mamba_qpass.errors import UnsupportedModelError
from mamba_qpass.modes import mode_names
from mamba_qpass.quant_config import QuantConfig

__all__ = ["apply", "apply_mode", "calibrate", "capture", "mode_graph", "mode_model", "mode_names", "QuantConfig", "UnsupportedModelError"]
