"""rms_norm_quant (Triton) against rms_norm_quant_ref: the int8 codes must be identical."""

import pytest
import torch

from mamba_qpass.kernels.rms_norm_quant.reference import rms_norm_quant_ref
from mamba_qpass.kernels.rms_norm_quant.triton import rms_norm_quant
from codes import assert_same_codes

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def make_inputs(rows, hidden, dtype, device, seed=0, inv=127 / 4):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(rows, hidden, generator=g) * 3).to(dtype)
    weight = (0.5 + torch.rand(hidden, generator=g)).to(dtype)
    return x.to(device), weight.to(device), torch.tensor(inv, dtype=torch.float64, device=device)


SHAPES = {"M63-H40": (63, 40), "M7-H24": (7, 24), "M1-H768": (1, 768), "M5-H1000": (5, 1000)}


@pytest.mark.parametrize("rows,hidden", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_matches_reference(rows, hidden, dtype, device):
    x, w, inv = make_inputs(rows, hidden, dtype, device)
    out = rms_norm_quant(x, w, 1e-5, inv)
    assert_same_codes(out, rms_norm_quant_ref(x, w, 1e-5, inv))
    assert out.float().std() > 5, "test data should spread over many codes"


def test_3d_input_sliced_from_wider_tensor(device):
    x, w, inv = make_inputs(14, 80, torch.float16, device)
    x = x.reshape(2, 7, 80)[..., :40]
    w = w[:40]
    out = rms_norm_quant(x, w, 1e-6, inv)
    assert out.shape == (2, 7, 40)
    assert_same_codes(out, rms_norm_quant_ref(x, w, 1e-6, inv))


def test_saturates_to_int8_range(device):
    x, w, _ = make_inputs(9, 40, torch.float32, device)
    inv = torch.tensor([127.0], dtype=torch.float64, device=device)
    out = rms_norm_quant(x, w, 1e-5, inv)
    assert_same_codes(out, rms_norm_quant_ref(x, w, 1e-5, inv))
    assert (out == 127).any() and (out == -128).any()


def test_ties_round_half_to_even(device):
    """Rows of a constant power of two with eps = 0 normalise to exactly ±1, so y = ±weight; weights
    k + 0.5 are exact ties and must go to the even neighbour."""
    hidden = 24
    weight = (torch.arange(hidden, dtype=torch.float32) - 12 + 0.5).to(device)  # -11.5 ... 11.5
    x = torch.tensor([[4.0], [-0.25], [1.0]], device=device).expand(3, hidden).contiguous()
    one = torch.ones((), dtype=torch.float64, device=device)
    out = rms_norm_quant(x, weight, 0.0, one)
    expected = torch.round(torch.sign(x) * weight).to(torch.int8)  # torch.round is half-even
    assert torch.equal(out, expected)
    assert_same_codes(out, rms_norm_quant_ref(x, weight, 0.0, one))


@pytest.mark.parametrize(
    "case,match",
    [
        ("int8_x", "x must have dtype"),
        ("hidden_too_large", "H <= 8192"),
        ("weight_shape", "weight must have shape"),
        ("python_float_scale", "out_inv_scale must be a torch.Tensor"),
        ("f32_scale", "out_inv_scale must have dtype"),
        ("negative_eps", "eps must be >= 0"),
        ("strided_hidden", "contiguous last dim"),
    ],
)
def test_rejects_bad_inputs(case, match, device):
    x, w, inv = make_inputs(4, 40, torch.float32, device)
    args = dict(x=x, weight=w, eps=1e-5, out_inv_scale=inv)
    if case == "int8_x":
        args["x"] = x.to(torch.int8)
    elif case == "hidden_too_large":
        args.update(x=torch.zeros(1, 8200, device=device), weight=torch.ones(8200, device=device))
    elif case == "weight_shape":
        args["weight"] = w[:20]
    elif case == "python_float_scale":
        args["out_inv_scale"] = 31.75
    elif case == "f32_scale":
        args["out_inv_scale"] = inv.float()
    elif case == "negative_eps":
        args["eps"] = -1.0
    elif case == "strided_hidden":
        args["x"] = torch.zeros(4, 80, device=device)[:, ::2]
    with pytest.raises(ValueError, match=match):
        rms_norm_quant(**args)


# (tokens, d_model) of mamba-130m (768) and mamba-2.8b (2560).
REAL_SHAPES = {"130m-L2048": (2048, 768), "2.8b-B2-L512": (1024, 2560), "1.4b-L2048": (2048, 2048),
               "2.8b-decode-B16": (16, 2560)}


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("rows,hidden", REAL_SHAPES.values(), ids=REAL_SHAPES.keys())
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_real_shapes_on_gpu(rows, hidden, dtype):
    x, w, inv = make_inputs(rows, hidden, dtype, "cuda")
    assert_same_codes(rms_norm_quant(x, w, 1e-5, inv), rms_norm_quant_ref(x, w, 1e-5, inv))


@pytest.mark.parametrize("rows,hidden", [(300, 40), (300, 2560), (5, 2560), (300, 1000)],
                         ids=["parts-several-rows", "parts-one-row", "decode-padded", "three-parts"])
def test_gpu_tilings(rows, hidden, device, monkeypatch):
    """The GPU's tilings (a row in power-of-two parts, or one padded block for a decode step's few rows)
    give the reference's codes wherever they run (interpreted here without CUDA)."""
    from mamba_qpass.kernels.rms_norm_quant import triton as rms

    gpu = rms._tiling(rows, hidden, torch.device("cuda"))
    gpu.pop("num_warps")
    monkeypatch.setattr(rms, "_tiling", lambda *_: gpu)
    x, w, inv = make_inputs(rows, hidden, torch.float32, device, seed=3)
    assert_same_codes(rms_norm_quant(x, w, 1e-5, inv), rms_norm_quant_ref(x, w, 1e-5, inv))
