"""Helpers for passes that replace one node by a chain of new ones."""

import torch
import torch.fx as fx

from mamba_qpass.graph_utils import find_or_add_tensor_attr

aten = torch.ops.aten


class Emitter:
    """Inserts call_function nodes (and buffers) before a fixed node, in call order."""

    def __init__(self, gm: fx.GraphModule, before: fx.Node):
        self.gm = gm
        self.before = before

    def __call__(self, target, *args, **kwargs) -> fx.Node:
        with self.gm.graph.inserting_before(self.before):
            return self.gm.graph.call_function(target, args, kwargs)

    def attr(self, qualname: str, tensor: torch.Tensor) -> fx.Node:
        return find_or_add_tensor_attr(self.gm, qualname, tensor, self.before)

    def existing_attr(self, qualname: str) -> fx.Node:
        """A get_attr node for a buffer the module already holds."""
        existing = self.gm.graph.find_nodes(op="get_attr", target=qualname)
        if existing:
            return existing[0]
        with self.gm.graph.inserting_before(self.before):
            return self.gm.graph.get_attr(qualname)

    def cast(self, node: fx.Node, dtype: torch.dtype) -> fx.Node:
        return self(aten._to_copy.default, node, dtype=dtype)
