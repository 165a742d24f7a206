"""The CUDA decode step's conv and scan write each new state over the old one.

A step graph is functional: each layer's conv and scan op returns its new state as a new tensor, which the
CUDA-graph decode step then copies back into its static state buffers, two copy kernels a layer (128 of a
2.8b step's ~650 launches). The one-token kernels can instead write the new state into the state they
read (each program reads its channels' state before writing them), so ``update_states_in_place`` points
those nodes at the same kernels called with ``state_out=initial_state``: the graph's state outputs are
then its state inputs, updated, and there is nothing to copy. The kernels and their arguments are the ones
the ops dispatch to on CUDA, so every output and state is bit for bit the functional step's (tested).

Only for a graph that runs decode steps on buffers it owns: the states passed in are overwritten.
"""

import torch
import torch.fx as fx

from mamba_qpass.cuda_kernels import int8_causal_conv1d_in_place, int8_selective_scan_in_place, selective_scan_in_place
from mamba_qpass.graph_utils import copied

qops = torch.ops.mamba_qpass


IN_PLACE = {
    qops.selective_scan.default: selective_scan_in_place,
    qops.int8_selective_scan.default: int8_selective_scan_in_place,
    qops.int8_causal_conv1d.default: int8_causal_conv1d_in_place,
}


def update_states_in_place(step_graph: fx.GraphModule) -> fx.GraphModule:
    """A copy of ``step_graph`` (``capture.with_state``'s form) whose convs and scans with a one-token
    kernel update their state in place; others (the float conv) stay functional."""
    updated = copied(step_graph, "MambaInPlaceStepGraph")
    for node in updated.graph.nodes:
        if node.op == "call_function" and node.target in IN_PLACE and node.kwargs.get("initial_state") is not None:
            node.target = IN_PLACE[node.target]
    updated.graph.lint()
    updated.recompile()
    return updated
