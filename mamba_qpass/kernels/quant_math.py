"""The Triton twin of ``numerics.round_half_even_clamp_int8``, and the launch options that keep float64
epilogues bit-exact against the PyTorch references.

No libdevice rounding function works under TRITON_INTERPRET=1, so the kernels round with
``(v + 1.5 * 2**52) - 1.5 * 2**52``: adding the magic number leaves no fraction bits in the float64
mantissa and the hardware addition rounds half to even, exactly as ``torch.round`` does for any
|v| < 2**51.

The kernels round first and clamp the integer: the bounds are integers, so clamping after rounding gives
what the reference's clamp-then-round gives. For |v| < 2**30, v + 1.5 * 2**52 is 1.5 * 2**52 + round(v),
whose bits are 0x4338000000000000 plus that integer, two's complement, so the low word is round(v) as an
int32 (the bound is below 2**31 because v just under 2**31 rounds to it, which would wrap). Larger |v|
(and infinities) clamp v's high word instead: its sign is v's, and its magnitude, at least 0x41d00000
(the exponent of 2**30), is far outside [-128, 127]. A NaN gives an unspecified code, as its conversion
in the reference does. A float64 clamp took two float64 comparisons and selects (the GPU has no float64
min/max, and its float64 unit issues at half the float32 rate); the integer clamp takes two ALU
instructions, and the test of |v| one float64 comparison: sm_90 code of the prefill GEMM's 128 x 128 tile
with int8 output, 2304 instructions a thread against 2440, float64 ones 640 against 768; on an H200 the
2.8b dt_proj at 2048 tokens, whose epilogue is most of its work, 16.6 against 17.5 us.

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
    """int8 codes of a float64 ``v``: rounded half to even with 1.5 * 2**52, and the sum's low word (or, for
    |v| >= 2**30, v's high word) clamped to [-128, 127] as an integer (the module docstring says why that is
    the reference's clamp, then round)."""
    rounded = (v + 6755399441055744.0).to(tl.int64, bitcast=True).to(tl.int32)
    high_word = (v.to(tl.int64, bitcast=True) >> 32).to(tl.int32)
    integer = tl.where(tl.abs(v) < 1073741824.0, rounded, high_word)
    return tl.minimum(tl.maximum(integer, -128), 127).to(tl.int8)


@triton.jit
def tl_int32_to_float64(x):
    """int32 ``x`` as float64, exactly, without the conversion unit: the high word 0x43300000 over the low
    word x + 2**31 (x with its sign bit flipped, read unsigned) spells the float64 2**52 + 2**31 + x (whose
    unit in the last place is 1), and subtracting 2**52 + 2**31 leaves x."""
    low = (x ^ -2147483648).to(tl.uint32, bitcast=True).to(tl.int64)
    return (low | 0x4330000000000000).to(tl.float64, bitcast=True) - 4503601774854144.0
