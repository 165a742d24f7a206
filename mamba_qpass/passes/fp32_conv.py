"""``fp32_conv``: w8a8 except that conv1d + SiLU run in float32 on the float weights, and their float
output feeds the scan unquantised (an upper bound: "what if we want more than the baseline").

x_proj still reads int8: the float conv output is quantised with the calibrated scale of u for it.
"""

import operator

import torch
import torch.ao.quantization.fx._decomposed  # noqa: F401
import torch.fx as fx

from mamba_qpass.graph_utils import is_call, output_of, producer, replace_outputs
from mamba_qpass.numerics import INT8_MAX, INT8_MIN
from mamba_qpass.passes.emit import Emitter
from mamba_qpass.passes.float_scan import int8_scans, replace_int8_scan
from mamba_qpass.passes.lower_int8 import FLOAT_CONV
from mamba_qpass.taps import TAP, set_tap

qd = torch.ops.quantized_decomposed
qops = torch.ops.mamba_qpass


def _float_conv(gm: fx.GraphModule, conv: fx.Node) -> tuple[fx.Node, fx.Node, fx.Node]:
    """(float output, int8 codes of it, final state) replacing the int8 conv ``conv``. The state is the
    float conv's: its last inputs, dequantised."""
    x_codes, _, _, _, inv, silu = conv.args
    source = conv.meta[FLOAT_CONV]
    emit = Emitter(gm, conv)
    x = emit(
        qd.dequantize_per_tensor.tensor, x_codes, emit.existing_attr(source["input_scale"]),
        emit.existing_attr("scales.zero_point"), INT8_MIN, INT8_MAX, torch.int8,
    )
    bias = None if source["bias"] is None else emit.existing_attr(source["bias"])
    float_conv = emit(qops.causal_conv1d.default, x, emit.existing_attr(source["weight"]), bias, silu)
    u = emit(operator.getitem, float_conv, 0)
    set_tap(u, output_of(conv, 0).meta[TAP])  # a float tensor now, so no scale
    codes = emit(qops.quantize.default, u, inv)
    return u, codes, emit(operator.getitem, float_conv, 1)


def fp32_conv(gm: fx.GraphModule) -> fx.GraphModule:
    for scan in int8_scans(gm):
        conv = producer(scan.args[0])
        if not is_call(conv, qops.int8_causal_conv1d.default):
            raise ValueError(f"the int8 scan's u is {conv}, not an int8 conv1d")
        float_u, codes, state = _float_conv(gm, conv)
        replace_int8_scan(gm, scan, float_u=float_u)
        replace_outputs(gm, conv, [codes, state], move_taps=False)  # conv_out's tap is the float u
    return gm
