"""Finds each Mamba layer's nodes in a captured (float) graph by structure, starting from its scan."""

from dataclasses import dataclass

import torch
import torch.fx as fx

from mamba_qpass.graph_utils import is_call, output_of, producer

aten = torch.ops.aten
qops = torch.ops.mamba_qpass


@dataclass(frozen=True)
class LayerNodes:
    index: int
    norm: fx.Node  # RMSNorm output, in_proj's input
    in_proj: fx.Node
    x: fx.Node  # conv1d input (slice of in_proj)
    z: fx.Node  # gate (slice of in_proj)
    conv: fx.Node  # conv1d + SiLU output u (the getitem of the conv op's output)
    x_proj: fx.Node
    dt_low: fx.Node
    B: fx.Node
    C: fx.Node
    dt_proj: fx.Node
    scan: fx.Node  # the scan output (the getitem of the scan op's output)
    out_proj_input: fx.Node  # the scan output, or its Hadamard rotation
    out_proj: fx.Node


def _expect(node, *targets, what: str) -> fx.Node:
    if not is_call(node, *targets):
        raise ValueError(f"unexpected graph structure: {what} is {node}, not one of {targets}")
    return node


def find_layers(gm: fx.GraphModule) -> list[LayerNodes]:
    """The layers in graph order. Raises ValueError if the graph is not a captured Mamba graph."""
    layers = []
    scan_ops = [n for n in gm.graph.nodes if is_call(n, qops.selective_scan.default)]
    for index, scan_op in enumerate(scan_ops):
        conv, dt_proj, _, B, C, _, z, _, _ = scan_op.args[:9]
        _expect(producer(conv), qops.causal_conv1d.default, what="scan input u")
        scan = output_of(scan_op, 0)
        _expect(dt_proj, aten.linear.default, what="scan delta")
        dt_low = _expect(dt_proj.args[0], aten.slice.Tensor, what="dt_proj input")
        x_proj = _expect(dt_low.args[0], aten.linear.default, what="x_proj")
        in_proj = _expect(_expect(z, aten.slice.Tensor, what="scan z").args[0], aten.linear.default, what="in_proj")
        norm = _expect(in_proj.args[0], qops.rms_norm.default, what="in_proj input")
        (user,) = scan.users
        if is_call(user, qops.hadamard_rotate.default):
            out_proj_input, (out_proj,) = user, user.users
        else:
            out_proj_input, out_proj = scan, user
        _expect(out_proj, aten.linear.default, what="out_proj")
        layers.append(
            LayerNodes(index, norm, in_proj, producer(conv).args[0], z, conv, x_proj, dt_low, B, C, dt_proj, scan, out_proj_input, out_proj)
        )
    if not layers:
        raise ValueError("no selective-scan node found: the graph is not a captured Mamba graph")
    return layers
