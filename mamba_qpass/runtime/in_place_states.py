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

from mamba_qpass.kernels.int8_conv_state_update.triton import int8_conv_state_update
from mamba_qpass.kernels.selective_state_update.triton import selective_state_update

qops = torch.ops.mamba_qpass


def _check_step(name: str, x: torch.Tensor, state: torch.Tensor | None) -> None:
    if state is None or x.shape[1] != 1:
        raise ValueError(
            f"an in-place {name} updates a given state by one token; got {x.shape[1]} tokens and "
            f"{'no' if state is None else 'a'} state (run prompts through the functional step graph)"
        )


def selective_scan_in_place(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state=None):
    _check_step("selective_scan", u, initial_state)
    return selective_state_update(
        u, delta, A, B, C, D, z, delta_bias, delta_softplus, None, initial_state, state_out=initial_state
    )


def int8_selective_scan_in_place(u, delta, A, B, C, D, z, delta_bias, delta_softplus, scales, out_dtype,
                                 initial_state=None):
    _check_step("int8_selective_scan", u, initial_state)
    return selective_state_update(
        u, delta, A, B, C, D, z, delta_bias, delta_softplus, out_dtype, initial_state, scales=scales,
        state_out=initial_state,
    )


def int8_causal_conv1d_in_place(x, weight, dequant_scale, bias, out_inv_scale, silu, initial_state=None):
    _check_step("int8_causal_conv1d", x, initial_state)
    return int8_conv_state_update(
        x, weight, dequant_scale, bias, out_inv_scale, silu, initial_state, state_out=initial_state
    )


IN_PLACE = {
    qops.selective_scan.default: selective_scan_in_place,
    qops.int8_selective_scan.default: int8_selective_scan_in_place,
    qops.int8_causal_conv1d.default: int8_causal_conv1d_in_place,
}


def update_states_in_place(step_graph: fx.GraphModule) -> fx.GraphModule:
    """A copy of ``step_graph`` (``capture.with_state``'s form) whose convs and scans with a one-token
    kernel update their state in place; others (the float conv) stay functional."""
    graph = fx.Graph()
    graph.output(graph.graph_copy(step_graph.graph, {}))
    for node in graph.nodes:
        if node.op == "call_function" and node.target in IN_PLACE and node.kwargs.get("initial_state") is not None:
            node.target = IN_PLACE[node.target]
    graph.lint()
    updated = fx.GraphModule(step_graph, graph, class_name="MambaInPlaceStepGraph")
    updated.meta.update(step_graph.meta)
    return updated
