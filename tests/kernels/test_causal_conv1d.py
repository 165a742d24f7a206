"""causal_conv1d (Triton, float) against causal_conv1d_ref.

The kernel computes in float32; the reference in the weight's dtype. Tolerances, as a fraction of
max |reference|: float32 1e-5, float16 2e-3, bfloat16 1.6e-2 (a few units in the last place).
"""

import pytest
import torch

from mamba_qpass.kernels.causal_conv1d.reference import causal_conv1d_ref
from mamba_qpass.kernels.causal_conv1d.triton import causal_conv1d

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def make_inputs(batch, seq_len, channels, width, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, seq_len, channels, generator=g).to(dtype)
    w = (torch.randn(channels, width, generator=g) * 0.5).to(dtype)
    b = torch.randn(channels, generator=g).to(dtype)
    return x.to(device), w.to(device), b.to(device)


def assert_close_to_ref(out, ref):
    assert out.dtype == ref.dtype and out.shape == ref.shape
    err = (out.float() - ref.float()).abs().max().item()
    scale = ref.float().abs().max().item()
    assert err <= TOLERANCE[ref.dtype] * scale, f"max error {err:.3g} vs max |ref| {scale:.3g}"


SHAPES = {"B2-L7-D24": (2, 7, 24), "B2-L63-D40": (2, 63, 40), "B1-L130-D300": (1, 130, 300)}


@pytest.mark.parametrize("batch,seq_len,channels", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("silu", [True, False], ids=["silu", "linear"])
def test_matches_reference(batch, seq_len, channels, dtype, silu, device):
    x, w, b = make_inputs(batch, seq_len, channels, 4, dtype, device)
    assert_close_to_ref(causal_conv1d(x, w, b, silu)[0], causal_conv1d_ref(x, w, b, silu)[0])


@pytest.mark.parametrize("width", [1, 2, 3])
def test_narrower_kernels_without_bias(width, device):
    x, w, _ = make_inputs(2, 9, 24, width, torch.float32, device)
    assert_close_to_ref(causal_conv1d(x, w, None, True)[0], causal_conv1d_ref(x, w, None, True)[0])


@pytest.mark.parametrize("split", [1, 2, 5], ids=lambda n: f"first{n}")
def test_continues_from_state(split, device):
    x, w, b = make_inputs(2, 9, 24, 4, torch.float32, device)
    whole, whole_state = causal_conv1d_ref(x, w, b, True)
    _, state = causal_conv1d_ref(x[:, :split], w, b, True)
    out, final = causal_conv1d(x[:, split:], w, b, True, state)
    assert_close_to_ref(out, whole[:, split:])
    assert torch.equal(final, whole_state)


def test_x_sliced_from_in_proj_output(device):
    xz, _, _ = make_inputs(2, 11, 80, 4, torch.float16, device)
    _, w, b = make_inputs(2, 11, 40, 4, torch.float16, device, seed=1)
    x = xz[..., :40]
    assert_close_to_ref(causal_conv1d(x, w, b, True)[0], causal_conv1d_ref(x, w, b, True)[0])


@pytest.mark.parametrize(
    "case,match",
    [
        ("int8_x", "x must have dtype"),
        ("width_5", "1 <= W <= 4"),
        ("bias_shape", "bias must have shape"),
        ("strided_channels", "contiguous last dim"),
    ],
)
def test_rejects_bad_inputs(case, match, device):
    x, w, b = make_inputs(2, 7, 24, 4, torch.float32, device)
    args = dict(x=x, weight=w, bias=b, silu=True)
    if case == "int8_x":
        args["x"] = x.to(torch.int8)
    elif case == "width_5":
        args["weight"] = torch.zeros(24, 5, device=device)
    elif case == "bias_shape":
        args["bias"] = b[:10]
    elif case == "strided_channels":
        args["x"] = torch.zeros(2, 7, 48, device=device)[..., ::2]
    with pytest.raises(ValueError, match=match):
        causal_conv1d(**args)


REAL_SHAPES = {"130m-B1-L2048": (1, 2048, 1536), "2.8b-B2-L512": (2, 512, 5120)}


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("batch,seq_len,channels", REAL_SHAPES.values(), ids=REAL_SHAPES.keys())
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_real_shapes_on_gpu(batch, seq_len, channels, dtype):
    x, w, b = make_inputs(batch, seq_len, channels, 4, dtype, "cuda")
    assert_close_to_ref(causal_conv1d(x, w, b, True)[0], causal_conv1d_ref(x, w, b, True)[0])
