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

import torch
import torch.fx as fx

from mamba_qpass.cuda_kernels import int8_selective_scan_dt_proj_in_place, int8_selective_scan_in_place
from mamba_qpass.graph_utils import is_call

qops = torch.ops.mamba_qpass


def _fusable_dt_proj(delta: fx.Node, scan: fx.Node) -> bool:
    """An int8_linear giving int8 codes, without bias or residual, read by this scan alone."""
    if not is_call(delta, qops.int8_linear.default) or list(delta.users) != [scan] or delta.kwargs:
        return False
    a, _, _, bias, out_inv_scale, *rest = delta.args
    return bias is None and out_inv_scale is not None and not any(r is not None for r in rest[1:])


def fuse_dt_proj(step_graph: fx.GraphModule) -> fx.GraphModule:
    """A copy of ``step_graph`` (sharing its tensors) with each fusable dt_proj computed by its scan."""
    graph = fx.Graph()
    graph.output(graph.graph_copy(step_graph.graph, {}))
    for scan in list(graph.nodes):
        if not (scan.op == "call_function" and scan.target is int8_selective_scan_in_place):
            continue
        u, delta, *rest = scan.args
        if not _fusable_dt_proj(delta, scan):
            continue
        low_rank, weight, dequant_scale, _, out_inv_scale = delta.args[:5]
        scan.target = int8_selective_scan_dt_proj_in_place
        scan.args = (u, low_rank, weight, dequant_scale, out_inv_scale, *rest)
        graph.erase_node(delta)
    graph.lint()
    fused = fx.GraphModule(step_graph, graph, class_name="MambaFusedStepGraph")
    fused.meta.update(step_graph.meta)
    return fused
