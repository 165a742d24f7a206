"""``float_sim``: the w8a8 datapath in float ops with explicit clamp/round nodes, no integer kernel.

Built from the lowered w8a8 graph by expanding every int8 kernel into the float operations of its
reference, so that each int8 tensor is reproduced code for code. How it stays exact:

- int8 tensors are carried as their **codes** held in float32 (integers in [-128, 127]), never as
  ``code * scale``: a float32 product ``code * scale`` divided back by the scale is not always the
  code again, which is how a float simulation drifts off the int8 grid;
- accumulations: conv1d in float32 (at most 4 products of magnitude <= 2^14, so every partial sum is
  an integer below 2^24 and exact in any order); GEMMs in **float64** (|acc| <= 2^14 * K < 2^53, exact;
  float32 is not, since |acc| reaches 2^24 for K >= 1024); the Hadamard rotation in float64 (a ±1 sum of
  float16 values is exact there, see kernels/hadamard_quant);
- every requantisation epilogue (scale, bias, SiLU, RMSNorm, inverse scale) in float64 with the same
  operations in the same order as the kernel's reference, then ``clamp(-128, 127)`` and
  ``round`` (half to even), as the kernels do;
- the scan reads ``code * scale`` in float32 exactly as the int8 scan dequantises, and runs the float32 scan.
"""


import torch
import torch.fx as fx

from mamba_qpass.graph_utils import attr_of, is_call
from mamba_qpass.kernels.hadamard_quant.reference import hadamard_output_scale
from mamba_qpass.kernels.quant_math import INT8_MAX, INT8_MIN
from mamba_qpass.passes.emit import Emitter
from mamba_qpass.passes.float_scan import SCAN_CODE_INPUTS
from mamba_qpass.taps import move_tap

aten = torch.ops.aten
qops = torch.ops.mamba_qpass
F64 = torch.float64
F32 = torch.float32


def _codes(emit: Emitter, v64: fx.Node) -> fx.Node:
    """int8 codes of a float64 value, held in float32: clamp, then round half to even."""
    clamped = emit(aten.clamp.default, v64, float(INT8_MIN), float(INT8_MAX))
    return emit.cast(emit(aten.round.default, clamped), F32)


def _float_codes_attr(emit: Emitter, int8_attr: fx.Node) -> fx.Node:
    return emit.attr(f"{int8_attr.target}_codes_f32", attr_of(emit.gm, int8_attr).float())


def _rms_norm_quant(emit: Emitter, node: fx.Node) -> fx.Node:
    x, weight, eps, inv = node.args
    hidden = attr_of(emit.gm, weight).shape[0]
    x64 = emit.cast(x, F64)
    var = emit(aten.mul.Tensor, emit(aten.sum.dim_IntList, emit(aten.mul.Tensor, x64, x64), [-1], True), 1.0 / hidden)
    r = emit(aten.reciprocal.default, emit(aten.sqrt.default, emit(aten.add.Tensor, var, eps)))
    y = emit(aten.mul.Tensor, emit(aten.mul.Tensor, x64, r), emit.cast(weight, F64))
    return _codes(emit, emit(aten.mul.Tensor, y, inv))


def _int8_linear(emit: Emitter, node: fx.Node) -> fx.Node:
    a, weight, dequant, bias, inv, out_dtype = node.args
    acc = emit(aten.linear.default, emit.cast(a, F64), emit.cast(_float_codes_attr(emit, weight), F64))
    v = emit(aten.mul.Tensor, acc, dequant)
    if bias is not None:
        v = emit(aten.add.Tensor, v, bias)
    return emit.cast(v, out_dtype) if inv is None else _codes(emit, emit(aten.mul.Tensor, v, inv))


def _int8_causal_conv1d(emit: Emitter, node: fx.Node) -> fx.Node:
    x, weight, dequant, bias, inv, silu = node.args
    acc = emit(qops.causal_conv1d.default, x, _float_codes_attr(emit, weight), None, False)
    v = emit(aten.mul.Tensor, emit.cast(acc, F64), dequant)
    if bias is not None:
        v = emit(aten.add.Tensor, v, bias)
    if silu:
        v = emit(aten.div.Tensor, v, emit(aten.add.Tensor, emit(aten.exp.default, emit(aten.neg.default, v)), 1.0))
    return _codes(emit, emit(aten.mul.Tensor, v, inv))


def _int8_selective_scan(emit: Emitter, node: fx.Node) -> fx.Node:
    args = list(node.args)
    scales, out_dtype = args[9], args[10]
    for k, position in enumerate(SCAN_CODE_INPUTS):
        args[position] = emit(aten.mul.Tensor, args[position], emit(aten.select.int, scales, 0, k))
    y = emit(qops.selective_scan.default, *args[:9])
    return emit.cast(y, out_dtype)


def _hadamard_quant(emit: Emitter, node: fx.Node) -> fx.Node:
    y, hadamard, inv = node.args
    order = attr_of(emit.gm, hadamard).shape[0]
    scale = emit.attr(f"{inv.target}_hadamard", hadamard_output_scale(attr_of(emit.gm, inv), order))
    rotated = emit(aten.linear.default, emit.cast(y, F64), emit.cast(hadamard, F64))
    return _codes(emit, emit(aten.mul.Tensor, rotated, scale))


def _quantize(emit: Emitter, node: fx.Node) -> fx.Node:
    x, inv = node.args
    return _codes(emit, emit(aten.mul.Tensor, emit.cast(x, F64), inv))


EXPANSIONS = {
    qops.rms_norm_quant.default: _rms_norm_quant,
    qops.int8_linear.default: _int8_linear,
    qops.int8_causal_conv1d.default: _int8_causal_conv1d,
    qops.int8_selective_scan.default: _int8_selective_scan,
    qops.hadamard_quant.default: _hadamard_quant,
    qops.quantize.default: _quantize,
}


def float_sim(gm: fx.GraphModule) -> fx.GraphModule:
    kernels = [n for n in gm.graph.nodes if is_call(n, *EXPANSIONS)]
    if not kernels:
        raise ValueError("no int8 kernel op in the graph: run lower_int8 first")
    for node in kernels:
        replacement = EXPANSIONS[node.target](Emitter(gm, node), node)
        move_tap(node, replacement)
        node.replace_all_uses_with(replacement)
        gm.graph.erase_node(node)
    return gm


