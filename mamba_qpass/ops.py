"""The custom ops the canonical graph is made of, registered with ``torch.library``.

Each op is a single node to export, FX passes and ``torch.compile`` (its fake implementation gives
shapes without running it). The implementation on every device is the op's plain-PyTorch reference
(``kernels/<op>/reference.py``); where Triton is installed, ``cuda_kernels.py`` registers the Triton
kernels for CUDA in its place (``register_device_kernel``). ``implementation`` says which function an op
runs on a device, for a graph that calls it directly (``runtime/direct_calls.py``).
"""

from collections.abc import Callable

import torch

from mamba_qpass.kernels.causal_conv1d.reference import causal_conv1d_ref
from mamba_qpass.kernels.code_matmul.reference import code_matmul_chunk_ref
from mamba_qpass.kernels.hadamard_quant import reference as hadamard_quant_reference
from mamba_qpass.kernels.hadamard_quant.reference import hadamard_quant_ref
from mamba_qpass.kernels.hadamard_rotate.reference import hadamard_rotate_ref
from mamba_qpass.kernels.int8_causal_conv1d import reference as int8_causal_conv1d_reference
from mamba_qpass.kernels.int8_causal_conv1d.reference import int8_causal_conv1d_ref
from mamba_qpass.kernels.int8_linear import reference as int8_linear_reference
from mamba_qpass.kernels.int8_linear.reference import int8_linear_ref
from mamba_qpass.kernels.quantize import reference as quantize_reference
from mamba_qpass.kernels.quantize.reference import quantize_ref
from mamba_qpass.kernels.rms_norm.reference import rms_norm_ref
from mamba_qpass.kernels.rms_norm_quant import reference as rms_norm_quant_reference
from mamba_qpass.kernels.rms_norm_quant.reference import rms_norm_quant_ref
from mamba_qpass.kernels.selective_scan import reference as selective_scan_reference
from mamba_qpass.kernels.selective_scan.reference import selective_scan_int8_ref, selective_scan_ref

NAMESPACE = "mamba_qpass"
# op name -> {device type or None (every device): the function the dispatcher runs there}
_IMPLEMENTATIONS: dict[str, dict[str | None, Callable]] = {}


def _custom_op(name: str) -> Callable:
    """``torch.library.custom_op`` for ``mamba_qpass::name``, its function recorded as the op's
    implementation on every device."""

    def define(fn: Callable):
        _IMPLEMENTATIONS[name] = {None: fn}
        return torch.library.custom_op(f"{NAMESPACE}::{name}", mutates_args=())(fn)

    return define


def register_device_kernel(op, device_type: str, fn: Callable) -> Callable:
    """Registers ``fn`` as ``op``'s implementation on ``device_type`` (``op.register_kernel``), and records
    it for ``implementation``."""
    op.register_kernel(device_type)(fn)
    _IMPLEMENTATIONS[op._name.split("::")[-1]][device_type] = fn
    return fn


def implementation(op: torch._ops.OpOverload, device_type: str) -> Callable:
    """The function ``op`` (an op of this namespace) runs on ``device_type``: what the dispatcher calls,
    without the dispatch."""
    kernels = _IMPLEMENTATIONS[op._opname]
    return kernels.get(device_type, kernels[None])


@_custom_op("rms_norm")
def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return rms_norm_ref(x, weight, eps)


@rms_norm.register_fake
def _(x, weight, eps):
    return x.new_empty(x.shape, dtype=weight.dtype)


# The conv and scan ops take the state to continue from (None: zeros) and return the state to continue
# with, so one graph serves a prefill (no state in) and each decode step (the previous step's state in).
# The conv state is the last width-1 inputs, in the input's dtype: int8 codes for the int8 conv.


def _conv_state_like(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return x.new_empty((x.shape[0], weight.shape[1] - 1, x.shape[2]))


@_custom_op("causal_conv1d")
def causal_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    silu: bool,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    return causal_conv1d_ref(x, weight, bias, silu, initial_state)


@causal_conv1d.register_fake
def _(x, weight, bias, silu, initial_state=None):
    return torch.empty_like(x), _conv_state_like(x, weight)


@_custom_op("selective_scan")
def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
    delta_softplus: bool,
    initial_state: torch.Tensor | None = None,
    out_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, out_dtype, initial_state)


def _ssm_state_like(u: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    return u.new_empty((u.shape[0], *A.shape), dtype=torch.float32)


@selective_scan.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state=None, out_dtype=None):
    return torch.empty_like(u, dtype=out_dtype), _ssm_state_like(u, A)


