"""``float_sim``: the w8a8 datapath in float ops with explicit clamp/round nodes, no integer kernel.

Built from the lowered w8a8 graph by expanding every int8 kernel op into float graph nodes that reproduce
each int8 tensor code for code. How it stays exact and stays the kernels' specification:

- the float arithmetic of each op (its requantisation epilogue, or the scan's dequantisation) is not
  written here: it is the function the op's reference runs (``ops.float_arithmetic``), recorded with
  make_fx into plain aten nodes, its clamp and round among them. Changing an epilogue in a reference
  changes float_sim with it;
- int8 tensors are carried as their **codes** held in float32 (integers in [-128, 127]), never as
  ``code * scale``: a float32 product ``code * scale`` divided back by the scale is not always the
  code again, which is how a float simulation drifts off the int8 grid;
- the exact integer part of each op becomes a float op that is exact too: conv1d in float32 (at most 4
  products of magnitude <= 2^14, so every partial sum is an integer below 2^24 and exact in any order);
  GEMMs as float32 ``code_matmul_chunk``s of the codes (cast to float16) over chunks of at most 1024
  columns (float16 tensor cores on CUDA; every partial sum an integer of magnitude at most 2^24), their
  results added in float64 (kernels/code_matmul); the casts and the additions are graph nodes that a
  compiler fuses with the epilogues around them;
  the Hadamard rotation in float64 as two Kronecker factors, H_m ⊗ H_{2^k} (a ±1 sum of float16 values is
  exact there, see numerics);
- the scan reads ``code * scale`` in float32 exactly as the int8 scan dequantises, and runs the float32 scan.
"""

import operator

import torch
import torch.fx as fx

from mamba_qpass import numerics
from mamba_qpass.graph_utils import attr_of, is_call, replace_outputs
from mamba_qpass.numerics import hadamard_factors, hadamard_output_scale
from mamba_qpass.ops import float_arithmetic, residual_arithmetic
from mamba_qpass.passes.emit import Emitter, Input
from mamba_qpass.passes.float_scan import SCAN_CODE_INPUTS
from mamba_qpass.taps import move_tap

aten = torch.ops.aten
qops = torch.ops.mamba_qpass
F64 = torch.float64
F32 = torch.float32
F16 = torch.float16


def _buffer(emit: Emitter, node: fx.Node | None) -> Input | None:
    return None if node is None else Input(node, attr_of(emit.gm, node))


def _activation(emit: Emitter, node: fx.Node, dtype: torch.dtype, *trailing: int) -> Input:
    """An activation: the recorded functions are elementwise over its leading dims, so an example
    with one row stands for every batch and length."""
    device = next(emit.gm.buffers()).device
    return Input(node, torch.zeros(1, *trailing, dtype=dtype, device=device))


def _float_codes_attr(emit: Emitter, int8_attr: fx.Node) -> fx.Node:
    return emit.attr(f"{int8_attr.target}_codes_f32", attr_of(emit.gm, int8_attr).float())


def _rms_norm_quant(emit: Emitter, node: fx.Node) -> fx.Node:
    x, weight, eps, inv = node.args
    hidden = attr_of(emit.gm, weight).shape[0]
    codes = emit.recorded(
        float_arithmetic(node.target),
        x=_activation(emit, x, F32, hidden), weight=_buffer(emit, weight), eps=eps, out_inv_scale=_buffer(emit, inv),
    )
    return emit.cast(codes, F32)


def _code_matmul(emit: Emitter, a: fx.Node, weight: fx.Node) -> fx.Node:
    """The float64 accumulator of ``a``'s codes times the int8 ``weight``: float32 GEMMs over chunks of K
    short enough to stay exact, added in float64."""
    codes = attr_of(emit.gm, weight)
    k = codes.shape[1]
    terms = numerics.CODE_PRODUCT_TERMS
    a16 = emit.cast(a, F16)
    acc = None
    for start in range(0, k, terms):
        chunk = slice(start, min(start + terms, k))
        suffix = "" if k <= terms else f"_{start}"
        weight16 = emit.attr(f"{weight.target}_f16{suffix}", codes[:, chunk].to(F16).contiguous())
        part = a16 if k <= terms else emit(aten.slice.Tensor, a16, -1, chunk.start, chunk.stop)
        chunk_acc = emit(qops.code_matmul_chunk.default, part, weight16)
        # adding float32 to float64 widens it exactly, so only the first chunk needs a cast of its own
        acc = emit.cast(chunk_acc, F64) if acc is None else emit(aten.add.Tensor, acc, chunk_acc)
    return acc


