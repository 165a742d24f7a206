"""The custom ops the canonical graph is made of, registered with ``torch.library``.

Each op is a single node to export, FX passes and ``torch.compile`` (its fake implementation gives
shapes without running it). The CPU implementation is the op's plain-PyTorch reference
(``kernels/<op>/reference.py``); CUDA kernels are registered beside it in ``cuda_kernels.py``.
"""

import torch

from mamba_qpass.kernels.causal_conv1d.reference import causal_conv1d_ref
from mamba_qpass.kernels.rms_norm.reference import rms_norm_ref
from mamba_qpass.kernels.selective_scan.reference import selective_scan_ref

NAMESPACE = "mamba_qpass"


@torch.library.custom_op(f"{NAMESPACE}::rms_norm", mutates_args=())
def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return rms_norm_ref(x, weight, eps)


@rms_norm.register_fake
def _(x, weight, eps):
    return x.new_empty(x.shape, dtype=weight.dtype)


@torch.library.custom_op(f"{NAMESPACE}::causal_conv1d", mutates_args=())
def causal_conv1d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, silu: bool
) -> torch.Tensor:
    return causal_conv1d_ref(x, weight, bias, silu)


@causal_conv1d.register_fake
def _(x, weight, bias, silu):
    return torch.empty_like(x)


@torch.library.custom_op(f"{NAMESPACE}::selective_scan", mutates_args=())
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
) -> torch.Tensor:
    out, _ = selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return out


@selective_scan.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    return torch.empty_like(u)
