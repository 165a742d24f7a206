"""dequantize_int8 (Triton) against its reference and against the quantized_decomposed op it stands for."""

import pytest
import torch
import torch.ao.quantization.fx._decomposed  # noqa: F401  (registers torch.ops.quantized_decomposed)

from mamba_qpass.kernels.dequantize.reference import dequantize_int8_ref
from mamba_qpass.kernels.dequantize.triton import dequantize_int8

qd = torch.ops.quantized_decomposed
ALL_CODES = torch.arange(-128, 128, dtype=torch.int16).to(torch.int8)


@pytest.mark.parametrize("scale,zero_point", [(0.0123, 0), (0.1, 0), (2.0**-20, 3), (7.5, -5)])
def test_matches_reference_and_torch_op(scale, zero_point, device):
    """Every code, a scale that float32 must round (0.1) and nonzero zero points: the same bits as the
    reference and as quantized_decomposed's dequantize, which the reference restates."""
    codes = ALL_CODES.repeat(3).reshape(3, 256).to(device)
    out = dequantize_int8(codes, scale, zero_point)
    assert out.dtype == torch.float32 and out.shape == codes.shape
    assert torch.equal(out, dequantize_int8_ref(codes, scale, zero_point))
    assert torch.equal(out, qd.dequantize_per_tensor.default(codes, scale, zero_point, -128, 127, torch.int8))


def test_strided_rows_and_batch_dims(device):
    g = torch.Generator().manual_seed(0)
    wide = torch.randint(-128, 128, (2, 5, 40), generator=g, dtype=torch.int8).to(device)
    codes = wide[..., 24:]  # a column slice: rows 40 apart, as z sliced from in_proj's output
    out = dequantize_int8(codes, 0.03, 0)
    assert out.is_contiguous() and out.shape == (2, 5, 16)
    assert torch.equal(out, dequantize_int8_ref(codes, 0.03, 0))


def test_rejects_bad_inputs(device):
    with pytest.raises(ValueError, match="codes must have dtype"):
        dequantize_int8(torch.zeros(2, 3, device=device), 1.0, 0)
    with pytest.raises(ValueError, match="contiguous"):
        dequantize_int8(torch.zeros(4, 3, dtype=torch.int8, device=device).T, 1.0, 0)


@pytest.mark.gpu
def test_real_shape_on_gpu():
    g = torch.Generator().manual_seed(1)
    wide = torch.randint(-128, 128, (1, 2048, 10240), generator=g, dtype=torch.int8).cuda()
    codes = wide[..., 5120:]
    assert torch.equal(dequantize_int8(codes, 0.0371, 0), dequantize_int8_ref(codes, 0.0371, 0))