def _int8_linear(emit: Emitter, node: fx.Node) -> fx.Node:
    a, weight, dequant, bias, inv, out_dtype, *fused = node.args
    residual = fused[0] if fused else None
    outputs = attr_of(emit.gm, weight).shape[0]
    acc = _code_matmul(emit, a, weight)
    out = emit.recorded(
        float_arithmetic(node.target),
        acc=_activation(emit, acc, F64, outputs),
        dequant_scale=_buffer(emit, dequant), bias=_buffer(emit, bias), out_inv_scale=_buffer(emit, inv),
    )
    out = emit.cast(out, out_dtype if inv is None else F32)
    if residual is None:
        return out
    return emit.recorded(
        residual_arithmetic(), out=_activation(emit, out, F32, outputs),
        residual=_activation(emit, residual, F32, outputs),
    )


def _int8_causal_conv1d(emit: Emitter, node: fx.Node) -> list[fx.Node]:
    x, weight, dequant, bias, inv, silu = node.args
    window_sum = emit(qops.causal_conv1d.default, x, _float_codes_attr(emit, weight), None, False)
    acc = emit(operator.getitem, window_sum, 0)
    codes = emit.recorded(
        float_arithmetic(node.target),
        acc=_activation(emit, acc, F32, attr_of(emit.gm, weight).shape[0]),
        dequant_scale=_buffer(emit, dequant), bias=_buffer(emit, bias), out_inv_scale=_buffer(emit, inv), silu=silu,
    )
    # the state: the last inputs, codes held in float32 as x is
    return [emit.cast(codes, F32), emit(operator.getitem, window_sum, 1)]


def _int8_selective_scan(emit: Emitter, node: fx.Node) -> list[fx.Node]:
    args = list(node.args)
    channels, state_size = attr_of(emit.gm, args[2]).shape
    widths = (channels, channels, state_size, state_size, channels)  # u, delta, B, C, z
    codes = {
        name: None if args[position] is None else _activation(emit, args[position], F32, 1, width)
        for name, position, width in zip(("u", "delta", "B", "C", "z"), SCAN_CODE_INPUTS, widths)
    }
    values = emit.recorded(float_arithmetic(node.target), scales=_buffer(emit, args[9]), **codes)
    for position, value in zip(SCAN_CODE_INPUTS, values):
        args[position] = value
    scan = emit(qops.selective_scan.default, *args[:9], out_dtype=args[10])
    return [emit(operator.getitem, scan, 0), emit(operator.getitem, scan, 1)]


def _hadamard_quant(emit: Emitter, node: fx.Node) -> fx.Node:
    y, hadamard, inv = node.args
    order = attr_of(emit.gm, hadamard).shape[0]
    scale = emit.attr(f"{inv.target}_hadamard", hadamard_output_scale(attr_of(emit.gm, inv), order))
    # H_D = H_R ⊗ H_C, so H_D @ y is H_R @ Y @ H_C.T on y read as (R, C): O(D (R + C)) float64 work a row,
    # not O(D^2). Each intermediate is a ±1 sum of the y, exact in float64 as the full product is.
    rows, cols = hadamard_factors(order)
    full = attr_of(emit.gm, hadamard).to(F64)
    right = emit.attr(f"{hadamard.target}_right_f64", full[:cols, :cols].clone(memory_format=torch.contiguous_format))
    left = emit.attr(f"{hadamard.target}_left_f64", full[::cols, ::cols].clone(memory_format=torch.contiguous_format))
    y_matrix = emit(aten.unflatten.int, emit.cast(y, F64), -1, [rows, cols])
    by_cols = emit(aten.transpose.int, emit(aten.linear.default, y_matrix, right), -1, -2)
    by_rows = emit(aten.transpose.int, emit(aten.linear.default, by_cols, left), -1, -2)
    rotated = emit(aten.flatten.using_ints, by_rows, -2, -1)
    codes = emit.recorded(
        float_arithmetic(node.target),
        rotated=_activation(emit, rotated, F64, order), output_scale=_buffer(emit, scale),
    )
    return emit.cast(codes, F32)


def _quantize(emit: Emitter, node: fx.Node) -> fx.Node:
    x, inv = node.args
    codes = emit.recorded(
        float_arithmetic(node.target), x=_activation(emit, x, F32, 1), out_inv_scale=_buffer(emit, inv)
    )
    return emit.cast(codes, F32)


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
        if isinstance(replacement, list):  # (output, final state) of the conv and the scan
            replace_outputs(gm, node, replacement)
            continue
        move_tap(node, replacement)
        node.replace_all_uses_with(replacement)
        gm.graph.erase_node(node)
    return gm
