"""Lowers the reference-quantised graph to the int8 kernels (the w8a8 datapath).

Patterns, each replaced by one kernel op that takes and/or returns int8 codes:

    rms_norm -> q                                   rms_norm_quant
    dq -> linear(dq_per_channel W) [-> slice] -> q  int8_linear with per-column output scales
    dq -> linear(dq_per_channel W)  (float out)     int8_linear, float32 output
    dq -> causal_conv1d(dq_per_channel W) -> q      int8_causal_conv1d (+ bias, SiLU, requantise)
    dq(u), dq(dt), dq(B), dq(C), dq(z) -> scan      int8_selective_scan
    hadamard_rotate -> q                            hadamard_quant
    scan -> q                                       quantize

Scales become float64 buffers beside the float32 ones: ``dequant_scale = s_in * s_w`` per output
channel and ``1 / s_out``, computed once here so every kernel only multiplies. After lowering no
quantize/dequantize node is left.
"""

import operator

import torch
import torch.ao.quantization.fx._decomposed  # noqa: F401  (registers torch.ops.quantized_decomposed)
import torch.fx as fx

from mamba_qpass.graph_utils import add_tensor_attr, attr_of, find_or_add_tensor_attr, is_call, output_of, producer
from mamba_qpass.quant_config import QuantConfig
from mamba_qpass.taps import move_tap

qd = torch.ops.quantized_decomposed
aten = torch.ops.aten
qops = torch.ops.mamba_qpass
# meta key on a lowered conv: the float weight and input-scale buffers it was made from, for modes
# that swap the int8 conv back to a float one
FLOAT_CONV = "float_conv"
Q = qd.quantize_per_tensor.tensor
DQ = qd.dequantize_per_tensor.tensor
DQ_CHANNEL = qd.dequantize_per_channel.default


def _scale(gm: fx.GraphModule, qdq: fx.Node) -> torch.Tensor:
    return attr_of(gm, qdq.args[1])


def _inverse_scale_node(gm: fx.GraphModule, qdq: fx.Node, before: fx.Node) -> fx.Node:
    return find_or_add_tensor_attr(gm, f"{qdq.args[1].target}_inv", 1.0 / _scale(gm, qdq).double(), before)


def _single_user(node: fx.Node, target) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 and is_call(users[0], target) else None


def _weight_prefix(dq_weight: fx.Node) -> str:
    return dq_weight.args[0].target.removesuffix("_int8")


def _dequant_scale_node(gm, activation_dq: fx.Node, weight_dq: fx.Node, before: fx.Node) -> fx.Node:
    s_w = attr_of(gm, weight_dq.args[1]).double()
    return add_tensor_attr(gm, f"{_weight_prefix(weight_dq)}_dequant_scale", _scale(gm, activation_dq).double() * s_w, before)


def _bias_node(gm, bias: fx.Node | None, prefix: str, before: fx.Node) -> fx.Node | None:
    if bias is None:
        return None
    return add_tensor_attr(gm, f"{prefix}_bias_f64", attr_of(gm, bias).double(), before)


def _quantised_column_slices(linear: fx.Node, width: int) -> list[tuple[fx.Node | None, fx.Node, int, int]] | None:
    """[(slice or None, q, start, stop)] when every one of the ``width`` output columns goes through
    exactly one q, else None."""
    parts = []
    for user in linear.users:
        if is_call(user, Q):
            parts.append((None, user, 0, width))
        elif is_call(user, aten.slice.Tensor) and user.args[1] in (-1, 2) and (q := _single_user(user, Q)):
            parts.append((user, q, user.args[2], user.args[3]))
        else:
            return None
    covered = sorted((start, stop) for _, _, start, stop in parts)
    position = 0
    for start, stop in covered:
        if start != position:
            return None
        position = stop
    return parts if position == width else None


