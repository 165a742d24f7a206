"""The CUDA decode step computes dt_proj inside the state update kernel.

At one token a layer's dt_proj is a (dt_rank -> d_inner) GEMV of a few microseconds, most of it launch and
latency, whose only reader is the scan. The one-token state update kernel owns a block of channels, so it
can form those channels' delta codes itself from the low-rank codes and dt_proj's weight rows, with the
exact int32 dot product and ``int8_linear``'s float64 epilogue (``selective_state_update``'s ``dt_proj``):
one launch a layer fewer, and every code and value as before (tested against the two kernels).

For a step graph whose scans already update their states in place (``update_states_in_place``), which is
what the CUDA-graph decode step runs; an int8 dt_proj with a bias, a residual or another reader is left
as it is.
"""

import torch.fx as fx

from mamba_qpass.cuda_kernels import int8_selective_scan_dt_proj_in_place, int8_selective_scan_in_place
from mamba_qpass.graph_utils import attr_of, copied, is_int8_codes_linear


def fuse_dt_proj(step_graph: fx.GraphModule, max_weight_bytes: int | None = None) -> fx.GraphModule:
    """A copy of ``step_graph`` (sharing its tensors) with each fusable dt_proj computed by its scan; with
    ``max_weight_bytes``, only those whose weight is at most that large."""
    fused = copied(step_graph, "MambaFusedStepGraph")
    for scan in list(fused.graph.nodes):
        if not (scan.op == "call_function" and scan.target is int8_selective_scan_in_place):
            continue
        u, delta, *rest = scan.args
        if not is_int8_codes_linear(delta) or list(delta.users) != [scan]:
            continue
        low_rank, weight, dequant_scale, _, out_inv_scale = delta.args[:5]
        if max_weight_bytes is not None and attr_of(fused, weight).nbytes > max_weight_bytes:
            continue
        scan.target = int8_selective_scan_dt_proj_in_place
        scan.args = (u, low_rank, weight, dequant_scale, out_inv_scale, *rest)
        fused.graph.erase_node(delta)
    fused.graph.lint()
    fused.recompile()
    return fused
