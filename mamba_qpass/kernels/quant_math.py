"""The Triton twin of ``numerics.round_half_even_clamp_int8``, and the launch options that keep float64
epilogues bit-exact against the PyTorch references.

No libdevice rounding function works under TRITON_INTERPRET=1, so the kernels round with
``(v + 1.5 * 2**52) - 1.5 * 2**52``: adding the magic number leaves no fraction bits in the float64
mantissa and the hardware addition rounds half to even, exactly as ``torch.round`` does for any
|v| < 2**51.

The reference clamps to [-128, 127] and then rounds; the kernels round first and clamp after, in float32.
Both give the same code for every v: rounding is monotone and leaves the integer bounds where they are, so
round(clamp(v)) == clamp(round(v)); a |v| >= 2**51, which the trick does not round exactly, still lands
beyond the bound of its sign; the rounded value converts to float32 without crossing a bound (integers in
[-128, 127] are exact there, and -128 and 127 are float32 numbers that conversion cannot cross); NaN gives
the same code either way (the float min/max drop it). Why float32: the GPU has no float64 min/max
instruction, and emulating the two cost about ten instructions a value, a third of the int8 GEMM's
epilogue. After the clamp the value is integral, so the final conversion to int8 (a truncation) is exact.

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
    """int8 codes of a float64 ``v``: round half to even (1.5 * 2**52 trick), clamp to [-128, 127] in float32."""
    rounded = ((v + 6755399441055744.0) - 6755399441055744.0).to(tl.float32)
    return tl.minimum(tl.maximum(rounded, -128.0), 127.0).to(tl.int8)
