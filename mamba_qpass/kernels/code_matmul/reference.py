"""The integer accumulator of an int8 GEMM computed in floating point, exactly, in plain PyTorch: the
specification of float_sim's GEMMs.

    acc[m, n] = sum_k a[m, k] * w[n, k]

``a`` and ``w`` hold int8 codes in any float dtype (float_sim keeps a weight's codes in float16, the form
the CUDA implementation multiplies). In float64 every product and partial sum is an integer of magnitude
below 2**53, so ``code_matmul_ref`` is exact in any order.

float_sim computes it in chunks of at most ``TERMS`` columns (``numerics.CODE_PRODUCT_TERMS``): each
chunk's ``code_matmul_chunk`` is a float32 GEMM, exact because every partial sum of up to TERMS products
of codes is an integer of magnitude at most 2**24, and the chunks' results add exactly in float64.
"""

import torch

from mamba_qpass.numerics import CODE_PRODUCT_TERMS as TERMS


def code_matmul_ref(a: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """a: (..., K) codes; weight: (N, K) codes. Returns the float64 (..., N) accumulator."""
    return a.to(torch.float64) @ weight.to(torch.float64).T


def check_terms(k: int) -> None:
    if k > TERMS:
        raise ValueError(
            f"a float32 sum of int8 code products is exact for at most {TERMS} terms, got K = {k}: split K into "
            f"chunks of {TERMS} columns and add their results in float64"
        )


def code_matmul_chunk_ref(a: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """a: (..., K) codes, K <= TERMS; weight: (N, K) codes. Returns the accumulator as float32 (..., N),
    which holds it exactly."""
    check_terms(a.shape[-1])
    return code_matmul_ref(a, weight).to(torch.float32)
