"""``hadamard_quant`` as two batched float64 matrix products (cuBLAS on CUDA): the CUDA implementation
where Triton cannot compile the kernel's float64 ``tl.dot`` for sm_90 (Triton 3.6, the GPU machine's
version, fails in its LLVM lowering; 3.9 compiles it).

With a row y of length D read as the (R, C) matrix Y, H_D @ y = H_R @ Y @ H_C.T (``kronecker_split``).
Both products are ±1 sums of float16 values, exact in float64 in any order (see ``reference``), so the
codes are bit-identical to ``hadamard_quant_ref``'s dense product.
"""

import torch

from mamba_qpass.kernels.hadamard_quant.matrix import kronecker_split
from mamba_qpass.kernels.hadamard_quant.reference import hadamard_output_scale
from mamba_qpass.kernels.quant_math import round_half_even_clamp_int8


def hadamard_quant_kronecker(y: torch.Tensor, hadamard: torch.Tensor, out_inv_scale: torch.Tensor) -> torch.Tensor:
    order = y.shape[-1]
    rows, cols = kronecker_split(order)
    h = hadamard.to(torch.float64)
    left, right = h[::cols, ::cols], h[:cols, :cols]
    grid = y.reshape(-1, rows, cols).to(torch.float64)
    rotated = torch.matmul(left, torch.matmul(grid, right.T)).reshape(y.shape)
    return round_half_even_clamp_int8(rotated * hadamard_output_scale(out_inv_scale, order))
