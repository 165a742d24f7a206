"""Per-tensor dequantisation of int8 codes in plain PyTorch: the specification of ``dequantize_int8``.

    out = (f32(code) - zero_point) * scale        float32, two rounded operations (the first exact)

This is ``quantized_decomposed.dequantize_per_tensor``'s arithmetic for int8 codes and float32 output,
the node that the fp32_ssm and fp32_conv modes put before their float kernels: torch runs it as three
elementwise kernels (conversion, subtraction, multiplication) over float32 tensors, the Triton kernel as
one. ``scale`` and ``zero_point`` are the numbers the node holds (torch rounds a Python float scale to
float32 before it multiplies float32 values).
"""

import torch


def dequantize_int8_ref(codes: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """codes: int8, any shape. Returns float32 of codes' shape."""
    return (codes.to(torch.float32) - zero_point) * scale
