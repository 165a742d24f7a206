"""quantize (Triton) against its reference: identical codes."""

import pytest
import torch

from mamba_qpass.kernels.quantize.reference import quantize_ref
from mamba_qpass.kernels.quantize.triton import quantize
from codes import assert_same_codes, f64

FLOAT_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@pytest.mark.parametrize("dtype", FLOAT_DTYPES.values(), ids=FLOAT_DTYPES.keys())
@pytest.mark.parametrize("shape", [(63, 40), (1, 24), (2, 7, 24)], ids=lambda s: "x".join(map(str, s)))
def test_quantize_matches_reference(shape, dtype, device):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=g) * 50).to(dtype).to(device)
    inv = f64(1.3, device)
    out = quantize(x, inv)
    assert_same_codes(out, quantize_ref(x, inv))
    assert (out == 127).any() and (out == -128).any(), "test data should reach both ends"


def test_quantize_ties_and_sliced_input(device):
    x = (torch.arange(-130, 130, dtype=torch.float32) + 0.5).reshape(4, 65).to(device)
    wide = torch.cat([x, x], dim=1)[:, :65]  # row stride 130
    out = quantize(wide, f64(1.0, device))
    assert torch.equal(out, torch.round(x).clamp(-128, 127).to(torch.int8))  # torch.round is half-even
    assert_same_codes(out, quantize_ref(wide, f64(1.0, device)))


@pytest.mark.parametrize("inv_scale", [1.0, 2.0**40, 1e200], ids=["unit", "2^40", "1e200"])
def test_quantize_codes_at_extremes(inv_scale, device):
    """The kernels round before they clamp, and clamp in float32 (quant_math): the codes must still be the
    reference's at the clamp's edges, where the rounding trick stops being exact (|v| >= 2**51), and past
    float32's range (the 1e200 scale takes products to 1e238)."""
    edges = [126.5, 127.0, 127.5, 128.5, 2.0**23 + 0.5, 2.0**51, 2.0**52 + 2, 2.0**60, 3e38, float("inf")]
    small = [0.0, 2.0**-149, 0.5, 1.5, 2.5, 1.0 - 2.0**-24]
    values = torch.tensor(edges + small, dtype=torch.float32)
    x = torch.cat([values, -values]).reshape(2, -1).to(device)
    inv = f64(inv_scale, device)
    assert_same_codes(quantize(x, inv), quantize_ref(x, inv))


def test_quantize_rejects_bad_inputs(device):
    with pytest.raises(ValueError, match="x must have dtype"):
        quantize(torch.zeros(2, 3, dtype=torch.int8, device=device), f64(1.0, device))
    with pytest.raises(ValueError, match="out_inv_scale must have dtype"):
        quantize(torch.zeros(2, 3, device=device), torch.ones((), device=device))


@pytest.mark.gpu
@pytest.mark.parametrize("rows,width", [(2048, 1536), (512, 5120)], ids=["130m-L2048", "2.8b-L512"])
def test_real_shapes_on_gpu(rows, width):
    g = torch.Generator().manual_seed(rows)
    x = (torch.randn(rows, width, generator=g) * 40).half().cuda()
    inv = f64(1.7, "cuda")
    assert_same_codes(quantize(x, inv), quantize_ref(x, inv))
