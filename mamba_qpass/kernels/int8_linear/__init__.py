"""int8 x int8 -> int32 GEMM with a float64 dequantise / bias / requantise epilogue."""

from mamba_qpass.kernels.int8_linear.reference import int8_linear_ref
from mamba_qpass.kernels.int8_linear.triton import int8_linear

__all__ = ["int8_linear", "int8_linear_ref"]
