"""hadamard_quant (Triton, float64 row mixing and butterflies) against its reference: identical codes."""

import math

import pytest
import torch

from mamba_qpass.kernels.hadamard_quant.kronecker import kronecker_split
from mamba_qpass.kernels.hadamard_quant.reference import hadamard_quant_ref
from mamba_qpass.kernels.hadamard_quant import triton as hadamard_triton
from mamba_qpass.kernels.hadamard_quant.triton import hadamard_quant
from mamba_qpass.numerics import hadamard_matrix
from codes import assert_same_codes, f64

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


# --- Kronecker factors -------------------------------------------------------------------------------

@pytest.mark.parametrize("order", [1, 2, 12, 20, 24, 40, 64, 768, 1024, 1536])
def test_kronecker_factors_are_read_off_the_matrix(order):
    left, right = kronecker_split(order)
    assert left * right == order and right <= 256
    h = hadamard_matrix(order)
    assert torch.equal(h[::right, ::right], hadamard_matrix(left))
    assert torch.equal(h[:right, :right], hadamard_matrix(right))
    assert torch.equal(torch.kron(hadamard_matrix(left), hadamard_matrix(right)), h)


# --- hadamard_quant ----------------------------------------------------------------------------------

def make_y(rows, order, device, seed=0, std=3.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(rows, order, generator=g) * std).half().to(device)


ORDERS = [12, 20, 24, 40, 48, 64]



@pytest.mark.parametrize("order", ORDERS, ids=lambda d: f"D{d}")
@pytest.mark.parametrize("rows", [1, 63], ids=lambda m: f"M{m}")
def test_hadamard_quant_matches_reference(rows, order, device):
    y = make_y(rows, order, device)
    h = hadamard_matrix(order).to(device)
    inv = f64(127 / 12, device)
    out = hadamard_quant(y, h, inv)
    assert_same_codes(out, hadamard_quant_ref(y, h, inv))
    assert out.float().std() > 5, "test data should spread over many codes"


def test_hadamard_quant_sums_exactly(device):
    """Huge values that cancel beside subnormal ones: only an exact sum keeps the small part. The expected
    codes come from an int64 computation in units of 2**-24 (float16's quantum)."""
    order, rows = 64, 8
    g = torch.Generator().manual_seed(3)
    y = (torch.randint(-1000, 1001, (rows, order), generator=g) * 2.0**-24).half()  # float16 subnormals
    y[:, 0] = 65504.0
    y[:, 1] = 65504.0  # H rows with H[i, 0] = -H[i, 1] cancel these exactly
    h = hadamard_matrix(order)
    inv = f64(2.0**24 / 2000 * math.sqrt(order), "cpu")  # c = inv / sqrt(D) = 2**24 / 2000
    units = (y.double() * 2.0**24).long() @ h.long().T  # exact sums in units of 2**-24
    expected = torch.round((units.double() / 2000).clamp(-128, 127)).to(torch.int8)
    ref = hadamard_quant_ref(y, h, inv)
    assert torch.equal(ref, expected)
    cancelled = h[:, 0] != h[:, 1]
    assert (ref[:, cancelled].abs() < 127).all() and (ref[:, cancelled] != 0).any()
    out = hadamard_quant(y.to(device), h.to(device), inv.to(device))
    assert_same_codes(out, ref.to(device))


def test_hadamard_quant_with_split_power_of_two(device):
    """D = 1024 = 4 * 256: the left factor is itself a Sylvester matrix."""
    assert kronecker_split(1024) == (4, 256)
    y = make_y(3, 1024, device, std=0.5)
    h = hadamard_matrix(1024).to(device)
    inv = f64(127 / 12, device)
    assert_same_codes(hadamard_quant(y, h, inv), hadamard_quant_ref(y, h, inv))


def test_hadamard_quant_sliced_3d_input_and_float_matrix(device):
    y = make_y(14, 48, device).reshape(2, 7, 48)[..., :24]
    h = hadamard_matrix(24, dtype=torch.float32).to(device)
    inv = f64([127 / 12], device)
    out = hadamard_quant(y, h, inv)
    assert out.shape == (2, 7, 24)
    assert_same_codes(out, hadamard_quant_ref(y, h, inv))


def test_hadamard_quant_saturates(device):
    y = make_y(9, 20, device, std=100.0)
    h = hadamard_matrix(20).to(device)
    out = hadamard_quant(y, h, f64(1.0, device))
    assert_same_codes(out, hadamard_quant_ref(y, h, f64(1.0, device)))
    assert (out == 127).any() and (out == -128).any()


@pytest.mark.parametrize("order", [64, 5120, 8192], ids=lambda d: f"D{d}")
def test_hadamard_quant_exact_at_the_largest_magnitudes(order, device):
    """Rows of ±65504 (float16's largest) reach the biggest sums the kernel must carry: the rotated value
    near 2**53 in units of 2**-24. The scale keeps the result off saturation, so every bit shows in the
    codes."""
    g = torch.Generator().manual_seed(order)
    signs = torch.randint(0, 2, (3, order), generator=g) * 2 - 1
    y = torch.cat([torch.full((1, order), 65504.0), signs * 65504.0]).half().to(device)
    h = hadamard_matrix(order).to(device)
    inv = f64(100.0 / 65504.0, device)  # c * sum = 100 * sum / (65504 * sqrt(D)): at most 100 * sqrt(D)
    ref = hadamard_quant_ref(y, h, inv)
    assert ref[0, 0] == 127 and (ref.abs() < 127).any()
    assert_same_codes(hadamard_quant(y, h, inv), ref)


