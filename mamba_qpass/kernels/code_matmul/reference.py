"""The integer accumulator of an int8 GEMM computed in floating point, exactly, in plain PyTorch: the
specification of float_sim's GEMMs.

    acc[m, n] = sum_k a[m, k] * w[n, k],   w = 16 * high + low   (``numerics.weight_code_nibbles``)

``a`` holds activation codes in [-128, 127] in any float dtype; the weight comes as its float16 nibbles,
the form the CUDA implementation multiplies. In float64 every product and partial sum is an integer of
magnitude below 2**53, so ``code_matmul_ref`` is exact in any order.

float_sim computes it in two steps a compiler can fuse with their neighbours: the float32 products of
``a`` with both nibbles (``nibble_products``, one GEMM over the stacked (2N, K) nibbles), then
``accumulator_from_products``, 16 * high + low in float64. A float32 sum of up to ``TERMS`` nibble
products is exact (``numerics.NIBBLE_PRODUCT_TERMS``); a longer K is summed in chunks of ``TERMS``
columns whose accumulators add exactly in float64.
"""

import torch

from mamba_qpass.numerics import NIBBLE
from mamba_qpass.numerics import NIBBLE_PRODUCT_TERMS as TERMS


def weight_from_nibbles(nibbles: torch.Tensor) -> torch.Tensor:
    """The (N, K) weight codes, as float64, of the (2N, K) float16 nibbles."""
    high, low = nibbles.to(torch.float64).chunk(2)
    return NIBBLE * high + low


def code_matmul_ref(a: torch.Tensor, nibbles: torch.Tensor) -> torch.Tensor:
    """a: (..., K) codes; nibbles: float16 (2N, K). Returns the float64 (..., N) accumulator."""
    return a.to(torch.float64) @ weight_from_nibbles(nibbles).T


def check_terms(k: int) -> None:
    if k > TERMS:
        raise ValueError(
            f"nibble products sum at most {TERMS} terms exactly in float32, got K = {k}: split K into chunks "
            f"of {TERMS} columns and add their accumulators in float64"
        )


def nibble_products_ref(a: torch.Tensor, nibbles: torch.Tensor) -> torch.Tensor:
    """a: (..., K) codes, K <= TERMS; nibbles: float16 (2N, K). Returns the float32 (..., 2N) products with
    the high nibbles, then with the low ones (exact: each is an integer below 2**24)."""
    check_terms(a.shape[-1])
    return (a.to(torch.float64) @ nibbles.to(torch.float64).T).to(torch.float32)


def accumulator_from_products(products: torch.Tensor) -> torch.Tensor:
    """The float64 (..., N) accumulator of the float32 (..., 2N) ``nibble_products``: 16 * high + low,
    exact (integers below 2**28)."""
    high, low = products.to(torch.float64).chunk(2, dim=-1)
    return NIBBLE * high + low
