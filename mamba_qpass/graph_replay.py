"""Replaying a forward as a captured CUDA graph, one graph per input shape.

A lowered graph launches about ten kernels a layer from Python; on a host that needs tens of microseconds
per launch, a prefill of a few thousand tokens waits on the host, not the GPU. A CUDA graph replays every
launch of a forward with one call. Its kernels, their order and their arguments are those of the eager
forward, so the outputs are bit for bit the eager ones (tested on the GPU).

What a graph fixes at capture: the input's shape, dtype and device (a new one captures a new graph, kept
in a small least-recently-used cache) and every tensor the forward reads besides its inputs (the graph's
weights and buffers: move or reload the model and the graphs must be dropped, ``clear()``). Outputs are
copies, so a result stays valid after the next call.
"""

from collections import OrderedDict
from collections.abc import Callable

import torch

WARMUP_CALLS = 2  # the first call compiles and autotunes the Triton kernels, which a capture cannot hold


def _clone(out):
    if isinstance(out, torch.Tensor):
        return out.clone()
    if isinstance(out, (tuple, list)):
        return type(out)(_clone(o) for o in out)
    raise TypeError(f"a replayed forward must return tensors or tuples of them, got {type(out).__name__}")


class CudaGraphReplay:
    """``replay(*inputs)`` equals ``forward(*inputs)`` for CUDA tensor inputs, through a CUDA graph
    captured on the first call with each new input signature (``max_graphs`` kept, least recently used
    dropped first)."""

    def __init__(self, forward: Callable, max_graphs: int = 4):
        if max_graphs < 1:
            raise ValueError(f"max_graphs must be at least 1, got {max_graphs}")
        self.forward = forward
        self.max_graphs = max_graphs
        self._graphs: OrderedDict = OrderedDict()

    def clear(self) -> None:
        """Drop every captured graph and the memory it holds."""
        self._graphs.clear()

    def __len__(self) -> int:
        return len(self._graphs)

    def __call__(self, *inputs: torch.Tensor):
        for i, t in enumerate(inputs):
            if not isinstance(t, torch.Tensor) or t.device.type != "cuda":
                where = t.device if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(f"CUDA graph replay needs CUDA tensor inputs; input {i} is on {where}")
        key = tuple((tuple(t.shape), t.dtype, t.device) for t in inputs)
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._capture(inputs)
            self._graphs[key] = entry
            if len(self._graphs) > self.max_graphs:
                self._graphs.popitem(last=False)
        else:
            self._graphs.move_to_end(key)
        static_inputs, graph, static_out = entry
        for static, t in zip(static_inputs, inputs):
            static.copy_(t)
        graph.replay()
        return _clone(static_out)

    @torch.no_grad()
    def _capture(self, inputs):
        static_inputs = [t.clone() for t in inputs]
        side = torch.cuda.Stream(device=static_inputs[0].device)
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_CALLS):
                self.forward(*static_inputs)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                static_out = self.forward(*static_inputs)
        except RuntimeError as e:
            raise RuntimeError(
                f"capturing the forward as a CUDA graph failed ({e}); run it without CUDA graphs"
            ) from e
        return static_inputs, graph, static_out
