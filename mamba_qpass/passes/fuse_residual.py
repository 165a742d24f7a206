"""``fuse_residual_add``: each block's residual add folded into the out_proj GEMM before it.

A Mamba block ends ``residual + out_proj(y)``. In a lowered graph out_proj is an ``int8_linear`` with
float32 output, and the add is a kernel of its own that reads and writes the whole residual stream
again. The linear's epilogue can add the residual as it stores (``int8_linear``'s ``residual``
argument): the same float32 addition, so every value is unchanged, one launch and one pass over the
stream fewer per layer.
"""

import torch
import torch.fx as fx

from mamba_qpass.graph_utils import is_call
from mamba_qpass.taps import move_tap

aten = torch.ops.aten
qops = torch.ops.mamba_qpass


def _float32_linear(node) -> bool:
    """An int8_linear with float32 output, no residual yet, read by nothing but the add."""
    if not is_call(node, qops.int8_linear.default) or len(node.users) != 1:
        return False
    _, _, _, _, out_inv_scale, out_dtype, *residual = node.args
    return out_inv_scale is None and out_dtype == torch.float32 and not residual


def fuse_residual_add(gm: fx.GraphModule) -> fx.GraphModule:
    for add in list(gm.graph.nodes):
        if not is_call(add, aten.add.Tensor) or len(add.args) != 2 or add.kwargs:
            continue
        left, right = add.args
        linear, residual = (right, left) if _float32_linear(right) else (left, right)
        if not _float32_linear(linear) or not isinstance(residual, fx.Node):
            continue
        with gm.graph.inserting_before(add):
            fused = gm.graph.call_function(qops.int8_linear.default, (*linear.args, residual))
        fused.name = add.name
        move_tap(add, fused)
        add.replace_all_uses_with(fused)
        gm.graph.erase_node(add)
        gm.graph.erase_node(linear)
    return gm
