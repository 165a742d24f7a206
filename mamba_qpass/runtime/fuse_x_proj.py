"""The CUDA decode step computes x_proj in the kernel that does in_proj and the conv's step.

At one token a layer's x_proj is a GEMV over a weight of about 1 MB (2.8b: 192 outputs over 5120 channels)
whose time is launch and latency, and its only input is the conv's output, which the fused in_proj + conv
kernel (``fuse_in_proj_conv``) has in registers tile by tile. With an ``XProjection`` that kernel adds
each tile's exact int32 share of x_proj into a workspace and its last x tile runs ``int8_linear``'s
epilogue (``kernels/int8_linear_conv_step``), so x_proj's launch goes and every code is as before (tested
against the kernels one after the other).

Not among ``decode_rewrites`` (so not what ``generate`` runs): on an H200 it makes the 2.8b step slower
at B=16, 0.656 against 0.619 ms for 8 layers with the relaxed sums the kernel has (0.827 with acq_rel
ones; benchmarks/RESULTS.md, nineteenth and twentieth sessions), the longer fused kernel costing more than
x_proj's own launch; B=1 is not yet timed. ``bench_step.py`` and ``bench_decode.py --rewrites`` time it as
the "all" variant.

For a step graph whose in_proj and conv are already one call (``fuse_in_proj_conv``). The pattern is
w8a8's: an ``int8_linear`` giving int8 codes without bias or residual whose input is that call's conv
output; an x_proj of another kind is left as it is.
"""

import operator

import torch.fx as fx

from mamba_qpass.cuda_kernels import int8_linear_conv_step_in_place, int8_linear_conv_x_proj_step_in_place
from mamba_qpass.graph_utils import copied, is_call, is_int8_codes_linear


def _conv_out_of(fused: fx.Node) -> fx.Node | None:
    """The node reading the conv's output of a fused in_proj + conv call: ``fused[1][0]``."""
    conv = [u for u in fused.users if is_call(u, operator.getitem) and u.args[1] == 1]
    outs = [u for c in conv for u in c.users if is_call(u, operator.getitem) and u.args[1] == 0]
    return outs[0] if len(outs) == 1 else None


def fuse_x_proj(step_graph: fx.GraphModule) -> fx.GraphModule:
    """A copy of ``step_graph`` (sharing its tensors) with each fusable x_proj done by its fused in_proj +
    conv call."""
    gm = copied(step_graph, "MambaFusedStepGraph")
    graph = gm.graph
    for fused in list(graph.nodes):
        if not is_call(fused, int8_linear_conv_step_in_place):
            continue
        conv_out = _conv_out_of(fused)
        x_projs = [u for u in conv_out.users if is_int8_codes_linear(u) and u.args[0] is conv_out] if conv_out else []
        if len(x_projs) != 1:
            continue
        x_proj = x_projs[0]
        _, x_weight, x_dequant, _, x_inv = x_proj.args[:5]
        for arg in (x_weight, x_dequant, x_inv):
            if arg.op == "get_attr":
                fused.prepend(arg)  # read before the fused call, where x_proj now happens
        fused.target = int8_linear_conv_x_proj_step_in_place
        fused.args = (*fused.args, x_weight, x_dequant, x_inv)
        with graph.inserting_after(fused):
            x_codes = graph.call_function(operator.getitem, (fused, 2))
        x_proj.replace_all_uses_with(x_codes)
        graph.erase_node(x_proj)
    graph.lint()
    gm.recompile()
    return gm
