"""The GPU's approximate base-2 logarithm and reciprocal for the scan's float32 math, with the interpreter's
exact ones in their place.

The selective scan is float32 and matches its reference to float32 rounding, not bit for bit (its decays
already use the GPU's approximate ``exp2``). Its softplus and SiLU gate took libdevice's exact ``log``
(a 22-instruction polynomial) and IEEE divisions (9 instructions with their range fix-ups) for every
(step, channel); ``lg2.approx`` and ``rcp.approx`` are one special-function instruction each. In sm_90 code
of the 2.8b prefill scan's tile that is 863 instead of 1101 instructions for a chunk of the summary pass,
1291 instead of 1615 for the output pass (``benchmarks/RESULTS.md``, twenty-third session).

Inline PTX does not run under TRITON_INTERPRET=1 and exists only for NVIDIA GPUs, so kernels take
``FAST_MATH`` from ``fast_math(device)`` and fall back to ``tl.log2`` and a division there: the same
formulas with exact intrinsics, so the interpreter tests every branch of the code around them. A kernel's
int8 and float variants (and the prefill scan and the decode step) take the same helpers, so they still
agree bit for bit with each other on either path.
"""

import torch
import triton
import triton.language as tl


# exp(x) as exp2(x * LOG2_E): ex2 is the special-function unit's exponential
LOG2_E = tl.constexpr(1.4426950408889634)


def fast_math(device: torch.device) -> dict:
    """The ``FAST_MATH`` flag of a launch on ``device``: the approximate intrinsics on NVIDIA GPUs only."""
    return dict(FAST_MATH=device.type == "cuda" and torch.version.hip is None)


@triton.jit
def log2_f32(x, FAST_MATH: tl.constexpr):
    """log2 of float32 x: within 2**-22 absolute for x in [0.5, 2] and 2 ulp elsewhere with FAST_MATH (PTX's
    lg2.approx.ftz), exact otherwise."""
    if FAST_MATH:
        return tl.inline_asm_elementwise("lg2.approx.ftz.f32 $0, $1;", "=r,r", [x], dtype=tl.float32, is_pure=True,
                                         pack=1)
    return tl.log2(x)


@triton.jit
def reciprocal_f32(x, FAST_MATH: tl.constexpr):
    """1 / x for float32 x: within 1 ulp with FAST_MATH (PTX's rcp.approx.ftz), correctly rounded otherwise."""
    if FAST_MATH:
        return tl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=r,r", [x], dtype=tl.float32, is_pure=True,
                                         pack=1)
    return 1.0 / x
