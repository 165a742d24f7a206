"""Programmatic dependent launch: a kernel's programs start while the kernel before it finishes.

A decode step of the 2.8b config runs about 400 short kernels, and a kernel launched the usual way starts
only once the one before it has ended and its writes are flushed: every boundary costs the launch, the
ramp of the new grid and the drain of the old one, with the GPU mostly idle. On Hopper and newer a kernel
launched with the programmatic-stream-serialization attribute (Triton's ``launch_pdl``) may start as soon
as every program of the kernel before it has signalled that it may (``gdc_launch_dependents``); each of
its programs then does what reads nothing an earlier kernel writes, and waits (``gdc_wait``) until the
kernel before has completed with its writes visible.

The rule that keeps every result what it was: a kernel launched this way calls ``wait_for_earlier_kernels``
before its first load of anything an earlier kernel may write (activations, states, workspaces) and before
its first store; only reads of the model's constants (weights, scales) may come before it. Then every
kernel's reads and writes follow the end of the kernel before it, which followed the end of the one before
that: the stream's order, wherever it matters. A kernel signals its successor right after its own wait,
so at most one kernel waits ahead of the one running. Kernels launched the usual way (torch's, cuBLAS's)
interleave freely: they wait for the full end of what precedes them, and a kernel after them sees them
ended when its wait returns.

On where the device supports it (CUDA, compute capability 9.0 or newer) for launches of at most
MAX_TOKENS token rows: decode steps and short prompts, whose kernels are short enough for the boundaries
to count. Timed on an H200 (thirteenth session, CUDA graphs, 2.8b config, outputs equal bit for bit): a
w8a8 decode step 2.088 against 2.354 ms at B=1 and 2.815 against 2.903 ms at B=16, but a 2048-token
prefill 30.38 against 30.03 ms, so longer launches go without it. Off on the CPU, under the interpreter,
and inside ``independent_launches()``, which benchmarks use to show what it buys. A CUDA graph captured
while it is on keeps the programmatic edges.
"""

import contextlib
import functools

import torch
import triton
import triton.language as tl

MAX_TOKENS = 64  # the decode batch sizes the benchmarks time (1, 16, 64)
_disabled = 0  # depth of open independent_launches() blocks


@functools.lru_cache(maxsize=None)
def _supported(device_index: int) -> bool:
    """NVIDIA Hopper or newer (ROCm devices are "cuda" devices to torch too, with their own numbering)."""
    return torch.version.hip is None and torch.cuda.get_device_capability(device_index)[0] >= 9


def dependent_launch(device: torch.device, tokens: int) -> dict:
    """The arguments a launch on ``device`` over ``tokens`` token rows adds: the kernel's ``USE_GDC`` flag
    and, where it is on, Triton's ``launch_pdl`` option."""
    if _disabled or tokens > MAX_TOKENS or device.type != "cuda" or not _supported(
        device.index if device.index is not None else torch.cuda.current_device()
    ):
        return dict(USE_GDC=False)
    return dict(USE_GDC=True, launch_pdl=True)


@contextlib.contextmanager
def independent_launches():
    """Kernels launched (and CUDA graphs captured) inside the block start only when the kernel before
    them has ended, as launches without the attribute do."""
    global _disabled
    _disabled += 1
    try:
        yield
    finally:
        _disabled -= 1


@triton.jit
def wait_for_earlier_kernels(USE_GDC: tl.constexpr):
    """Waits until the kernel before has completed and its writes are visible, then lets the next kernel's
    programs start (module docstring). Nothing without USE_GDC."""
    if USE_GDC:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()
