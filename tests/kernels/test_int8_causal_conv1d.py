"""int8_causal_conv1d (Triton) against int8_causal_conv1d_ref: the int8 codes must be identical."""

import pytest
import torch

from mamba_qpass.kernels.int8_causal_conv1d import triton as int8_conv
from mamba_qpass.kernels.int8_causal_conv1d.reference import int8_causal_conv1d_ref, silu_f64
from mamba_qpass.kernels.int8_causal_conv1d.triton import int8_causal_conv1d
from codes import assert_same_codes

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def make_inputs(batch, seq_len, channels, width, device, seed=0, scale=1e-4, inv=30.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-128, 128, (batch, seq_len, channels), dtype=torch.int8, generator=g)
    w = torch.randint(-128, 128, (channels, width), dtype=torch.int8, generator=g)
    dequant = (0.5 + torch.rand(channels, dtype=torch.float64, generator=g)) * scale
    bias = torch.randn(channels, dtype=torch.float64, generator=g)
    out_inv = torch.tensor(inv, dtype=torch.float64)
    return [t.to(device) for t in (x, w, dequant, bias, out_inv)]


SHAPES = {"B2-L7-D24": (2, 7, 24), "B2-L63-D40": (2, 63, 40), "B1-L1-D24": (1, 1, 24), "B1-L130-D300": (1, 130, 300)}


@pytest.mark.parametrize("batch,seq_len,channels", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("silu", [True, False], ids=["silu", "linear"])
def test_matches_reference(batch, seq_len, channels, silu, device):
    x, w, dequant, bias, inv = make_inputs(batch, seq_len, channels, 4, device)
    out, final = int8_causal_conv1d(x, w, dequant, bias, inv, silu)
    expected, expected_final = int8_causal_conv1d_ref(x, w, dequant, bias, inv, silu)
    assert_same_codes(out, expected)
    assert out.float().std() > 5, "test data should spread over many codes"
    # the kernel stores the last W-1 inputs itself (from W-1 steps on), contiguous
    assert_same_codes(final, expected_final)
    assert final.is_contiguous()


def test_a_given_tiling_replaces_the_rule(device):
    """``tiling=`` (what sweep_tilings.py times) is the launch's: a BLOCK_L above MAX_BLOCK_L is refused,
    which prefill_tiling never returns."""
    x, w, dequant, bias, inv = make_inputs(2, 37, 40, 4, device)
    out, final = int8_causal_conv1d(x, w, dequant, bias, inv, True, tiling=dict(BLOCK_L=8, BLOCK_D=16))
    expected, expected_final = int8_causal_conv1d_ref(x, w, dequant, bias, inv, True)
    assert_same_codes(out, expected)
    assert_same_codes(final, expected_final)
    with pytest.raises(ValueError, match="BLOCK_L must be at most"):
        int8_causal_conv1d(x, w, dequant, bias, inv, True, tiling=dict(BLOCK_L=2 * int8_conv.MAX_BLOCK_L, BLOCK_D=16))


@pytest.mark.parametrize("width", [1, 2, 3])
def test_narrower_kernels_without_bias(width, device):
    x, w, dequant, _, inv = make_inputs(2, 9, 24, width, device)
    assert_same_codes(int8_causal_conv1d(x, w, dequant, None, inv)[0], int8_causal_conv1d_ref(x, w, dequant, None, inv)[0])


@pytest.mark.parametrize("split", [1, 2, 5], ids=lambda n: f"first{n}")
@pytest.mark.parametrize("width", [2, 4])
def test_continues_from_state(split, width, device):
    """From the reference's final state of the first steps, the kernel gives the codes and the state of
    the whole sequence, code for code (the window before t = 0 read from the state, shorter firsts too)."""
    x, w, dequant, bias, inv = make_inputs(2, 9, 24, width, device)
    whole, whole_state = int8_causal_conv1d_ref(x, w, dequant, bias, inv)
    _, state = int8_causal_conv1d_ref(x[:, :split], w, dequant, bias, inv)
    out, final = int8_causal_conv1d(x[:, split:], w, dequant, bias, inv, True, state)
    assert_same_codes(out, whole[:, split:])
    assert_same_codes(final, whole_state)
    assert_same_codes(whole_state, x[:, 9 - (width - 1) :])
    assert_same_codes(out, int8_causal_conv1d_ref(x[:, split:], w, dequant, bias, inv, True, state)[0])


def test_causal_zero_history():
    """Independent check of the reference: output at t only sees x[<= t], zeros before 0."""
    x = torch.zeros(1, 5, 1, dtype=torch.int8)
    x[0, 2, 0] = 1
    w = torch.tensor([[1, 2, 3, 4]], dtype=torch.int8)  # w[k] multiplies x[t - 3 + k]
    one = torch.ones(1, dtype=torch.float64)
    out = int8_causal_conv1d_ref(x, w, one, None, torch.tensor(1.0, dtype=torch.float64), silu=False)[0]
    assert out[0, :, 0].tolist() == [0, 0, 4, 3, 2]


def test_x_sliced_from_in_proj_output(device):
    """x is the first half of the (B, L, 2D) in_proj output: time stride 2D, last stride 1."""
    xz, _, _, _, _ = make_inputs(2, 11, 80, 4, device)
    x = xz[..., :40]
    _, w, dequant, bias, inv = make_inputs(2, 11, 40, 4, device, seed=1)
    out, final = int8_causal_conv1d(x, w, dequant, bias, inv)
    expected, expected_final = int8_causal_conv1d_ref(x, w, dequant, bias, inv)
    assert_same_codes(out, expected)
    assert_same_codes(final, expected_final)
    assert final.is_contiguous()


def test_saturates_to_int8_range(device):
    x, w, dequant, bias, inv = make_inputs(2, 17, 24, 4, device, scale=1e-2)
    out = int8_causal_conv1d(x, w, dequant, bias, inv, silu=False)[0]
    assert_same_codes(out, int8_causal_conv1d_ref(x, w, dequant, bias, inv, silu=False)[0])
    assert (out == 127).any() and (out == -128).any()


def test_ties_round_half_to_even(device):
    """acc * 1.0 * 0.5 is exactly x.5 for odd acc: codes are the even neighbour."""
    x, w, _, _, _ = make_inputs(2, 15, 24, 4, device)
    x, w = x.remainder(4).to(torch.int8), w.remainder(3).to(torch.int8)  # small, so nothing saturates
    ones = torch.ones(24, dtype=torch.float64, device=device)
    half = torch.tensor([0.5], dtype=torch.float64, device=device)
    out = int8_causal_conv1d(x, w, ones, None, half, silu=False)[0]
    acc = int8_causal_conv1d_ref(x, w, ones, None, torch.ones((), dtype=torch.float64, device=device), silu=False)[0]
    assert (acc.remainder(2) == 1).any(), "test data should contain ties"
    assert torch.equal(out, torch.round(acc.double() / 2).to(torch.int8))  # torch.round is half-even
    assert_same_codes(out, int8_causal_conv1d_ref(x, w, ones, None, half, silu=False)[0])


SILU_ARGMIN = -1.27846454276107  # SiLU is least there, -0.27846


def silu_inverse(y: torch.Tensor) -> torch.Tensor:
    """The v >= SILU_ARGMIN with SiLU(v) = y (float64 bisection; SiLU increases there)."""
    lo = torch.full_like(y, SILU_ARGMIN)
    hi = y.clamp(min=0.0) + 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        below = silu_f64(mid) < y
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return (lo + hi) / 2


def near_boundary_inputs(silu, device, seq_len=40, channels=48, inv=20.0):
    """x in {0, 1} and weight (1, 2, 4, 8) make acc = 0..15 evenly; per channel, dequant_scale and bias
    put the float64 value t that is rounded, for acc = 5 and acc = 12, within 1e-7 .. 1e-4 (either
    side) of half-integers: about an eighth of all values, each where float32 alone may round wrong."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 2, (1, seq_len, channels), dtype=torch.int8, generator=g)
    w = torch.tensor([1, 2, 4, 8], dtype=torch.int8).repeat(channels, 1)
    low = -5 if silu else -100  # SiLU's t reaches down to -0.27846 * inv = -5.57
    first = torch.randint(low, 60, (channels,), generator=g)
    halves = torch.stack([first, first + torch.randint(1, 60, (channels,), generator=g)]) + 0.5
    offsets = 10 ** (-7 + 3 * torch.rand(2, channels, generator=g, dtype=torch.float64))
    signs = torch.randint(0, 2, (2, channels), generator=g) * 2 - 1
    y = (halves + signs * offsets) / inv
    v = silu_inverse(y) if silu else y
    dequant = (v[1] - v[0]) / (12 - 5)
    bias = v[0] - 5 * dequant
    return [t.to(device) for t in (x, w, dequant, bias, torch.tensor(inv, dtype=torch.float64))]


def window_sums(x, w):
    """acc: the exact window sums (B, L, D), zeros before t = 0."""
    padded = torch.nn.functional.pad(x.double(), (0, 0, w.shape[1] - 1, 0))
    return sum(w[:, k].double() * padded[:, k : k + x.shape[1]] for k in range(w.shape[1]))


def distance_to_half_integers(x, w, dequant, bias, inv, silu):
    """|t - nearest half-integer| for the float64 value t that the reference rounds."""
    v = window_sums(x, w) * dequant + bias
    t = (silu_f64(v) if silu else v) * inv
    return (t - t.floor() - 0.5).abs()


# (BLOCK_L, BLOCK_D): the interpreter's (one program a sequence of up to 64 steps), the GPU's for one
# sequence and for many, and 16 steps of 32 channels, the last programs past L and D.
TILINGS = {"default": None, "gpu": int8_conv.prefill_tiling(1, 2048, 5120, torch.device("cuda")),
           "gpu_batched": int8_conv.prefill_tiling(16, 2048, 5120, torch.device("cuda")),
           "rows": dict(BLOCK_L=16, BLOCK_D=32)}


def use_tiling(monkeypatch, tiling, **flags):
    default = int8_conv.prefill_tiling
    monkeypatch.setattr(int8_conv, "prefill_tiling", lambda *args: {**(tiling or default(*args)), **flags})


@pytest.mark.parametrize("tiling", TILINGS.values(), ids=TILINGS.keys())
@pytest.mark.parametrize("silu", [True, False], ids=["silu", "linear"])
def test_near_rounding_boundaries(silu, tiling, device, monkeypatch):
    """Values within 1e-7 .. 1e-4 of a rounding boundary, where the float32 epilogue cannot tell the
    code: the float64 fallback gives the reference's codes for all of them."""
    use_tiling(monkeypatch, tiling)
    inputs = near_boundary_inputs(silu, device)
    distance = distance_to_half_integers(*[t.cpu() for t in inputs], silu)
    assert ((distance > 5e-8) & (distance < 2e-4)).sum() > 150, "test data should lie near rounding boundaries"
    assert_same_codes(int8_causal_conv1d(*inputs, silu)[0], int8_causal_conv1d_ref(*inputs, silu)[0])


@pytest.mark.parametrize("total", [37, 38, 40], ids=lambda n: f"L{n - 5}")
@pytest.mark.parametrize("width", [2, 3, 4])
def test_programs_from_state(width, total, device, monkeypatch):
    """Several programs along time, the first reading the state, the last past L and D; narrower kernels.
    The last program stores the final state, from before its own first step where L mod 16 is 1 or 2."""
    use_tiling(monkeypatch, TILINGS["rows"])
    x, w, dequant, bias, inv = make_inputs(2, total, 40, width, device)
    _, state = int8_causal_conv1d_ref(x[:, :5], w, dequant, bias, inv)
    out, final = int8_causal_conv1d(x[:, 5:], w, dequant, bias, inv, True, state)
    expected, expected_final = int8_causal_conv1d_ref(x[:, 5:], w, dequant, bias, inv, True, state)
    assert_same_codes(out, expected)
    assert_same_codes(final, expected_final)


@pytest.mark.parametrize("silu", [True, False], ids=["silu", "linear"])
def test_float32_alone_misrounds_near_boundaries(silu, device, monkeypatch):
    """Without the float64 fallback (FIX_NEAR=False) the same data gets some codes wrong, by one and only
    near a boundary: so the fallback runs and is what makes test_near_rounding_boundaries pass."""
    inputs = near_boundary_inputs(silu, device)
    ref = int8_causal_conv1d_ref(*inputs, silu)[0]
    use_tiling(monkeypatch, None, FIX_NEAR=False)
    wrong = int8_causal_conv1d(*inputs, silu)[0] != ref
    assert wrong.any(), "float32 alone should misround some of these values"
    distance = distance_to_half_integers(*[t.cpu() for t in inputs], silu).to(device)
    assert (distance[wrong] < 1e-4).all()


# Scale and bias per group of 4 channels: v past float32 exp's range on both sides, |v| ~ 100, v ~ 1e-8,
# v subnormal in float32, v = 0, a bias and a scaled acc beyond float32's range, realistic values.
EXTREME_SCALES = (1e-2, 1e-3, 1e-12, 1e-40, 0.0, 1e-4, 1e36, 1e-4)
EXTREME_BIASES = (0.0, 100.0, 0.0, 1e-42, 0.0, 1e39, 0.0, 1.0)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the interpreter's numpy on float32 overflows
@pytest.mark.parametrize("silu", [True, False], ids=["silu", "linear"])
def test_extreme_values(silu, device):
    """exp(-v) overflowing float32 (v < -88.7) and underflowing, v near 0 and subnormal, inputs beyond
    float32's range, codes saturating at -128 and 127: all as the reference."""
    g = torch.Generator().manual_seed(0)
    x, w, _, _, _ = make_inputs(1, 24, 32, 4, "cpu")
    signs = torch.randint(0, 2, (32,), generator=g, dtype=torch.float64) * 2 - 1
    dequant = torch.tensor(EXTREME_SCALES, dtype=torch.float64).repeat_interleave(4)
    bias = torch.tensor(EXTREME_BIASES, dtype=torch.float64).repeat_interleave(4) * signs
    inv = torch.tensor(1000.0 if silu else 20.0, dtype=torch.float64)  # SiLU reaches -128 only for inv > 460
    v = window_sums(x, w) * dequant + bias
    assert (v < -88.8).any() and (v > 88.8).any() and ((v != 0) & (v.abs() < 1e-6)).any()
    inputs = [t.to(device) for t in (x, w, dequant, bias, inv)]
    out = int8_causal_conv1d(*inputs, silu)[0]
    assert_same_codes(out, int8_causal_conv1d_ref(*inputs, silu)[0])
    assert (out == 127).any() and (out == -128).any() and (out == 0).any()


@pytest.mark.parametrize(
    "case,match",
    [
        ("float_x", "x must have dtype"),
        ("width_5", "1 <= W <= 4"),
        ("channel_mismatch", "weight must have shape"),
        ("vector_out_scale", "out_inv_scale must hold one value"),
        ("f32_dequant", "dequant_scale must have dtype"),
        ("strided_channels", "contiguous last dim"),
        ("2d_x", "x must have 3 dims"),
    ],
)
def test_rejects_bad_inputs(case, match, device):
    x, w, dequant, bias, inv = make_inputs(2, 7, 24, 4, device)
    args = dict(x=x, weight=w, dequant_scale=dequant, bias=bias, out_inv_scale=inv)
    if case == "float_x":
        args["x"] = x.float()
    elif case == "width_5":
        args["weight"] = torch.zeros(24, 5, dtype=torch.int8, device=device)
    elif case == "channel_mismatch":
        args["weight"] = w[:20]
    elif case == "vector_out_scale":
        args["out_inv_scale"] = inv.repeat(2)
    elif case == "f32_dequant":
        args["dequant_scale"] = dequant.float()
    elif case == "strided_channels":
        args["x"] = torch.zeros(2, 7, 48, dtype=torch.int8, device=device)[..., ::2]
    elif case == "2d_x":
        args["x"] = x[0]
    with pytest.raises(ValueError, match=match):
        int8_causal_conv1d(**args)


# (B, L, D): mamba-130m (inner 1536) and mamba-2.8b (inner 5120).
REAL_SHAPES = {"130m-B1-L2048": (1, 2048, 1536), "130m-B2-L512": (2, 512, 1536), "2.8b-B1-L2048": (1, 2048, 5120)}


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("batch,seq_len,channels", REAL_SHAPES.values(), ids=REAL_SHAPES.keys())
def test_real_shapes_on_gpu(batch, seq_len, channels):
    x, w, dequant, bias, inv = make_inputs(batch, seq_len, channels, 4, "cuda")
    x = torch.cat([x, x], dim=-1)[..., :channels]  # strided like the in_proj slice
    assert_same_codes(int8_causal_conv1d(x, w, dequant, bias, inv)[0], int8_causal_conv1d_ref(x, w, dequant, bias, inv)[0])
