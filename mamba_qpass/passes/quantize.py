"""Turns a calibrated graph (with observers) into the reference-quantised graph (the convert step).

Every observer becomes a ``quantized_decomposed`` quantize/dequantize pair with a per-tensor
symmetric int8 scale ``amax / 127`` stored as a buffer under ``scales.``. Every weight that meets a
dequantised activation (in_proj, conv1d, x_proj, dt_proj, out_proj) becomes int8 codes with
per-output-channel scales and a ``dequantize_per_channel`` node. The result still computes in float
(fake quantisation); lowering passes replace its patterns with integer kernels.
"""

import torch
import torch.ao.quantization.fx._decomposed  # noqa: F401  (registers torch.ops.quantized_decomposed)
import torch.fx as fx

from mamba_qpass.graph_utils import add_tensor_attr, attr_of, is_call
from mamba_qpass.numerics import INT8_MAX, INT8_MIN, round_half_even_clamp_int8
from mamba_qpass.observers import AbsMaxObserver, PercentileObserver
from mamba_qpass.passes.observe import QUANTIZED_TAP
from mamba_qpass.taps import set_tap

qd = torch.ops.quantized_decomposed
aten = torch.ops.aten
qops = torch.ops.mamba_qpass


class ZeroScaleError(ValueError):
    """A calibrated range was zero, so its int8 scale would be zero."""


def activation_scale(observer) -> torch.Tensor:
    amax = observer.range()
    if not amax > 0:
        raise ZeroScaleError(
            f"{observer.name} was zero in every calibration batch, so its int8 scale would be 0: "
            "calibrate on real text (not padding or constant tokens)"
        )
    return (amax / INT8_MAX).float()


def quantize_weight_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 codes, float32 scales) with scale = row amax / 127. An all-zero row gets scale 1: its
    codes are 0 whatever the scale, and a zero scale could not be inverted."""
    w = weight.detach().double()
    amax = w.abs().amax(dim=1)
    scale = torch.where(amax > 0, amax / INT8_MAX, torch.ones_like(amax)).float()
    codes = round_half_even_clamp_int8(w * (1.0 / scale.double())[:, None])
    return codes, scale


def _insert_qdq(gm: fx.GraphModule, node: fx.Node, observer, zero_point: fx.Node) -> None:
    target = node.target.removeprefix("observers.")
    scale = add_tensor_attr(gm, f"scales.{target}", activation_scale(observer).to(observer.range().device), node)
    qparams = (INT8_MIN, INT8_MAX, torch.int8)
    with gm.graph.inserting_before(node):
        q = gm.graph.call_function(qd.quantize_per_tensor.tensor, (node.args[0], scale, zero_point, *qparams))
        dq = gm.graph.call_function(qd.dequantize_per_tensor.tensor, (q, scale, zero_point, *qparams))
    set_tap(q, node.meta[QUANTIZED_TAP], scale.target)
    node.replace_all_uses_with(dq)
    gm.graph.erase_node(node)


def _quantize_weight(gm: fx.GraphModule, consumer: fx.Node) -> None:
    weight_node = consumer.args[1]
    codes, scale = quantize_weight_per_channel(attr_of(gm, weight_node))
    device = attr_of(gm, weight_node).device
    codes_node = add_tensor_attr(gm, f"{weight_node.target}_int8", codes.to(device), consumer)
    scale_node = add_tensor_attr(gm, f"{weight_node.target}_scale", scale.to(device), consumer)
    with gm.graph.inserting_before(consumer):
        dq = gm.graph.call_function(
            qd.dequantize_per_channel.default, (codes_node, scale_node, None, 0, INT8_MIN, INT8_MAX, torch.int8)
        )
    consumer.replace_input_with(weight_node, dq)


def quantize_to_qdq(gm: fx.GraphModule) -> fx.GraphModule:
    observed = [
        n for n in gm.graph.nodes
        if n.op == "call_module" and isinstance(gm.get_submodule(n.target), (AbsMaxObserver, PercentileObserver))
    ]
    if not observed:
        raise ValueError("the graph has no observers: run insert_observers and calibrate first")
    device = gm.get_submodule(observed[0].target).range().device
    zero_point = add_tensor_attr(gm, "scales.zero_point", torch.zeros((), dtype=torch.int64, device=device), observed[0])
    for node in observed:
        _insert_qdq(gm, node, gm.get_submodule(node.target), zero_point)
    for node in list(gm.graph.nodes):
        if is_call(node, aten.linear.default, qops.causal_conv1d.default) and is_call(
            node.args[0], qd.dequantize_per_tensor.tensor
        ):
            _quantize_weight(gm, node)
    gm.delete_submodule("observers")
    return gm
