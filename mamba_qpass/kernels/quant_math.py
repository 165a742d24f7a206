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
epilogue. After the clamp the value is an integer in [-128, 127], whose code the last step reads off its
bits.

The GPU converts between number formats at a quarter of its float64 rate (16 results a clock on an SM),
and an int8 GEMM's epilogue converted three times a value (int32 -> float64, float64 -> float32, float32
-> int8). Two of those are exact bit manipulations instead: ``tl_int32_to_float64`` and the last step of
``tl_round_half_even_clamp_int8``; the float64 -> float32 one stays.

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
    """int8 codes of a float64 ``v``: round half to even (1.5 * 2**52 trick), clamp to [-128, 127] in
    float32. The clamped value c is an integer, so c + 1.5 * 2**23 is exact and its bits are
    0x4B400000 + c, whose low byte is c's: a truncation, where converting c would take the conversion unit."""
    rounded = ((v + 6755399441055744.0) - 6755399441055744.0).to(tl.float32)
    clamped = tl.minimum(tl.maximum(rounded, -128.0), 127.0)
    return (clamped + 12582912.0).to(tl.int32, bitcast=True).to(tl.int8)


@triton.jit
def tl_int32_to_float64(x):
    """int32 ``x`` as float64, exactly, without the conversion unit: the high word 0x43300000 over the low
    word x + 2**31 (x with its sign bit flipped, read unsigned) spells the float64 2**52 + 2**31 + x (whose
    unit in the last place is 1), and subtracting 2**52 + 2**31 leaves x."""
    low = (x ^ -2147483648).to(tl.uint32, bitcast=True).to(tl.int64)
    return (low | 0x4330000000000000).to(tl.float64, bitcast=True) - 4503601774854144.0
