"""The CUDA decode step does the conv's one-token update in in_proj's GEMM.

At one token a layer's conv is a few microseconds of launch and latency for a window sum per channel,
and the channels it needs are in_proj's first D output codes. ``int8_linear_conv_step`` computes those
codes and, in the same program, each channel's conv from its state, so the conv's launch goes. Every code
and state is the two kernels' (tested against them).

For a step graph whose convs already update their states in place (``update_states_in_place``), which is
what the CUDA-graph decode step runs. The pattern is w8a8's: an ``int8_linear`` giving int8 codes without
bias or residual, whose first D columns (a slice read by nothing else) are the in-place int8 conv's input.
"""

import operator

import torch
import torch.fx as fx

from mamba_qpass.cuda_kernels import int8_causal_conv1d_in_place, int8_linear_conv_step_in_place
from mamba_qpass.graph_utils import attr_of, copied, is_call, is_int8_codes_linear

aten = torch.ops.aten


def _in_proj_of(gm: fx.GraphModule, conv: fx.Node) -> fx.Node | None:
    """The int8_linear whose codes' first D columns are this conv's input, if the pattern holds."""
    x, conv_weight = conv.args[:2]
    if not is_call(x, aten.slice.Tensor) or list(x.users) != [conv] or conv_weight.op != "get_attr":
        return None
    linear, dim, start, end = (*x.args, None)[:4]
    if dim not in (-1, 2) or start != 0 or end != attr_of(gm, conv_weight).shape[0]:
        return None
    return linear if is_int8_codes_linear(linear) else None


def fuse_in_proj_conv(step_graph: fx.GraphModule) -> fx.GraphModule:
    """A copy of ``step_graph`` (sharing its tensors) with each fusable in_proj and conv as one call."""
    gm = copied(step_graph, "MambaFusedStepGraph")
    graph = gm.graph
    for conv in list(graph.nodes):
        if not (conv.op == "call_function" and conv.target is int8_causal_conv1d_in_place):
            continue
        linear = _in_proj_of(gm, conv)
        if linear is None:
            continue
        x, conv_weight, conv_dequant, conv_bias, conv_inv, silu = conv.args
        for arg in (conv_weight, conv_dequant, conv_bias, conv_inv):
            if isinstance(arg, fx.Node) and arg.op == "get_attr":
                linear.prepend(arg)  # the conv's weights are read before in_proj, where the fused call goes
        a, weight, dequant, _, out_inv_scale = linear.args[:5]
        with graph.inserting_before(linear):
            fused = graph.call_function(
                int8_linear_conv_step_in_place,
                (a, weight, dequant, out_inv_scale, conv_weight, conv_dequant, conv_bias, conv_inv, silu),
                {"initial_state": conv.kwargs["initial_state"]},
            )
            codes = graph.call_function(operator.getitem, (fused, 0))
            conv_result = graph.call_function(operator.getitem, (fused, 1))
        conv.replace_all_uses_with(conv_result)
        graph.erase_node(conv)
        graph.erase_node(x)
        linear.replace_all_uses_with(codes)
        graph.erase_node(linear)
    graph.lint()
    gm.recompile()
    return gm
