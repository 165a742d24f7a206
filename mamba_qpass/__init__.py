"""mamba-qpass: quantize Mamba language models as torch.fx graph rewrites with Triton INT8 kernels."""

import warnings

import torch

from mamba_qpass.api import apply, apply_mode, build_modes, calibrate, compare
from mamba_qpass.dynamo_backend import backend
from mamba_qpass.capture import capture
from mamba_qpass.comparison import ComparisonReport
from mamba_qpass.errors import UnsupportedModelError
from mamba_qpass.exact_inductor import compile_exact, exact_inductor_options
from mamba_qpass.modes import mode_names
from mamba_qpass.quant_config import QuantConfig
from mamba_qpass.saturation import SaturationWarning, saturation
from mamba_qpass.serialize import SavedModelError, load, save
from mamba_qpass.version import __version__

try:
    from mamba_qpass import cuda_kernels  # noqa: F401  (registers the Triton kernels for CUDA)
except ModuleNotFoundError as err:
    if err.name != "triton":
        raise
    # Every op still runs: its PyTorch reference is its implementation on any device.
    if torch.cuda.is_available():
        warnings.warn(
            "triton is not installed, so mamba_qpass runs its PyTorch reference ops on the GPU "
            "(the specification, much slower): pip install triton",
            stacklevel=2,
        )

__all__ = [
    "__version__",
    "apply", "apply_mode", "backend", "build_modes", "calibrate", "capture", "compare", "compile_exact", "ComparisonReport", "exact_inductor_options", "mode_names",
    "QuantConfig", "SaturationWarning", "SavedModelError", "UnsupportedModelError", "load", "save", "saturation",
]
