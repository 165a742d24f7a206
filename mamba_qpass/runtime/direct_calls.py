"""A graph that calls its ops' implementations directly, for running eagerly.

Each op node of a finished graph goes through torch's dispatch for custom ops: the autograd layer that
refuses a backward through an int8 op (run even under ``no_grad``), the aliasing check of the result and
the guard that keeps Dynamo out of the implementation. Run eagerly that costs about 80 us an op on these
CPUs, more than a decode GEMM's kernel on the GPU, on every one of the ~9 ops a layer. ``direct_calls``
points each op node at the function the dispatcher would run on the graph's device
(``ops.implementation``: the Triton kernel on CUDA, the reference elsewhere), with the same arguments,
so every output is the dispatched graph's bit for bit (tested).

For running only, inside ``no_grad``: the graph that passes rewrite, save and compile keeps its ops.
"""

import torch
import torch.fx as fx

from mamba_qpass import ops
from mamba_qpass.graph_utils import copied


def _graph_device(gm: fx.GraphModule) -> torch.device:
    tensors = [*gm.parameters(), *gm.buffers()]
    return tensors[0].device if tensors else torch.device("cpu")


def direct_calls(gm: fx.GraphModule) -> fx.GraphModule:
    """A copy of ``gm`` (sharing its tensors) whose ``mamba_qpass`` op nodes call the op's implementation on
    the device ``gm``'s tensors are on."""
    device_type = _graph_device(gm).type
    direct = copied(gm, type(gm).__name__)
    for node in direct.graph.nodes:
        if node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload) \
                and node.target.namespace == ops.NAMESPACE:
            node.target = ops.implementation(node.target, device_type)
    direct.graph.lint()
    direct.recompile()
    return direct
