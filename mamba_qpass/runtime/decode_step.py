"""One decode step of a batch: a token per row in, the last position's logits out, the layers' states kept
between steps. ``EagerDecodeStep`` runs the step graph; ``CudaGraphDecodeStep`` replays it as a CUDA graph
captured once per batch size, with the token and every state in static buffers that the graph itself
updates (in place where a one-token kernel can, ``in_place_states``; the conv's step done by in_proj,
``fuse_in_proj_conv``; dt_proj computed by the state update, ``fuse_dt_proj``), so a step costs one launch
instead of one per kernel."""

import functools
from collections.abc import Callable, Sequence

import torch
import torch.fx as fx

from mamba_qpass.graph_replay import capture_cuda_graph
from mamba_qpass.capture import ssm_state_positions
from mamba_qpass.runtime.direct_calls import direct_calls
from mamba_qpass.runtime.state_precision import check_ssm_state_dtype, computed, stored

# The fusions save a launch a layer each. The conv's step inside in_proj is used up to this batch: beyond
# it, it was timed slower on an H200 (2.8b, B=64, with a fixed 16-row tile; the tile is autotuned since).
FUSED_MAX_BATCH = 16
# The fused state update reads dt_proj's weight rows once for every program of batch rows it runs over a
# block of channels (``state_update_tiling``'s ROWS a program, with dt_proj), where the GEMM reads them once:
# it is used while those reads come to at most this many bytes. Timed on an H200 (benchmarks/RESULTS.md):
# faster at 2.8b B=1 (0.8 MB: 2.245 -> 2.167 ms a step, fourteenth session), at 2.8b B=16 with 8 rows a
# program (1.6 MB: 8 layers' step 0.619 -> 0.616 ms, twice, eighteenth session) and at 130m B=64 with one
# row a program (4.7 MB, run C); slower at 2.8b B=32 with 8 rows a program (3.3 MB: 0.913 -> 0.925 ms, 8
# layers), and with one row a program at 2.8b B=16 (13 MB) and B=64 (52 MB).
DT_PROJ_FUSED_MAX_BYTES = 2 * 2**20


def decode_rewrites(batch: int) -> tuple[Callable[[fx.GraphModule], fx.GraphModule], ...]:
    """The step-graph rewrites a CUDA decode step of ``batch`` rows runs, in order: states updated in
    place, then (up to FUSED_MAX_BATCH rows) the conv's step inside in_proj, then dt_proj inside the state
    update where its weight, times the programs of batch rows reading it, is at most
    DT_PROJ_FUSED_MAX_BYTES."""
    # they call the Triton kernels, which only a CUDA step needs (the package imports without Triton)
    from mamba_qpass.cuda_kernels import state_update_tiling
    from mamba_qpass.runtime.fuse_dt_proj import fuse_dt_proj
    from mamba_qpass.runtime.fuse_in_proj_conv import fuse_in_proj_conv
    from mamba_qpass.runtime.in_place_states import update_states_in_place

    weight_reads = -(-batch // state_update_tiling(batch, torch.device("cuda"), dt_proj=True)["ROWS"])
    return (
        update_states_in_place,
        *((fuse_in_proj_conv,) if batch <= FUSED_MAX_BATCH else ()),
        functools.partial(fuse_dt_proj, max_weight_bytes=DT_PROJ_FUSED_MAX_BYTES // weight_reads),
    )


class EagerDecodeStep:
    """The step graph run op by op. With ``ssm_state_dtype`` float16 the SSM states are kept in float16
    between steps (``state_precision``) and handed to the graph in float32."""

    def __init__(self, step_graph: fx.GraphModule, ssm_state_dtype: torch.dtype = torch.float32):
        check_ssm_state_dtype(ssm_state_dtype)
        self.step_graph = step_graph
        self.ssm_state_dtype = ssm_state_dtype
        self.ssm_positions = ssm_state_positions(step_graph) if ssm_state_dtype != torch.float32 else ()
        self.states: tuple[torch.Tensor, ...] = ()

    def start(self, states: tuple[torch.Tensor, ...]) -> None:
        """Continue from ``states`` (what a prefill returned)."""
        self.states = stored(tuple(states), self.ssm_positions, self.ssm_state_dtype)

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (batch, 1) -> logits (batch, vocab) of that position; the states advance one step."""
        logits, new_states = self.step_graph(tokens, *computed(self.states, self.ssm_positions))
        self.states = stored(new_states, self.ssm_positions, self.ssm_state_dtype)
        return logits[:, -1]


class CudaGraphDecodeStep:
    """The step graph captured as a ``torch.cuda.CUDAGraph`` for one batch size and one set of state shapes.

    The returned logits are the graph's static output buffer: read (or copy) them before the next call.
    Sampling runs after the graph, on those logits. ``rewrites`` (default ``decode_rewrites(batch)``) are
    applied to the step graph before capture; the benchmarks pass others to time each one. The state
    buffers take ``example_states``' dtypes: float16 SSM states (``state_precision``) are read and written
    as such by the in-place state update (``update_states_in_place``)."""

    def __init__(self, step_graph: fx.GraphModule, example_states: tuple[torch.Tensor, ...], pool=None,
                 rewrites: Sequence[Callable[[fx.GraphModule], fx.GraphModule]] | None = None):
        device = example_states[0].device
        if device.type != "cuda":
            raise ValueError(f"a CUDA graph decode step needs CUDA states, got states on {device}")
        batch = example_states[0].shape[0]
        self.tokens = torch.zeros(batch, 1, dtype=torch.long, device=device)
        self.states = tuple(s.clone() for s in example_states)
        step = step_graph
        for rewrite in decode_rewrites(batch) if rewrites is None else rewrites:
            step = rewrite(step)
        # captured with its ops called directly: the same kernels, and the per-tensor (de)quantise nodes
        # of fp32_ssm, fp32_conv and qdq take their constant scales as numbers instead of reading them on
        # the host at every call, which a capture cannot do
        step = direct_calls(step)
        self.graph, self.logits = capture_cuda_graph(lambda: self._advance(step), device, pool)

    def _advance(self, step_graph: fx.GraphModule) -> torch.Tensor:
        logits, new_states = step_graph(self.tokens, *self.states)
        for buffer, new in zip(self.states, new_states):
            if new is not buffer:  # a state its kernel did not update in place
                buffer.copy_(new)
        return logits[:, -1]

    def start(self, states: tuple[torch.Tensor, ...]) -> None:
        for buffer, state in zip(self.states, states, strict=True):
            buffer.copy_(state)

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        self.tokens.copy_(tokens)
        self.graph.replay()
        return self.logits
