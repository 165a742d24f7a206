"""Rotates each out_proj's input by an orthonormal Hadamard matrix and its weight by the same.

``W y = (W Hn^T)(Hn y)`` for ``Hn = H / sqrt(D)``, so the float graph computes the same function
(to rounding) while the tensor that gets quantised, ``Hn y``, has its outlier channels spread over
all channels. The ±1 matrix is stored once per inner size and shared by every layer.
"""

import math

import torch
import torch.fx as fx

from mamba_qpass.graph_utils import add_tensor_attr, attr_of
from mamba_qpass.numerics import hadamard_matrix
from mamba_qpass.passes.layers import find_layers

qops = torch.ops.mamba_qpass


def rotate_out_proj(gm: fx.GraphModule) -> fx.GraphModule:
    hadamard_nodes: dict[int, fx.Node] = {}
    first = next(iter(gm.graph.nodes))
    for layer in find_layers(gm):
        if layer.out_proj_input is not layer.scan:
            raise ValueError("out_proj's input is already rotated")
        weight_node = layer.out_proj.args[1]
        weight = attr_of(gm, weight_node)
        order = weight.shape[1]
        if order not in hadamard_nodes:
            hadamard_nodes[order] = add_tensor_attr(gm, f"hadamard_{order}", hadamard_matrix(order).to(weight.device), first.next)
        h = hadamard_nodes[order]
        rotated_weight = (weight.detach().double() @ attr_of(gm, h).double().T / math.sqrt(order)).to(weight.dtype)
        new_weight = add_tensor_attr(gm, f"{weight_node.target}_rotated", rotated_weight, layer.out_proj)
        with gm.graph.inserting_before(layer.out_proj):
            rotated = gm.graph.call_function(qops.hadamard_rotate.default, (layer.scan, h))
        layer.out_proj.args = (rotated, new_weight, *layer.out_proj.args[2:])
    return gm
