"""The integer accumulator of an int8 GEMM computed in floating point, exactly, in plain PyTorch: the
specification of float_sim's GEMMs.

    acc[m, n] = sum_k a[m, k] * w[n, k],   w = 16 * high + low   (``numerics.weight_code_nibbles``)

``a`` holds activation codes in [-128, 127] in any float dtype; the weight comes as its float16 nibbles,
the form the CUDA implementation multiplies. In float64 every product and partial sum is an integer of
magnitude below 2**53, so the result is exact in any order.
"""

import torch

from mamba_qpass.numerics import NIBBLE


def weight_from_nibbles(nibbles: torch.Tensor) -> torch.Tensor:
    """The (N, K) weight codes, as float64, of the (2N, K) float16 nibbles."""
    high, low = nibbles.to(torch.float64).chunk(2)
    return NIBBLE * high + low


def code_matmul_ref(a: torch.Tensor, nibbles: torch.Tensor) -> torch.Tensor:
    """a: (..., K) codes; nibbles: float16 (2N, K). Returns the float64 (..., N) accumulator."""
    return a.to(torch.float64) @ weight_from_nibbles(nibbles).T
