"""The selective scan on int8 inputs: dequantise, then ``selective_scan_ref``. This is the specification
the Triton kernel follows when it receives int8 codes with ``ScanInputScales``."""

from dataclasses import dataclass

import torch

from mamba_qpass.kernels.selective_scan.reference import selective_scan_ref


@dataclass(frozen=True)
class ScanInputScales:
    """Per-tensor scales of the int8 scan inputs; an input's value is ``code.to(float32) * scale``, with
    the scale rounded once to float32 (``as_tensor``), so kernel and reference multiply by the same number.
    ``z`` is ignored when the scan has no z gate."""

    u: float
    delta: float
    B: float
    C: float
    z: float = 1.0

    def as_tensor(self, device: torch.device | str) -> torch.Tensor:
        """float32 (5,): [u, delta, B, C, z], the layout the kernel reads."""
        return torch.tensor([self.u, self.delta, self.B, self.C, self.z], dtype=torch.float32, device=device)


def scan_scales_tensor(scales: "ScanInputScales | torch.Tensor", device: torch.device) -> torch.Tensor:
    """The float32 (5,) [u, delta, B, C, z] tensor of ``scales``: a ``ScanInputScales``, or that tensor
    already (what a graph keeps as a buffer; passing it avoids a host round trip per call)."""
    if isinstance(scales, ScanInputScales):
        return scales.as_tensor(device)
    if not isinstance(scales, torch.Tensor):
        raise ValueError(f"scales must be a ScanInputScales or a float32 (5,) tensor, got {type(scales).__name__}")
    if scales.dtype != torch.float32 or tuple(scales.shape) != (5,) or scales.device != device:
        raise ValueError(
            f"a scales tensor must be float32 of shape (5,) on {device} ([u, delta, B, C, z]), "
            f"got {scales.dtype} {tuple(scales.shape)} on {scales.device}"
        )
    return scales


def dequantize_scan_inputs(
    scales: "ScanInputScales | torch.Tensor",
    u: torch.Tensor,
    delta: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    z: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """float32 values of the int8 codes u, delta, B, C, z (z may be None)."""
    s_u, s_delta, s_B, s_C, s_z = scan_scales_tensor(scales, u.device).unbind()
    return (
        u.to(torch.float32) * s_u,
        delta.to(torch.float32) * s_delta,
        B.to(torch.float32) * s_B,
        C.to(torch.float32) * s_C,
        None if z is None else z.to(torch.float32) * s_z,
    )


def selective_scan_int8_ref(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = True,
    out_dtype: torch.dtype | None = None,
    initial_state: torch.Tensor | None = None,
    *,
    scales: "ScanInputScales | torch.Tensor",
) -> tuple[torch.Tensor, torch.Tensor]:
    """u, delta, z: int8 (B, L, D); B, C: int8 (B, L, N); scales: see ``scan_scales_tensor``; the rest as
    in ``selective_scan_ref``. Returns ``(out, final_state)``; out defaults to float32."""
    u32, delta32, B32, C32, z32 = dequantize_scan_inputs(scales, u, delta, B, C, z)
    return selective_scan_ref(
        u32, delta32, A, B32, C32, D, z32, delta_bias, delta_softplus,
        out_dtype or torch.float32, initial_state,
    )
