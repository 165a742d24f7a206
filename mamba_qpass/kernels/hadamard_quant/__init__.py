"""Hadamard rotation + int8 quantisation (and plain quantisation) with float64 arithmetic."""

from mamba_qpass.kernels.hadamard_quant.matrix import hadamard_matrix, is_supported_order, kronecker_split
from mamba_qpass.kernels.hadamard_quant.reference import hadamard_quant_ref, quantize_ref
from mamba_qpass.kernels.hadamard_quant.triton import hadamard_quant, quantize

__all__ = [
    "hadamard_matrix",
    "hadamard_quant",
    "hadamard_quant_ref",
    "is_supported_order",
    "kronecker_split",
    "quantize",
    "quantize_ref",
]
