"""Dynamo's graph of a routed ``MambaForCausalLM`` (dynamo_routing.py) as the canonical graph.

Dynamo hands a backend its graph with the model's parameters as inputs beside the token ids (and
symbolic sizes), and the tensors capture.py derives from them (``A = -exp(A_log)``, the conv weight as
(channels, width)) as nodes computed from them. The canonical graph the passes work on takes only the
token ids and reads every weight through ``get_attr``. This module rewrites the one into the other:

- a parameter input becomes a tensor of the graph, and every node computed from tensors alone is
  evaluated once (constant folding); the tensor keeps the name capture gives it (the traced alias
  that marks it), so calibrated graphs and saved calibrations match it by name;
- every other node is copied with its canonical name, and its tap where capture sets one;
- anything else (an op capture does not emit, a tensor without a canonical name, a second tensor
  input) means Dynamo did not trace the routed forward, and is refused with the reason.
"""

import operator
from dataclasses import dataclass

import torch
import torch.fx as fx
from torch import nn

from mamba_qpass.dynamo_routing import ATTR_NAME, NODE_NAME, TAP_NAME
from mamba_qpass.taps import TAP, set_tap

aten = torch.ops.aten


class NotRoutedGraphError(ValueError):
    """Dynamo's graph is not the routed Mamba forward, so the passes cannot run on it."""


NOT_ROUTED = (
    "the mamba_qpass backend compiles a transformers MambaForCausalLM called as model(input_ids) "
    "(no cache, attention mask, labels or inputs_embeds), compiled whole (torch.compile(model, ...))"
)


@dataclass(frozen=True)
class CanonicalGraph:
    graph: fx.GraphModule  # gm(input_ids) -> logits
    token_input: int  # the position of the token ids among Dynamo's graph inputs
    output_arity: int  # Dynamo's graph returns this many values, the logits first


def _custom(node: fx.Node) -> dict:
    return node.meta.get("custom") or {}


def _value_of(arg, env: dict, constants: dict):
    """``arg`` with Dynamo's nodes replaced by canonical nodes, or by their values where those are
    numbers (a config float Dynamo passed in as a tensor, converted back)."""

    def value(node: fx.Node):
        if node in env:
            return env[node]
        if node in constants and not isinstance(constants[node], torch.Tensor):
            return constants[node]
        raise NotRoutedGraphError(f"{node.name} has no canonical tensor name: {NOT_ROUTED}")

    return fx.map_arg(arg, value)


def _is_constant(arg, constants: dict) -> bool:
    inputs = []
    fx.map_arg(arg, inputs.append)
    return all(n in constants for n in inputs)


def _evaluate(node: fx.Node, constants: dict):
    args = fx.map_arg(node.args, lambda n: constants[n])
    kwargs = fx.map_arg(node.kwargs, lambda n: constants[n])
    if node.op == "call_method":
        self, *rest = args
        return getattr(self, node.target)(*rest, **kwargs)
    return node.target(*args, **kwargs)


def canonical_graph(dynamo_gm: fx.GraphModule, example_inputs: list) -> CanonicalGraph:
    placeholders = dynamo_gm.graph.find_nodes(op="placeholder")
    if len(placeholders) != len(example_inputs):
        raise NotRoutedGraphError(f"Dynamo's graph has {len(placeholders)} inputs for {len(example_inputs)} values")
    graph = fx.Graph()
    tensors: dict[str, torch.Tensor] = {}
    constants: dict = {}  # Dynamo node -> its value (a tensor or a number), for nodes of weights alone
    env: dict[fx.Node, fx.Node] = {}  # Dynamo node -> canonical node
    token_input = None
    for position, (node, value) in enumerate(zip(placeholders, example_inputs)):
        if isinstance(value, nn.Parameter) or getattr(node.meta.get("grapharg"), "pass_arg_as_tensor", False):
            constants[node] = value  # a weight, or a config number Dynamo passes as a tensor (dynamic=True)
        elif isinstance(value, torch.Tensor):
            if token_input is not None or value.dtype not in (torch.int64, torch.int32):
                raise NotRoutedGraphError(f"Dynamo's graph takes a {value.dtype} tensor input {node.name}: {NOT_ROUTED}")
            token_input = position
            env[node] = graph.placeholder("input_ids")
        elif node.users:  # a symbolic size: the canonical graph reads sizes from its tensors
            raise NotRoutedGraphError(f"Dynamo's graph uses the size input {node.name}: {NOT_ROUTED}")
    if token_input is None:
        raise NotRoutedGraphError(f"Dynamo's graph takes no token ids: {NOT_ROUTED}")

    for node in dynamo_gm.graph.nodes:
        custom = _custom(node)
        if node.op in ("placeholder", "output"):
            continue
        if TAP_NAME in custom:
            (tapped,) = node.args
            set_tap(env[tapped], custom[TAP_NAME])
            continue
        if _is_constant((node.args, node.kwargs), constants):
            # an attr alias stands for its input: a parameter stays the model's parameter, as in capture
            value = constants[node.args[0]] if ATTR_NAME in custom else _evaluate(node, constants)
            constants[node] = value
            if ATTR_NAME in custom:
                name = custom[ATTR_NAME]
                if name not in tensors:
                    tensors[name] = value if isinstance(value, nn.Parameter) else value.detach()
                    env[node] = graph.get_attr(name)
                    env[node].name = name.replace(".", "_")
                else:
                    env[node] = graph.find_nodes(op="get_attr", target=name)[0]
            continue
        if node.target is operator.getitem and node.args[0] in env:
            # Dynamo reads each part of a tuple-returning op (conv, scan) as it is made; the part the
            # forward uses is named by the alias TracedBuilder puts on it, the other part is dropped
            if node.users:
                env[node] = graph.call_function(operator.getitem, (env[node.args[0]], node.args[1]))
            continue
        if node.target is aten.alias.default and NODE_NAME in custom:
            (part,) = node.args
            env[node] = env[part]
            env[node].name = custom[NODE_NAME]
            continue
        if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload) or NODE_NAME not in custom:
            raise NotRoutedGraphError(f"Dynamo's graph computes {node.format_node()}, which capture does not emit: {NOT_ROUTED}")
        copy = graph.call_function(node.target, _value_of(node.args, env, constants), _value_of(node.kwargs, env, constants))
        copy.name = custom[NODE_NAME]
        env[node] = copy

    (output,) = dynamo_gm.graph.find_nodes(op="output")
    results = output.args[0]
    if not isinstance(results, (tuple, list)) or not results or results[0] not in env:
        raise NotRoutedGraphError(f"Dynamo's graph returns {results}, not the logits first: {NOT_ROUTED}")
    if any(r is not None for r in results[1:]):
        raise NotRoutedGraphError(f"Dynamo's graph returns {len(results)} values, the canonical graph only logits")
    graph.output(env[results[0]])
    graph.lint()
    if "logits" not in {node.meta.get(TAP) for node in graph.nodes}:
        raise NotRoutedGraphError(f"Dynamo's graph lost the tensor names the passes need: {NOT_ROUTED}")
    gm = fx.GraphModule(tensors, graph, class_name="MambaGraph")
    gm.meta["dtype"] = tensors["backbone.embeddings.weight"].dtype
    return CanonicalGraph(gm, token_input, len(results))
