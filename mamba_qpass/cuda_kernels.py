"""Registers the Triton kernels as the CUDA implementations of the custom ops in ``ops.py``.

Imported by ``mamba_qpass/__init__.py`` where Triton is installed; on a machine without CUDA the
registrations are simply never dispatched to. Every op registered here has a Triton kernel but
``code_matmul_chunk``, float_sim's exact GEMM, which runs on cuBLAS's float16 tensor cores. The two float
helpers without a kernel, ``rms_norm`` and ``hadamard_rotate``,
are plain PyTorch on every device: they run in the float and calibration graphs, never in a lowered
int8 graph.
"""

from mamba_qpass import ops
from mamba_qpass.kernels.causal_conv1d.triton import causal_conv1d as causal_conv1d_triton
from mamba_qpass.kernels.code_matmul.tensor_cores import code_matmul_chunk
from mamba_qpass.kernels.dequantize.triton import dequantize_int8
from mamba_qpass.kernels.hadamard_quant.triton import hadamard_quant
from mamba_qpass.kernels.int8_causal_conv1d.triton import int8_causal_conv1d
from mamba_qpass.kernels.int8_conv_state_update.triton import int8_conv_state_update
from mamba_qpass.kernels.int8_linear.triton import int8_linear
from mamba_qpass.kernels.int8_linear_conv_step.triton import int8_linear_conv_step
from mamba_qpass.kernels.quantize.triton import quantize
from mamba_qpass.kernels.rms_norm_quant.triton import rms_norm_quant
from mamba_qpass.kernels.selective_scan.triton import selective_scan as selective_scan_triton
from mamba_qpass.kernels.selective_state_update.triton import DtProjection, selective_state_update, state_update_tiling


ops.register_device_kernel(ops.causal_conv1d, "cuda", causal_conv1d_triton)
ops.register_device_kernel(ops.code_matmul_chunk, "cuda", code_matmul_chunk)


# A one-token call with a state is a decode step: the step kernels (same arithmetic as the scan and conv
# kernels over one step, one program per channel block instead of per time chunk) serve it.
def _is_decode_step(x, initial_state) -> bool:
    return initial_state is not None and x.shape[1] == 1


def _selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state=None, out_dtype=None):
    if _is_decode_step(u, initial_state):
        return selective_state_update(u, delta, A, B, C, D, z, delta_bias, delta_softplus, out_dtype, initial_state)
    return selective_scan_triton(u, delta, A, B, C, D, z, delta_bias, delta_softplus, out_dtype, initial_state)


def _int8_selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, scales, out_dtype, initial_state=None):
    if _is_decode_step(u, initial_state):
        return selective_state_update(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, out_dtype, initial_state, scales=scales
        )
    return selective_scan_triton(
        u, delta, A, B, C, D, z, delta_bias, delta_softplus, out_dtype, initial_state, scales=scales
    )


def _int8_causal_conv1d(x, weight, dequant_scale, bias, out_inv_scale, silu, initial_state=None):
    if _is_decode_step(x, initial_state):
        return int8_conv_state_update(x, weight, dequant_scale, bias, out_inv_scale, silu, initial_state)
    return int8_causal_conv1d(x, weight, dequant_scale, bias, out_inv_scale, silu, initial_state)


for _op, _kernel in (
    (ops.selective_scan, _selective_scan), (ops.int8_selective_scan, _int8_selective_scan),
    (ops.int8_causal_conv1d, _int8_causal_conv1d), (ops.int8_linear, int8_linear),
    (ops.rms_norm_quant, rms_norm_quant), (ops.hadamard_quant, hadamard_quant), (ops.quantize, quantize),
):
    ops.register_device_kernel(_op, "cuda", _kernel)


# The CUDA decode step's variants of the one-token calls (``runtime/in_place_states.py``,
# ``runtime/fuse_dt_proj.py``, ``runtime/fuse_in_proj_conv.py``): the same kernels, writing the new state
# over the given one, the scan computing dt_proj itself, in_proj doing the conv's step. Plain functions
# called from the step graph that owns the states, not ops. The scans take the state update's ``tiling``
# (``selective_state_update``'s; None: its rule), which a step graph's node may set to time another.
def _check_step(name: str, x, state) -> None:
    if state is None or x.shape[1] != 1:
        raise ValueError(
            f"an in-place {name} updates a given state by one token; got {x.shape[1]} tokens and "
            f"{'no' if state is None else 'a'} state (run prompts through the functional step graph)"
        )


def selective_scan_in_place(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state=None, out_dtype=None,
                            tiling=None):
    _check_step("selective_scan", u, initial_state)
    return selective_state_update(
        u, delta, A, B, C, D, z, delta_bias, delta_softplus, out_dtype, initial_state, state_out=initial_state,
        tiling=tiling,
    )


def int8_selective_scan_in_place(u, delta, A, B, C, D, z, delta_bias, delta_softplus, scales, out_dtype,
                                 initial_state=None, tiling=None):
    _check_step("int8_selective_scan", u, initial_state)
    return selective_state_update(
        u, delta, A, B, C, D, z, delta_bias, delta_softplus, out_dtype, initial_state, scales=scales,
        state_out=initial_state, tiling=tiling,
    )


def int8_causal_conv1d_in_place(x, weight, dequant_scale, bias, out_inv_scale, silu, initial_state=None):
    _check_step("int8_causal_conv1d", x, initial_state)
    return int8_conv_state_update(
        x, weight, dequant_scale, bias, out_inv_scale, silu, initial_state, state_out=initial_state
    )


def int8_selective_scan_dt_proj_in_place(u, low_rank, dt_weight, dt_dequant_scale, dt_out_inv_scale, A, B, C, D, z,
                                         delta_bias, delta_softplus, scales, out_dtype, initial_state=None,
                                         tiling=None):
    _check_step("int8_selective_scan", u, initial_state)
    return selective_state_update(
        u, low_rank, A, B, C, D, z, delta_bias, delta_softplus, out_dtype, initial_state, scales=scales,
        state_out=initial_state, dt_proj=DtProjection(dt_weight, dt_dequant_scale, dt_out_inv_scale), tiling=tiling,
    )


def int8_linear_conv_step_in_place(a, weight, dequant_scale, out_inv_scale, conv_weight, conv_dequant_scale, conv_bias,
                                   conv_out_inv_scale, silu, initial_state=None):
    """in_proj's codes, and the conv's ``(out, state)`` as its op returns them."""
    _check_step("in_proj + int8_causal_conv1d", a, initial_state)
    codes, out, state = int8_linear_conv_step(
        a, weight, dequant_scale, out_inv_scale, conv_weight, conv_dequant_scale, conv_bias, conv_out_inv_scale, silu,
        initial_state, state_out=initial_state,
    )
    return codes, (out, state)


def dequantize_int8_per_tensor(codes, scale, zero_point, quant_min, quant_max, dtype):
    """``quantized_decomposed.dequantize_per_tensor.default`` for int8 codes to float32 (its quant_min and
    quant_max take no part in the arithmetic there either) in one kernel: ``direct_calls`` points such
    nodes here on CUDA."""
    return dequantize_int8(codes, scale, zero_point)
