"""The Triton twin of ``numerics.round_half_even_clamp_int8``, and the launch options that keep float64
epilogues bit-exact against the PyTorch references.

No libdevice rounding function works under TRITON_INTERPRET=1, so the kernels round with
``(v + 1.5 * 2**52) - 1.5 * 2**52``: adding the magic number leaves no fraction bits in the float64
mantissa and the hardware addition rounds half to even, exactly as ``torch.round`` does for any
|v| < 2**51.

The kernels clamp in float64 by comparing and selecting (the GPU has no float64 min/max instruction, and
emulating the two cost about ten instructions a value), then round with the trick, and read the code off
the low byte of the sum's bits: for a clamped c in [-128, 127], c + 1.5 * 2**52 is 1.5 * 2**52 + round(c),
whose bits are 0x4338000000000000 plus that integer, two's complement, so the low byte is its int8 code.
A NaN passes the comparisons and gives an unspecified code, as its conversion in the reference does.

The GPU converts between number formats at a quarter of its float64 rate (16 results a clock on an SM),
and an int8 GEMM's epilogue converted three times a value (int32 -> float64, float64 -> float32, float32
-> int8). None is left: ``tl_int32_to_float64`` and the code read off the bits replace them. (Widening
float16 and float32 inputs by bits as well, a shift, a select and an exact multiply, made rms_norm_quant
0.78x as fast on an H200: a bandwidth-bound kernel has the conversion unit to spare.)

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
    """int8 codes of a float64 ``v``: clamp to [-128, 127] by comparison, round half to even with
    1.5 * 2**52, and keep the low byte of the sum's bits (the module docstring says why that is the code)."""
    clamped = tl.where(v < -128.0, -128.0, tl.where(v > 127.0, 127.0, v))
    shifted = clamped + 6755399441055744.0
    return shifted.to(tl.int64, bitcast=True).to(tl.int8)


@triton.jit
def tl_int32_to_float64(x):
    """int32 ``x`` as float64, exactly, without the conversion unit: the high word 0x43300000 over the low
    word x + 2**31 (x with its sign bit flipped, read unsigned) spells the float64 2**52 + 2**31 + x (whose
    unit in the last place is 1), and subtracting 2**52 + 2**31 leaves x."""
    low = (x ^ -2147483648).to(tl.uint32, bitcast=True).to(tl.int64)
    return (low | 0x4330000000000000).to(tl.float64, bitcast=True) - 4503601774854144.0
