"""Small helpers the passes share: reading and adding tensor attributes, matching ops, copying a graph."""

import itertools
import operator
from collections.abc import Sequence

import torch
import torch.fx as fx
from torch import nn

from mamba_qpass.taps import move_tap


def get_attr_value(gm: fx.GraphModule, qualname: str) -> torch.Tensor:
    obj = gm
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def graph_device(gm: fx.GraphModule) -> torch.device:
    """The device a graph's tensors (parameters, then buffers) are on; the CPU for a graph without any."""
    first = next(itertools.chain(gm.parameters(), gm.buffers()), None)
    return first.device if first is not None else torch.device("cpu")


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


def is_int8_codes_linear(node) -> bool:
    """An ``int8_linear`` giving int8 codes (per-column output scales), without bias or residual."""
    if not is_call(node, torch.ops.mamba_qpass.int8_linear.default) or node.kwargs:
        return False
    _, _, _, bias, out_inv_scale, *rest = node.args  # rest: out_dtype, and a residual if fused
    return bias is None and out_inv_scale is not None and all(r is None for r in rest[1:])


def copied(gm: fx.GraphModule, class_name: str) -> fx.GraphModule:
    """A module over a copy of ``gm``'s graph, sharing its tensors and meta: for a rewrite that must leave
    ``gm`` itself as it is."""
    graph = fx.Graph()
    graph.output(graph.graph_copy(gm.graph, {}))
    copy = fx.GraphModule(gm, graph, class_name=class_name)
    copy.meta.update(gm.meta)
    return copy


def attr_of(gm: fx.GraphModule, node: fx.Node) -> torch.Tensor:
    if node.op != "get_attr":
        raise ValueError(f"expected a get_attr node, got {node.format_node()}")
    return get_attr_value(gm, node.target)


# The conv and scan ops return (output, final state); the graph reads each part through a getitem node.


def output_of(node: fx.Node, index: int = 0) -> fx.Node | None:
    """The getitem node reading part ``index`` of the tuple-returning ``node``, if the graph has one."""
    for user in node.users:
        if user.op == "call_function" and user.target is operator.getitem and user.args[1] == index:
            return user
    return None


def producer(node) -> fx.Node | None:
    """The op whose tuple output ``node`` reads a part of; ``node`` itself if it is not such a getitem."""
    if isinstance(node, fx.Node) and node.op == "call_function" and node.target is operator.getitem:
        return node.args[0]
    return node


def replace_outputs(gm: fx.GraphModule, old: fx.Node, new: Sequence[fx.Node], move_taps: bool = True) -> None:
    """Every getitem of the tuple-returning ``old`` now reads ``new``'s node of the same index (their taps
    move with them if ``move_taps``); ``old`` is erased."""
    for user in list(old.users):
        if not (user.op == "call_function" and user.target is operator.getitem):
            raise ValueError(f"{old} is read whole by {user}, not through getitem")
        if move_taps:
            move_tap(user, new[user.args[1]])
        user.replace_all_uses_with(new[user.args[1]])
        gm.graph.erase_node(user)
    gm.graph.erase_node(old)
