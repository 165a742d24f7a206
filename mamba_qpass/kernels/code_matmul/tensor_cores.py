"""``code_matmul_chunk`` on CUDA: one float16 tensor-core GEMM that accumulates in float32, exact by bounds.

A float64 GEMM is exact but runs at the GPU's float64 rate (67 TFLOPS on an H200, a fifteenth of float16's).
Every operand here is exact in float16 (int8 codes), every product exact in float32, and every partial sum
of at most ``TERMS`` of them an integer of magnitude at most 2**24 (see reference.py), which float32 holds
exactly whatever the order of the additions.

That the tensor cores keep every bit of such sums (they add in float32 with their own alignment) is what
``tests/kernels/test_code_matmul.py`` checks on the GPU, with operands that drive each sum towards 2**24.
"""

import torch

from mamba_qpass.kernels.code_matmul.reference import check_terms


def code_matmul_chunk(a: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """a: CUDA (..., K) codes in any float dtype, K <= TERMS; weight: float16 (N, K) codes. Returns the
    float32 (..., N) accumulator, equal to ``code_matmul_chunk_ref``'s."""
    k = a.shape[-1]
    check_terms(k)
    out = torch.mm(a.reshape(-1, k).to(torch.float16), weight.T, out_dtype=torch.float32)
    return out.reshape(*a.shape[:-1], weight.shape[0])
