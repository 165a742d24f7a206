"""A graph that calls its ops' implementations directly, for running eagerly.

Each op node of a finished graph goes through torch's dispatch for custom ops: the autograd layer that
refuses a backward through an int8 op (run even under ``no_grad``), the aliasing check of the result and
the guard that keeps Dynamo out of the implementation. Run eagerly that costs about 80 us an op on these
CPUs, more than a decode GEMM's kernel on the GPU, on every one of the ~9 ops a layer. ``direct_calls``
points each op node at the function the dispatcher would run on the graph's device
(``ops.implementation``: the Triton kernel on CUDA, the reference elsewhere), with the same arguments,
so every output is the dispatched graph's bit for bit (tested).

The per-tensor quantise and dequantise nodes of the modes that keep them (qdq, fp32_ssm, fp32_conv) read
their scale and zero point from one-element tensors with ``.item()`` at every call, which on CUDA waits
for the GPU each time. Their ``.tensor`` overloads are ``.default`` with those two numbers
(``torch.ao.quantization.fx._decomposed``), so ``direct_calls`` reads them once, when it makes the graph,
and calls ``.default``: the same arithmetic on the same numbers, without the waits. On CUDA an int8
dequantise to float32 (the nodes before fp32_ssm's float scan and fp32_conv's float conv) calls
``cuda_kernels.dequantize_int8_per_tensor`` instead, that arithmetic in one Triton kernel where torch runs
three elementwise ones over float32 tensors (``kernels/dequantize``).

For running only, inside ``no_grad``, with the scales as they are when the graph is made: the graph that
passes rewrite, save and compile keeps its ops.
"""

import torch
import torch.ao.quantization.fx._decomposed  # noqa: F401  (registers torch.ops.quantized_decomposed)
import torch.fx as fx

from mamba_qpass import ops
from mamba_qpass.graph_utils import attr_of, copied, graph_device

qd = torch.ops.quantized_decomposed
# Ops whose implementation reads a tensor argument on the host: quantized_decomposed's per-tensor quantize and
# dequantize with tensor scales call scale.item(), which a CUDA graph cannot capture (qdq, fp32_ssm and
# fp32_conv hold them; ``direct_calls`` gives them their constant scales as numbers).
HOST_READING_OPS = (qd.quantize_per_tensor.tensor, qd.dequantize_per_tensor.tensor)


def cuda_graph_blockers(graph: fx.GraphModule) -> list[str]:
    """The ops of a graph that keep it from being captured as a CUDA graph: none in w8a8, float_sim and fp;
    the per-tensor (de)quantise nodes of qdq, fp32_ssm and fp32_conv until ``direct_calls`` has given them
    their scales as numbers."""
    return sorted({str(n.target) for n in graph.graph.nodes if n.op == "call_function" and n.target in HOST_READING_OPS})


def _constant(gm: fx.GraphModule, node) -> torch.Tensor | None:
    """The tensor a node computes from the graph's own tensors alone (a get_attr, or an aten op such as
    ``select`` of one), else None."""
    if node.op == "get_attr":
        return attr_of(gm, node)
    if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload) or node.target.namespace != "aten":
        return None
    inputs = node.all_input_nodes
    values = {n: _constant(gm, n) for n in inputs}
    if any(v is None for v in values.values()):
        return None
    return node.target(*fx.map_arg(node.args, values.get), **fx.map_arg(node.kwargs, values.get))


def _one_number(gm: fx.GraphModule, node) -> float | int | None:
    """The number a node holding a constant one-element tensor holds, else None."""
    value = _constant(gm, node) if isinstance(node, fx.Node) else None
    return value.item() if value is not None and value.numel() == 1 else None


def _is_int8_to_float32_dequantize(node: fx.Node) -> bool:
    return (node.target == qd.dequantize_per_tensor.default and len(node.args) == 6 and node.args[5] == torch.int8
            and node.kwargs.get("out_dtype") in (None, torch.float32))


def direct_calls(gm: fx.GraphModule) -> fx.GraphModule:
    """A copy of ``gm`` (sharing its tensors) whose ``mamba_qpass`` op nodes call the op's implementation on
    the device ``gm``'s tensors are on, and whose per-tensor (de)quantise nodes take their constant scale
    and zero point as numbers."""
    device_type = graph_device(gm).type
    direct = copied(gm, type(gm).__name__)
    for node in direct.graph.nodes:
        if node.op != "call_function":
            continue
        if isinstance(node.target, torch._ops.OpOverload) and node.target.namespace == ops.NAMESPACE:
            node.target = ops.implementation(node.target, device_type)
        elif node.target in HOST_READING_OPS:  # the .tensor overloads: .default takes the numbers
            scale, zero_point = (_one_number(direct, arg) for arg in node.args[1:3])
            if scale is not None and zero_point is not None:
                node.args = (node.args[0], scale, zero_point, *node.args[3:])
                node.target = node.target.overloadpacket.default
                if device_type == "cuda" and _is_int8_to_float32_dequantize(node):
                    # imported here: a graph runs without triton installed on the CPU (test_layering)
                    from mamba_qpass.cuda_kernels import dequantize_int8_per_tensor

                    node.target = dequantize_int8_per_tensor
    direct.graph.lint()
    direct.recompile()
    return direct
