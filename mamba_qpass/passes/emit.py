"""Helpers for passes that replace one node by a chain of new ones."""

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch.fx.experimental.proxy_tensor import make_fx

from mamba_qpass.graph_utils import find_or_add_tensor_attr

aten = torch.ops.aten


@dataclass(frozen=True)
class Input:
    """A graph value passed to a recorded function, with an example tensor of its dtype and device whose
    trailing sizes are the value's (the function must only broadcast over the leading ones)."""

    node: fx.Node
    example: torch.Tensor


@functools.cache
def _record(fn: Callable, fixed: tuple, names: tuple[str, ...], examples: tuple) -> fx.GraphModule:
    """make_fx's recording of ``fn``; ``examples`` are (dtype, shape, device) of its inputs. Cached: a layer's
    ops record the same graphs as the previous layer's, and a recording depends only on these keys."""
    tensors = [torch.zeros(shape, dtype=dtype, device=device) for dtype, shape, device in examples]
    return make_fx(lambda *inputs: fn(**dict(fixed), **dict(zip(names, inputs))))(*tensors)


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

    def recorded(self, fn: Callable, **kwargs) -> Any:
        """The aten ops that ``fn(**kwargs)`` runs, recorded with make_fx and inserted here.

        Each keyword given as an ``Input`` is a value of the graph; every other one (None, a bool, a
        float) is passed to ``fn`` as it is and so fixed in the recording. Returns fn's output with the
        inserted nodes in place of its tensors.
        """
        names = tuple(name for name, value in kwargs.items() if isinstance(value, Input))
        fixed = tuple((name, value) for name, value in kwargs.items() if name not in names)
        examples = tuple((t.dtype, tuple(t.shape), t.device) for t in (kwargs[name].example for name in names))
        recording = _record(fn, fixed, names, examples)
        inputs = iter(kwargs[name].node for name in names)
        env: dict[fx.Node, fx.Node] = {}
        for node in recording.graph.nodes:
            if node.op == "placeholder":
                env[node] = next(inputs)
            elif node.op == "get_attr":
                raise ValueError(
                    f"{getattr(fn, '__qualname__', fn)} creates a tensor of its own ({node.target}); pass it "
                    "as an argument so the graph holds it"
                )
            elif node.op == "call_function":
                with self.gm.graph.inserting_before(self.before):
                    env[node] = self.gm.graph.node_copy(node, env.__getitem__)
                env[node].meta = {}
        (output,) = recording.graph.find_nodes(op="output")
        return fx.map_arg(output.args[0], env.__getitem__)
