"""RMSNorm fused with int8 quantisation of its output, computed in float64."""

from mamba_qpass.kernels.rms_norm_quant.reference import rms_norm_quant_ref
from mamba_qpass.kernels.rms_norm_quant.triton import rms_norm_quant

__all__ = ["rms_norm_quant", "rms_norm_quant_ref"]