@pytest.mark.parametrize("order", [768, 1536, 2048, 5120], ids=lambda d: f"D{d}")
def test_hadamard_quant_with_the_gpu_tiling(order, device, monkeypatch):
    """The GPU picks other Kronecker splits and program sizes (e.g. 20 x 256 at D = 5120, 1 token and 4
    rows a program); run those tilings here too, on whatever device this is."""
    gpu_tiling = hadamard_triton._hadamard_tiling
    monkeypatch.setattr(
        hadamard_triton, "_hadamard_tiling", lambda rows, order, _: gpu_tiling(rows, order, torch.device("cuda"))
    )
    assert gpu_tiling(5, 5120, torch.device("cuda"))[:2] == (20, 256)
    y = make_y(5, order, device)
    h = hadamard_matrix(order).to(device)
    inv = f64(127 / 12, device)
    assert_same_codes(hadamard_quant(y, h, inv), hadamard_quant_ref(y, h, inv))


def test_hadamard_quant_with_a_given_tiling(device):
    """``tiling=`` (what sweep_tilings.py times) replaces the rule's: several rows of W and tokens a
    program, the last program past both edges."""
    y = (torch.randn(3, 1536, generator=torch.Generator().manual_seed(3)) * 4).half().to(device)
    h = hadamard_matrix(1536).to(device)
    inv = f64(127 / 16, device)
    out = hadamard_quant(y, h, inv, tiling=dict(ROWS=4, BLOCK_T=2))
    assert_same_codes(out, hadamard_quant_ref(y, h, inv))


def test_hadamard_quant_exact_at_every_power_of_two(device):
    """Values of one power of two each, from 2**-24 (one unit) to 2**15, so that every bit of y * 2**24
    is the only one set in some column; small enough sums that no code saturates."""
    order = 64
    exponents = torch.arange(-24, 16)
    g = torch.Generator().manual_seed(5)
    y = (2.0 ** exponents[torch.randint(0, len(exponents), (8, order), generator=g)]).half()
    y = y * (torch.randint(0, 2, (8, order), generator=g) * 2 - 1)
    h = hadamard_matrix(order)
    for scale in (2.0**24, 2.0**10, 1.0, 2.0**-10):  # puts a different bit at the rounding point
        inv = f64(scale * math.sqrt(order) / 64, "cpu")
        ref = hadamard_quant_ref(y, h, inv)
        assert_same_codes(hadamard_quant(y.to(device), h.to(device), inv.to(device)), ref.to(device))


@pytest.mark.parametrize(
    "case,match",
    [
        ("fp32_y", "y must have dtype"),
        ("unsupported_order_too_large", "exact only for D <= 8192"),
        ("matrix_shape", "hadamard must have shape"),
        ("bool_matrix", "hadamard must have dtype"),
        ("f32_scale", "out_inv_scale must have dtype"),
        ("strided_y", "contiguous last dim"),
    ],
)
def test_hadamard_quant_rejects_bad_inputs(case, match, device):
    y, h, inv = make_y(4, 12, device), hadamard_matrix(12).to(device), f64(1.0, device)
    args = dict(y=y, hadamard=h, out_inv_scale=inv)
    if case == "fp32_y":
        args["y"] = y.float()
    elif case == "unsupported_order_too_large":
        args["y"] = torch.zeros(1, 12 * 1024, dtype=torch.float16, device=device)
    elif case == "matrix_shape":
        args["hadamard"] = hadamard_matrix(24).to(device)
    elif case == "bool_matrix":
        args["hadamard"] = h > 0
    elif case == "f32_scale":
        args["out_inv_scale"] = inv.float()
    elif case == "strided_y":
        args["y"] = make_y(4, 24, device)[:, ::2]
    with pytest.raises(ValueError, match=match):
        hadamard_quant(**args)


# --- real shapes -------------------------------------------------------------------------------------

# (tokens, inner size): mamba-130m (1536 = 12 * 128) and mamba-2.8b (5120 = 20 * 256); prefill, and the
# decode tiling (fewer than DECODE_ROWS tokens).
REAL_SHAPES = {"130m-L2048": (2048, 1536), "2.8b-L512": (512, 5120), "2.8b-decode-B1": (1, 5120),
               "2.8b-decode-B64": (64, 5120), "130m-decode-B16": (16, 1536)}


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("rows,order", REAL_SHAPES.values(), ids=REAL_SHAPES.keys())
def test_real_shapes_on_gpu(rows, order):
    y = make_y(rows, order, "cuda")
    h = hadamard_matrix(order).cuda()
    hf = h.double()
    assert torch.equal(hf @ hf.T, order * torch.eye(order, dtype=torch.float64, device="cuda"))
    inv = f64(127 / 12, "cuda")
    assert_same_codes(hadamard_quant(y, h, inv), hadamard_quant_ref(y, h, inv))


