"""The one rounding rule of the int8 datapath, written once for PyTorch and once for Triton.

Every requantisation computes a float64 value ``v`` and turns it into an int8 code by
clamping to [-128, 127] first and then rounding half to even. Both implementations use the
same arithmetic: ``(v + 1.5 * 2**52) - 1.5 * 2**52`` rounds any |v| < 2**51 to the nearest
integer with ties to even, because adding the magic number leaves no fraction bits in the
float64 mantissa and the hardware addition rounds half to even. It needs no libdevice
function (none works under TRITON_INTERPRET=1), and after the clamp the value is integral, so
the final float-to-int8 conversion (a truncation in Triton) is exact.

Kernels that compute such values must be launched with ``**EXACT_FP_LAUNCH`` so the compiler
does not contract ``a * b + c`` into a fused multiply-add that the PyTorch reference does not do.
"""

import torch
import triton
import triton.language as tl

INT8_MIN = -128
INT8_MAX = 127
ROUND_MAGIC = 6755399441055744.0  # 1.5 * 2**52; exactly representable in float32 too

# Triton launch options for kernels whose float64 results must match PyTorch bit for bit.
# The interpreter ignores launch options it does not know, so this is safe under TRITON_INTERPRET=1.
EXACT_FP_LAUNCH = {"enable_fp_fusion": False}


def round_half_even_clamp_int8(v: torch.Tensor) -> torch.Tensor:
    """int8 codes of a float64 tensor: clamp to [-128, 127], round half to even, convert."""
    if v.dtype != torch.float64:
        raise ValueError(f"round_half_even_clamp_int8 expects float64, got {v.dtype}")
    clamped = v.clamp(INT8_MIN, INT8_MAX)
    return ((clamped + ROUND_MAGIC) - ROUND_MAGIC).to(torch.int8)


@triton.jit
def tl_round_half_even_clamp_int8(v):
    """Triton twin of ``round_half_even_clamp_int8``; ``v`` must be float64."""
    clamped = tl.minimum(tl.maximum(v, -128.0), 127.0)
    return ((clamped + 6755399441055744.0) - 6755399441055744.0).to(tl.int8)
