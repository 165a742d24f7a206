"""The Triton twin of ``numerics.round_half_even_clamp_int8``, and the launch options that keep float64
epilogues bit-exact against the PyTorch references.

No libdevice rounding function works under TRITON_INTERPRET=1, so the kernels round with
``(v + 1.5 * 2**52) - 1.5 * 2**52``: adding the magic number leaves no fraction bits in the float64
mantissa and the hardware addition rounds half to even, exactly as ``torch.round`` does for any
|v| < 2**51. After the clamp the value is integral, so the final conversion to int8 (a truncation in
Triton) is exact.

Kernels that compute such values must be launched with ``**EXACT_FP_LAUNCH`` so the compiler does not
contract ``a * b + c`` into a fused multiply-add that the PyTorch reference does not do.
"""

import triton
import triton.language as tl

# Triton launch options for kernels whose float64 results must match PyTorch bit for bit.
# The interpreter ignores launch options it does not know, so this is safe under TRITON_INTERPRET=1.
EXACT_FP_LAUNCH = {"enable_fp_fusion": False}


@triton.jit
def tl_round_half_even_clamp_int8(v):
    """int8 codes of a float64 ``v``: clamp to [-128, 127], round half to even (1.5 * 2**52 trick)."""
    clamped = tl.minimum(tl.maximum(v, -128.0), 127.0)
    return ((clamped + 6755399441055744.0) - 6755399441055744.0).to(tl.int8)