# float_sim's GEMM, a chunk of K at a time: the accumulator of int8 codes held in floats, float32 out, exact
# for K <= numerics.CODE_PRODUCT_TERMS (kernels/code_matmul).
@_custom_op("code_matmul_chunk")
def code_matmul_chunk(a: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return code_matmul_chunk_ref(a, weight)


@code_matmul_chunk.register_fake
def _(a, weight):
    return a.new_empty((*a.shape[:-1], weight.shape[0]), dtype=torch.float32)


# --- the int8 datapath -------------------------------------------------------------------------
# Scales travel as float64 tensors (dequantisation products and inverse output scales, computed on
# the host once per graph), never as Python floats, which a Triton launch would narrow to float32.


@_custom_op("hadamard_rotate")
def hadamard_rotate(y: torch.Tensor, hadamard: torch.Tensor) -> torch.Tensor:
    return hadamard_rotate_ref(y, hadamard)


@hadamard_rotate.register_fake
def _(y, hadamard):
    return torch.empty_like(y)


@_custom_op("int8_linear")
def int8_linear(
    a: torch.Tensor,
    weight: torch.Tensor,
    dequant_scale: torch.Tensor,
    bias: torch.Tensor | None,
    out_inv_scale: torch.Tensor | None,
    out_dtype: torch.dtype,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    return int8_linear_ref(a, weight, dequant_scale, bias, out_inv_scale, out_dtype, residual)


@int8_linear.register_fake
def _(a, weight, dequant_scale, bias, out_inv_scale, out_dtype, residual=None):
    dtype = torch.int8 if out_inv_scale is not None else out_dtype
    return a.new_empty((*a.shape[:-1], weight.shape[0]), dtype=dtype)


@_custom_op("int8_causal_conv1d")
def int8_causal_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    dequant_scale: torch.Tensor,
    bias: torch.Tensor | None,
    out_inv_scale: torch.Tensor,
    silu: bool,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    return int8_causal_conv1d_ref(x, weight, dequant_scale, bias, out_inv_scale, silu, initial_state)


@int8_causal_conv1d.register_fake
def _(x, weight, dequant_scale, bias, out_inv_scale, silu, initial_state=None):
    return x.new_empty(x.shape, dtype=torch.int8), _conv_state_like(x, weight)


@_custom_op("rms_norm_quant")
def rms_norm_quant(x: torch.Tensor, weight: torch.Tensor, eps: float, out_inv_scale: torch.Tensor) -> torch.Tensor:
    return rms_norm_quant_ref(x, weight, eps, out_inv_scale)


@rms_norm_quant.register_fake
def _(x, weight, eps, out_inv_scale):
    return x.new_empty(x.shape, dtype=torch.int8)


@_custom_op("hadamard_quant")
def hadamard_quant(y: torch.Tensor, hadamard: torch.Tensor, out_inv_scale: torch.Tensor) -> torch.Tensor:
    return hadamard_quant_ref(y, hadamard, out_inv_scale)


@hadamard_quant.register_fake
def _(y, hadamard, out_inv_scale):
    return y.new_empty(y.shape, dtype=torch.int8)


@_custom_op("quantize")
def quantize(x: torch.Tensor, out_inv_scale: torch.Tensor) -> torch.Tensor:
    return quantize_ref(x, out_inv_scale)


@quantize.register_fake
def _(x, out_inv_scale):
    return x.new_empty(x.shape, dtype=torch.int8)


@_custom_op("int8_selective_scan")
def int8_selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
    delta_softplus: bool,
    scales: torch.Tensor,
    out_dtype: torch.dtype,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    return selective_scan_int8_ref(
        u, delta, A, B, C, D, z, delta_bias, delta_softplus, out_dtype, initial_state, scales=scales
    )


@int8_selective_scan.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus, scales, out_dtype, initial_state=None):
    return u.new_empty(u.shape, dtype=out_dtype), _ssm_state_like(u, A)


# The float arithmetic around each int8 op's exact integer part, as the op's reference writes it: the
# requantisation epilogue (the whole op for rms_norm_quant and quantize, which have no integer part), or
# for the scan the dequantisation before its float32 recurrence. float_sim expands these functions into
# graph nodes. They are looked up in the reference module at each call, so a reference patched in a
# session (an experiment with another epilogue) changes the CPU op and float_sim together.
_FLOAT_ARITHMETIC = {
    "rms_norm_quant": (rms_norm_quant_reference, "rms_norm_quant_epilogue"),
    "int8_linear": (int8_linear_reference, "int8_linear_epilogue"),
    "int8_causal_conv1d": (int8_causal_conv1d_reference, "int8_causal_conv1d_epilogue"),
    "hadamard_quant": (hadamard_quant_reference, "hadamard_quant_epilogue"),
    "quantize": (quantize_reference, "quantize_epilogue"),
    "int8_selective_scan": (selective_scan_reference, "dequantize_scan_inputs"),
}


def float_arithmetic(op: torch._ops.OpOverload) -> Callable:
    """The reference function holding ``op``'s float arithmetic (see ``_FLOAT_ARITHMETIC``)."""
    if op.namespace != NAMESPACE or op._opname not in _FLOAT_ARITHMETIC:
        raise ValueError(
            f"{op} is not an int8 op of {NAMESPACE}: the ops with float arithmetic are {sorted(_FLOAT_ARITHMETIC)}"
        )
    module, name = _FLOAT_ARITHMETIC[op._opname]
    return getattr(module, name)


def residual_arithmetic() -> Callable:
    """The reference function adding ``int8_linear``'s optional residual to its float32 output."""
    return int8_linear_reference.add_residual


# --- no gradients through the int8 datapath ----------------------------------------------------------
# Integer codes have no derivative, so an int8 op refuses a backward with the reason instead of torch's
# generic "no autograd formula". Finished graphs hold no tensor that requires grad (passes/
# inference_buffers.py), so this is reached only when a caller asks for gradients on purpose.
INT8_OPS = (
    rms_norm_quant, int8_linear, int8_causal_conv1d, hadamard_quant, quantize, int8_selective_scan,
)


def _refuse_backward(op_name: str) -> Callable:
    def backward(ctx, *grads):
        raise RuntimeError(
            f"{NAMESPACE}::{op_name} has no gradient: the int8 datapath is for inference; run it under "
            "torch.no_grad() (or torch.inference_mode()), or take gradients of the float model"
        )

    return backward


for _op in INT8_OPS:
    _op.register_autograd(_refuse_backward(_op._name))
