"""Hadamard rotation + int8 quantisation (and plain quantisation) with float64 arithmetic."""

from mamba_qpass.kernels.hadamard_quant.matrix import (
    HadamardRotation,
    hadamard_matrix,
    hadamard_rotation,
    is_supported_order,
)
from mamba_qpass.kernels.hadamard_quant.reference import hadamard_quant_ref, quantize_ref
from mamba_qpass.kernels.hadamard_quant.triton import hadamard_quant, quantize

__all__ = [
    "HadamardRotation",
    "hadamard_matrix",
    "hadamard_quant",
    "hadamard_quant_ref",
    "hadamard_rotation",
    "is_supported_order",
    "quantize",
    "quantize_ref",
]
