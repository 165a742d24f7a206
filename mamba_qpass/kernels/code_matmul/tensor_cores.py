"""``code_matmul`` on CUDA: float16 tensor-core GEMMs that accumulate in float32, exact by bounds.

A float64 GEMM is exact but runs at the GPU's float64 rate (67 TFLOPS on an H200, a fifteenth of float16's).
Every operand here is exact in float16 (activation codes in [-128, 127], weight nibbles in [-8, 15]), every
product exact in float32, and the products with either nibble are at most 128 * 15 = 1920 in magnitude: a
sum of up to ``TERMS`` of them is an integer below 2**24, which float32 holds exactly whatever the order of
the additions. One GEMM against the stacked (2N, K) nibbles gives both float32 partial products; the exact
accumulator is 16 * high + low in float64. Longer K is summed in chunks of ``TERMS``, in float64.

That the tensor cores keep every bit of such sums (they add in float32 with their own alignment) is what
``tests/kernels/test_code_matmul.py`` checks on the GPU, with operands that drive each sum towards 2**24.
"""

import torch

from mamba_qpass.numerics import INT8_MIN, NIBBLE

_LARGEST_PRODUCT = -INT8_MIN * (NIBBLE - 1)
TERMS = 8192  # a power of two with TERMS * _LARGEST_PRODUCT < 2**24
assert TERMS * _LARGEST_PRODUCT < 2**24


def _float32_products(a: torch.Tensor, nibbles: torch.Tensor) -> torch.Tensor:
    """(M, 2N) float32 a @ nibbles.T. CPU has no float16 GEMM with float32 output, so there the operands are
    float32, exact all the same: this is how the CPU tests run the chunking and the recombination."""
    if a.is_cuda:
        return torch.mm(a, nibbles.T, out_dtype=torch.float32)
    return a.float() @ nibbles.float().T


def code_matmul(a: torch.Tensor, nibbles: torch.Tensor) -> torch.Tensor:
    """a: (..., K) codes in any float dtype; nibbles: float16 (2N, K). Returns the float64 (..., N)
    accumulator, equal to ``code_matmul_ref``'s."""
    k = a.shape[-1]
    rows = a.reshape(-1, k).to(torch.float16)
    acc = None
    for start in range(0, k, TERMS):
        products = _float32_products(rows[:, start : start + TERMS], nibbles[:, start : start + TERMS])
        high, low = products.chunk(2, dim=1)
        part = low.to(torch.float64).add_(high.to(torch.float64), alpha=NIBBLE)
        acc = part if acc is None else acc.add_(part)
    return acc.reshape(*a.shape[:-1], nibbles.shape[0] // 2)