def _lower_linear(gm: fx.GraphModule, linear: fx.Node) -> None:
    act_dq, weight_dq, bias = (*linear.args, None)[:3]
    out_features = attr_of(gm, weight_dq.args[0]).shape[0]
    prefix = _weight_prefix(weight_dq)
    dequant = _dequant_scale_node(gm, act_dq, weight_dq, linear)
    bias64 = _bias_node(gm, bias, prefix, linear)
    parts = _quantised_column_slices(linear, out_features)
    inv = None
    if parts is not None:
        inv_scale = torch.empty(out_features, dtype=torch.float64, device=attr_of(gm, weight_dq.args[0]).device)
        for _, q, start, stop in parts:
            inv_scale[start:stop] = 1.0 / _scale(gm, q).double()
        inv = add_tensor_attr(gm, f"{prefix}_out_inv_scale", inv_scale, linear)
    with gm.graph.inserting_before(linear):
        lowered = gm.graph.call_function(
            qops.int8_linear.default, (act_dq.args[0], weight_dq.args[0], dequant, bias64, inv, torch.float32)
        )
    if parts is None:
        linear.replace_all_uses_with(lowered)
        return
    for column_slice, q, _, _ in parts:
        holder = lowered if column_slice is None else column_slice
        if column_slice is not None:
            column_slice.replace_input_with(linear, lowered)
        move_tap(q, holder)
        q.replace_all_uses_with(holder)


def _lower_conv(gm: fx.GraphModule, conv: fx.Node, q: fx.Node) -> None:
    act_dq, weight_dq, bias, silu = conv.args[:4]
    prefix = _weight_prefix(weight_dq)
    dequant = _dequant_scale_node(gm, act_dq, weight_dq, conv)
    bias64 = _bias_node(gm, bias, prefix, conv)
    inv = _inverse_scale_node(gm, q, conv)
    with gm.graph.inserting_before(q):
        lowered = gm.graph.call_function(
            qops.int8_causal_conv1d.default, (act_dq.args[0], weight_dq.args[0], dequant, bias64, inv, silu)
        )
        codes = gm.graph.call_function(operator.getitem, (lowered, 0))
    lowered.meta[FLOAT_CONV] = {
        "weight": weight_dq.args[0].target.removesuffix("_int8"),
        "bias": None if bias is None else bias.target,
        "input_scale": act_dq.args[1].target,
    }
    move_tap(q, codes)
    q.replace_all_uses_with(codes)


def _lower_scan(gm: fx.GraphModule, scan: fx.Node, out_dtype: torch.dtype, index: int) -> None:
    u, dt, A, B, C, D, z, delta_bias, softplus = scan.args[:9]
    scales = torch.stack([_scale(gm, n).float() for n in (u, dt, B, C, z)])
    scales_node = add_tensor_attr(gm, f"scales.l{index}_scan_inputs", scales, scan)
    codes = [n.args[0] for n in (u, dt, B, C, z)]
    with gm.graph.inserting_before(scan):
        lowered = gm.graph.call_function(
            qops.int8_selective_scan.default,
            (codes[0], codes[1], A, codes[2], codes[3], D, codes[4], delta_bias, softplus, scales_node, out_dtype),
        )
    move_tap(scan, lowered)
    scan.replace_all_uses_with(lowered)


def _lower_requant(gm: fx.GraphModule, q: fx.Node) -> None:
    source = q.args[0]
    inv = _inverse_scale_node(gm, q, q)
    with gm.graph.inserting_before(q):
        if is_call(source, qops.rms_norm.default):
            lowered = gm.graph.call_function(qops.rms_norm_quant.default, (*source.args, inv))
        elif is_call(source, qops.hadamard_rotate.default):
            lowered = gm.graph.call_function(qops.hadamard_quant.default, (*source.args, inv))
        else:
            lowered = gm.graph.call_function(qops.quantize.default, (source, inv))
    move_tap(q, lowered)
    q.replace_all_uses_with(lowered)


def _is_dq_input(node, position: int) -> bool:
    return is_call(node.args[position], DQ)


def lower_int8(config: QuantConfig):
    def lower(gm: fx.GraphModule) -> fx.GraphModule:
        scan_index = 0
        for node in list(gm.graph.nodes):
            if node.graph is None or not node.users:
                continue
            if is_call(node, aten.linear.default) and _is_dq_input(node, 0) and is_call(node.args[1], DQ_CHANNEL):
                _lower_linear(gm, node)
            elif (
                is_call(node, qops.causal_conv1d.default)
                and _is_dq_input(node, 0)
                and (u := output_of(node, 0)) is not None
                and (q := _single_user(u, Q))
            ):
                _lower_conv(gm, node, q)
            elif is_call(node, qops.selective_scan.default) and all(_is_dq_input(node, i) for i in (0, 1, 3, 4, 6)):
                _lower_scan(gm, node, config.scan_out_dtype, scan_index)
                scan_index += 1
            elif is_call(node, Q) and is_call(
                producer(node.args[0]), qops.rms_norm.default, qops.hadamard_rotate.default, qops.int8_selective_scan.default
            ):
                _lower_requant(gm, node)
        return gm

    return lower
