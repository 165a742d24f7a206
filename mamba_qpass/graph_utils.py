"""Small helpers the passes share: reading and adding tensor attributes, matching ops."""

import torch
import torch.fx as fx
from torch import nn


def get_attr_value(gm: fx.GraphModule, qualname: str) -> torch.Tensor:
    obj = gm
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def add_tensor_attr(gm: fx.GraphModule, qualname: str, tensor: torch.Tensor, before: fx.Node) -> fx.Node:
    """Registers ``tensor`` as a buffer at ``qualname`` (creating parent modules) and returns a
    get_attr node for it, inserted before ``before``."""
    *parents, leaf = qualname.split(".")
    module: nn.Module = gm
    for part in parents:
        if not hasattr(module, part):
            module.add_module(part, nn.Module())
        module = getattr(module, part)
    if hasattr(module, leaf) and leaf not in module._buffers:
        raise ValueError(f"attribute {qualname} already exists and is not a buffer")
    module.register_buffer(leaf, tensor.detach())  # a buffer never carries autograd history
    with gm.graph.inserting_before(before):
        node = gm.graph.get_attr(qualname)
    return node


def find_or_add_tensor_attr(gm: fx.GraphModule, qualname: str, tensor: torch.Tensor, before: fx.Node) -> fx.Node:
    """The graph's get_attr node for ``qualname``, or ``add_tensor_attr`` of ``tensor`` if it has none."""
    existing = gm.graph.find_nodes(op="get_attr", target=qualname)
    return existing[0] if existing else add_tensor_attr(gm, qualname, tensor, before)


def is_call(node, *targets) -> bool:
    return isinstance(node, fx.Node) and node.op == "call_function" and node.target in targets


def attr_of(gm: fx.GraphModule, node: fx.Node) -> torch.Tensor:
    if node.op != "get_attr":
        raise ValueError(f"expected a get_attr node, got {node.format_node()}")
    return get_attr_value(gm, node.target)
