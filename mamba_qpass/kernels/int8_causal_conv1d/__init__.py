"""Depthwise causal conv1d on int8 codes: int32 accumulation, float64 bias / SiLU / requantisation."""

from mamba_qpass.kernels.int8_causal_conv1d.reference import int8_causal_conv1d_ref
from mamba_qpass.kernels.int8_causal_conv1d.triton import int8_causal_conv1d

__all__ = ["int8_causal_conv1d", "int8_causal_conv1d_ref"]
