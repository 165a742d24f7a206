"""Triton int8 GEMM (int32 accumulation on tensor cores) with the float64 epilogue of ``int8_linear_ref``."""

import torch
import triton
import triton.language as tl

from mamba_qpass.kernels.checks import check_f64_vector, check_tensor, check_unit_last_stride
from mamba_qpass.kernels.quant_math import EXACT_FP_LAUNCH, tl_round_half_even_clamp_int8

# float32 only: on the GPU a float64 -> float16 store rounds twice (through float32), which a direct
# conversion in the reference would not, so float16 output could not be bit-exact.
FLOAT_OUT_DTYPES = (torch.float32,)


@triton.jit
def _int8_linear_kernel(
    a_ptr, w_ptr, dequant_scale_ptr, bias_ptr, out_inv_scale_ptr, out_ptr,
    M, N, K, stride_am, stride_wn, stride_om,
    HAS_BIAS: tl.constexpr, QUANTIZE_OUT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    mask_m = offs_m < M
    mask_n = offs_n < N
    a_ptrs = a_ptr + offs_m[:, None] * stride_am + offs_k[None, :]
    w_ptrs = w_ptr + offs_n[None, :] * stride_wn + offs_k[:, None]  # (BLOCK_K, BLOCK_N) view of weight.T

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    for k_start in range(0, K, BLOCK_K):
        mask_k = offs_k < K - k_start
        a = tl.load(a_ptrs, mask=mask_m[:, None] & mask_k[None, :], other=0)
        w = tl.load(w_ptrs, mask=mask_k[:, None] & mask_n[None, :], other=0)
        acc = tl.dot(a, w, acc, out_dtype=tl.int32)
        a_ptrs += BLOCK_K
        w_ptrs += BLOCK_K

    # Epilogue in float64, one rounded operation at a time (launched without FMA contraction).
    v = acc.to(tl.float64) * tl.load(dequant_scale_ptr + offs_n, mask=mask_n, other=0.0)[None, :]
    if HAS_BIAS:
        v = v + tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0)[None, :]
    out_ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :]
    mask = mask_m[:, None] & mask_n[None, :]
    if QUANTIZE_OUT:
        v = v * tl.load(out_inv_scale_ptr + offs_n, mask=mask_n, other=0.0)[None, :]
        tl.store(out_ptrs, tl_round_half_even_clamp_int8(v), mask=mask)
    else:
        tl.store(out_ptrs, v.to(out_ptr.dtype.element_ty), mask=mask)


def _pow2_tile(n: int, smallest: int, largest: int) -> int:
    return min(largest, max(smallest, triton.next_power_of_2(n)))


def _gemm_launch_config(m: int, n: int, k: int, device: torch.device) -> dict:
    """Tile sizes by a small rule, not autotuning. An int8 ``tl.dot`` needs K tiles of at least 32 and
    M, N tiles of at least 16. On CPU (the interpreter) every tl op costs the same whatever its size, so
    the fewest, largest programs win; on GPU, tensor-core-friendly tiles."""
    if device.type != "cuda":
        return dict(BLOCK_M=_pow2_tile(m, 16, 64), BLOCK_N=_pow2_tile(n, 16, 64), BLOCK_K=_pow2_tile(k, 32, 128))
    block_m = _pow2_tile(m, 16, 128)
    block_n = _pow2_tile(n, 32, 128)
    return dict(
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_K=_pow2_tile(k, 32, 128),
        num_warps=8 if block_m * block_n >= 128 * 128 else 4,
        num_stages=3,
    )


def int8_linear(
    a: torch.Tensor,
    weight: torch.Tensor,
    dequant_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    out_inv_scale: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Triton ``int8_linear_ref``: a int8 (..., K) (2D or 3D, last dim contiguous, rows may be strided),
    weight int8 (N, K), float64 (N,) dequant_scale / bias / out_inv_scale. Returns int8 (..., N) codes
    when ``out_inv_scale`` is given, else (..., N) in ``out_dtype`` (float32); bit-identical
    to the reference in both cases."""
    check_tensor("a", a, (torch.int8,), (2, 3))
    device = a.device
    check_unit_last_stride("a", a)
    check_tensor("weight", weight, (torch.int8,), (2,), device)
    check_unit_last_stride("weight", weight)
    n, k = weight.shape
    if a.shape[-1] != k:
        raise ValueError(f"a has K={a.shape[-1]} but weight has shape (N, K)={tuple(weight.shape)}")
    check_f64_vector("dequant_scale", dequant_scale, n, device)
    if bias is not None:
        check_f64_vector("bias", bias, n, device)
    if out_inv_scale is not None:
        check_f64_vector("out_inv_scale", out_inv_scale, n, device)
    elif out_dtype not in FLOAT_OUT_DTYPES:
        raise ValueError(f"out_dtype must be one of {FLOAT_OUT_DTYPES}, got {out_dtype}")

    rows = a.reshape(-1, k)  # a view whenever the leading dims can be merged (e.g. a column slice)
    m = rows.shape[0]
    out = torch.empty(m, n, dtype=torch.int8 if out_inv_scale is not None else out_dtype, device=device)
    if m > 0:
        config = _gemm_launch_config(m, n, k, device)
        grid = (triton.cdiv(m, config["BLOCK_M"]), triton.cdiv(n, config["BLOCK_N"]))
        _int8_linear_kernel[grid](
            rows, weight, dequant_scale,
            bias if bias is not None else dequant_scale,
            out_inv_scale if out_inv_scale is not None else dequant_scale,
            out,
            m, n, k, rows.stride(0), weight.stride(0), out.stride(0),
            HAS_BIAS=bias is not None, QUANTIZE_OUT=out_inv_scale is not None,
            **config, **EXACT_FP_LAUNCH,
        )
    return out.reshape(*a.shape[:-1], n)
