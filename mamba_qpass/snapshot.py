"""A canonical text form of an FX graph, for golden-file tests.

Nodes are listed in topological order and numbered (``%0``, ``%1``, ...), so the text does not depend
on the names FX or a pass happened to choose. Ops are written with their overload
(``aten.linear.default``), get_attr nodes with their target, constants with ``repr``, tensors by
dtype and shape only. No stack traces, no metadata, no symbolic size names: the text is the same on
every torch version that builds the same graph.
"""

import torch
import torch.fx as fx


def _target_name(target) -> str:
    if isinstance(target, torch._ops.OpOverload):
        return f"{target.namespace}.{target._opname}.{target._overloadname}"
    if isinstance(target, str):
        return target
    return f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', repr(target))}".lstrip(".")


def _arg_text(arg, numbers: dict[fx.Node, int]) -> str:
    if isinstance(arg, fx.Node):
        return f"%{numbers[arg]}"
    if isinstance(arg, (list, tuple)):
        inner = ", ".join(_arg_text(a, numbers) for a in arg)
        return f"[{inner}]" if isinstance(arg, list) else f"({inner}{',' if len(arg) == 1 else ''})"
    if isinstance(arg, torch.Tensor):
        return f"tensor<{str(arg.dtype).removeprefix('torch.')}{list(arg.shape)}>"
    if isinstance(arg, (torch.dtype, torch.device, torch.memory_format, torch.layout)):
        return str(arg)
    return repr(arg)


def graph_to_text(gm: fx.GraphModule) -> str:
    numbers: dict[fx.Node, int] = {}
    lines = []
    for node in gm.graph.nodes:
        if node.op == "output":
            lines.append(f"return {_arg_text(node.args[0], numbers)}")
            continue
        numbers[node] = len(numbers)
        lhs = f"%{numbers[node]}"
        if node.op == "placeholder":
            lines.append(f"{lhs} = input {node.target}")
        elif node.op == "get_attr":
            value = _get_attr(gm, node.target)
            shape = _arg_text(value, numbers) if isinstance(value, torch.Tensor) else ""
            lines.append(f"{lhs} = attr {node.target} {shape}".rstrip())
        else:
            args = [_arg_text(a, numbers) for a in node.args]
            args += [f"{k}={_arg_text(v, numbers)}" for k, v in sorted(node.kwargs.items())]
            lines.append(f"{lhs} = {_target_name(node.target)}({', '.join(args)})")
    return "\n".join(lines) + "\n"


def _get_attr(gm: fx.GraphModule, qualname: str):
    obj = gm
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj
