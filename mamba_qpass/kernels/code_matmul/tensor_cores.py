"""``nibble_products`` on CUDA: one float16 tensor-core GEMM that accumulates in float32, exact by bounds.

A float64 GEMM is exact but runs at the GPU's float64 rate (67 TFLOPS on an H200, a fifteenth of float16's).
Every operand here is exact in float16 (activation codes in [-128, 127], weight nibbles in [-8, 15]), every
product exact in float32, and a sum of at most ``TERMS`` of them an integer below 2**24 (see reference.py),
which float32 holds exactly whatever the order of the additions.

That the tensor cores keep every bit of such sums (they add in float32 with their own alignment) is what
``tests/kernels/test_code_matmul.py`` checks on the GPU, with operands that drive each sum towards 2**24.
"""

import torch

from mamba_qpass.kernels.code_matmul.reference import check_terms


def nibble_products(a: torch.Tensor, nibbles: torch.Tensor) -> torch.Tensor:
    """a: CUDA (..., K) codes in any float dtype, K <= TERMS; nibbles: float16 (2N, K). Returns the float32
    (..., 2N) products, equal to ``nibble_products_ref``'s."""
    k = a.shape[-1]
    check_terms(k)
    products = torch.mm(a.reshape(-1, k).to(torch.float16), nibbles.T, out_dtype=torch.float32)
    return products.reshape(*a.shape[:-1], nibbles.shape[0])
