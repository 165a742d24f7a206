"""Named tensors of a graph that the mode-comparison tool reads ("taps").

Capture names the tensors (``layer3.conv_out``, ``layer3.ssm_dt``, ``logits``, ...) in node metadata;
every pass that replaces a tapped node by one computing the same tensor in another form (int8 codes,
codes held in float) moves the name to the new node, with the buffer name of the scale when the new
node holds codes. The last node in graph order that carries a name is the tensor of that name.
"""

import torch
import torch.fx as fx

TAP = "tap"
TAP_SCALE = "tap_scale"  # buffer holding the per-tensor scale, when the node holds int8 codes


def set_tap(node: fx.Node, name: str, scale_target: str | None = None) -> None:
    node.meta[TAP] = name
    node.meta[TAP_SCALE] = scale_target


def move_tap(source: fx.Node, target: fx.Node) -> None:
    if TAP in source.meta:
        set_tap(target, source.meta[TAP], source.meta.get(TAP_SCALE))


def tapped_nodes(gm: fx.GraphModule) -> dict[str, fx.Node]:
    taps: dict[str, fx.Node] = {}
    for node in gm.graph.nodes:
        if TAP in node.meta:
            taps[node.meta[TAP]] = node
    return taps


def with_tap_outputs(gm: fx.GraphModule) -> tuple[fx.GraphModule, list[str]]:
    """A copy of ``gm`` (sharing its tensors) whose output is ``(logits, tap_0, tap_1, ...)``."""
    graph = fx.Graph()
    mapping: dict[fx.Node, fx.Node] = {}
    logits = graph.graph_copy(gm.graph, mapping)
    taps = {name: mapping[node] for name, node in tapped_nodes(gm).items()}
    names = sorted(taps)
    graph.output((logits, *[taps[n] for n in names]))
    return fx.GraphModule(gm, graph), names


def tap_scale(gm: fx.GraphModule, node: fx.Node) -> torch.Tensor | None:
    target = node.meta.get(TAP_SCALE)
    if target is None:
        return None
    value = gm
    for part in target.split("."):
        value = getattr(value, part)
    return value
