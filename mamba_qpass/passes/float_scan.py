"""Replaces an int8 selective scan by dequantise nodes feeding the float32 scan.

Shared by the modes that keep the int8 datapath around a float SSM (``fp32_ssm``, ``fp32_conv``).
Each int8 input becomes ``dequantize_per_tensor(codes, scale)``, the same ``code * scale`` float32
product the int8 scan computes inside; the float scan stores its output in the int8 scan's output
dtype (rounding its float32 values as a cast would, without a pass over them), so everything after
the scan is unchanged.
"""

import operator

import torch
import torch.ao.quantization.fx._decomposed  # noqa: F401  (registers torch.ops.quantized_decomposed)
import torch.fx as fx

from mamba_qpass.graph_utils import replace_outputs
from mamba_qpass.numerics import INT8_MAX, INT8_MIN
from mamba_qpass.passes.emit import Emitter

aten = torch.ops.aten
qd = torch.ops.quantized_decomposed
qops = torch.ops.mamba_qpass

SCAN_CODE_INPUTS = (0, 1, 3, 4, 6)  # u, delta, B, C, z in the scan's arguments; scales hold them in this order


def replace_int8_scan(gm: fx.GraphModule, scan: fx.Node, float_u: fx.Node | None = None) -> fx.Node:
    """The float scan's output node now standing for ``scan``'s; ``float_u`` replaces the dequantised u if
    given. The final state is the float scan's: the same float32 recurrence."""
    u, delta, A, B, C, D, z, delta_bias, softplus, scales, out_dtype = scan.args
    emit = Emitter(gm, scan)
    zero_point = emit.existing_attr("scales.zero_point")
    values = []
    for k, codes in enumerate((u, delta, B, C, z)):
        scale = emit(aten.select.int, scales, 0, k)
        values.append(emit(qd.dequantize_per_tensor.tensor, codes, scale, zero_point, INT8_MIN, INT8_MAX, torch.int8))
    if float_u is not None:
        values[0] = float_u
    v_u, v_delta, v_B, v_C, v_z = values
    float_scan = emit(qops.selective_scan.default, v_u, v_delta, A, v_B, v_C, D, v_z, delta_bias, softplus,
                      out_dtype=out_dtype)
    out = emit(operator.getitem, float_scan, 0)
    replace_outputs(gm, scan, [out, emit(operator.getitem, float_scan, 1)])
    return out


def int8_scans(gm: fx.GraphModule) -> list[fx.Node]:
    scans = [n for n in gm.graph.nodes if n.op == "call_function" and n.target == qops.int8_selective_scan.default]
    if not scans:
        raise ValueError("no int8 selective scan in the graph: run lower_int8 first")
    return scans
