"""Handing a finished graph to inductor without changing a single rounding.

A mode's graph is a numeric contract (float_sim reproduces every int8 code of w8a8; the float modes the
captured model's float ops), and inductor's defaults may break it: its Triton kernels contract a * b + c
into one fused multiply-add (one rounding where the graph has two), and fusing low-precision ops drops the
casts between them. ``emulate_precision_casts`` turns both off (Triton's ``enable_fp_fusion`` off, eager
casts kept); float64 division and square root are correctly rounded in Triton either way, and float_sim's
exact sums (its GEMM's integer accumulators, the Hadamard rotation's ±1 sums) do not depend on the order
inductor adds them in. On an H200, float_sim through inductor this way gives w8a8's logits bit for bit
(``tests/test_float_sim_on_gpu.py``).
"""

from collections.abc import Callable

import torch

EXACT_OPTIONS = {"emulate_precision_casts": True}


def exact_inductor_options(mode: str | None = None) -> dict:
    """torch.compile's options for inductor ``mode`` (None: the default) with the rounding kept as eager
    runs it (torch.compile takes a mode or options, not both, so the mode is spelled out as options)."""
    from torch._inductor import list_mode_options

    return {**list_mode_options(mode or "default"), **EXACT_OPTIONS}


def compile_exact(fn: Callable, mode: str | None = None, dynamic: bool | None = None) -> Callable:
    """``torch.compile(fn, backend="inductor", fullgraph=True)`` with every rounding of ``fn`` kept."""
    return torch.compile(fn, backend="inductor", fullgraph=True, dynamic=dynamic, options=exact_inductor_options(mode))
