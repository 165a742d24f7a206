"""H_D applied as two small Kronecker factors, as every ``hadamard_quant`` implementation does, and that
implementation as two batched float64 matrix products (cuBLAS on CUDA): the CUDA implementation where
Triton cannot compile the kernel's float64 ``tl.dot`` for sm_90 (Triton 3.6, the GPU machine's version,
fails in its LLVM lowering; 3.9 compiles it).

Sylvester matrices are Kronecker powers of H_2, so H_m ⊗ H_{2**k} = H_{m * 2**a} ⊗ H_{2**(k - a)} for any
0 <= a <= k. With a row y of length D read as the (R, C) matrix Y, H_D @ y = H_R @ Y @ H_C.T. Both products
are ±1 sums of float16 values, exact in float64 in any order (see ``reference``), so the codes are
bit-identical to ``hadamard_quant_ref``'s dense product.
"""

import torch

from mamba_qpass.kernels.hadamard_quant.reference import hadamard_quant_epilogue
from mamba_qpass.numerics import hadamard_factors, hadamard_output_scale

MAX_RIGHT_FACTOR = 256  # largest power-of-two factor a kernel holds as one (C, C) tile


def kronecker_split(order: int) -> tuple[int, int]:
    """(R, C) with hadamard_matrix(order) == kron(hadamard_matrix(R), hadamard_matrix(C)), C the
    power-of-two part of the order capped at 256.

    Every factor has H[0, 0] == 1, so both factors can be read off the full matrix H without storing
    them: H_R = H[::C, ::C] and H_C = H[:C, :C]. O(D * (R + C)) work per row instead of O(D**2).
    """
    _, power = hadamard_factors(order)
    right = min(power, MAX_RIGHT_FACTOR)
    return order // right, right


def hadamard_quant_kronecker(y: torch.Tensor, hadamard: torch.Tensor, out_inv_scale: torch.Tensor) -> torch.Tensor:
    order = y.shape[-1]
    rows, cols = kronecker_split(order)
    h = hadamard.to(torch.float64)
    left, right = h[::cols, ::cols], h[:cols, :cols]
    grid = y.reshape(-1, rows, cols).to(torch.float64)
    rotated = torch.matmul(left, torch.matmul(grid, right.T)).reshape(y.shape)
    return hadamard_quant_epilogue(rotated, hadamard_output_scale(out_inv_scale, order)).to(torch.int8)
