"""int8_linear (Triton) against int8_linear_ref: integer codes and float outputs must be bit-identical."""

import pytest
import torch

from mamba_qpass.kernels.int8_linear.reference import int8_linear_ref
from mamba_qpass.kernels.int8_linear import tiles, triton as linear
from mamba_qpass.kernels.int8_linear.triton import int8_linear

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def make_inputs(m, n, k, device, seed=0, scale=2e-3):
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(-128, 128, (m, k), dtype=torch.int8, generator=g)
    w = torch.randint(-128, 128, (n, k), dtype=torch.int8, generator=g)
    dequant = torch.rand(n, dtype=torch.float64, generator=g) * scale / k**0.5
    bias = torch.randn(n, dtype=torch.float64, generator=g)
    inv = 20.0 + 20.0 * torch.rand(n, dtype=torch.float64, generator=g)  # per-column inverse output scales
    return [t.to(device) for t in (a, w, dequant, bias, inv)]


def assert_same(out, ref):
    assert out.dtype == ref.dtype and out.shape == ref.shape
    assert torch.equal(out, ref), f"{(out.double() != ref.double()).sum().item()} of {out.numel()} differ"


SMALL_SHAPES = {"M1-N24-K40": (1, 24, 40), "M63-N24-K40": (63, 24, 40), "M7-N33-K17": (7, 33, 17),
                "M5-N3-K5": (5, 3, 5), "M40-N80-K136": (40, 80, 136)}


@pytest.mark.parametrize("m,n,k", SMALL_SHAPES.values(), ids=SMALL_SHAPES.keys())
@pytest.mark.parametrize("epilogue", ["codes", "codes+bias", "fp32", "fp32+bias"])
def test_matches_reference(m, n, k, epilogue, device):
    a, w, dequant, bias, inv = make_inputs(m, n, k, device)
    kwargs = {"bias": bias if "bias" in epilogue else None}
    if epilogue.startswith("codes"):
        kwargs["out_inv_scale"] = inv
    else:
        kwargs["out_dtype"] = torch.float32
    out = int8_linear(a, w, dequant, **kwargs)
    ref = int8_linear_ref(a, w, dequant, **kwargs)
    assert_same(out, ref)
    if epilogue.startswith("codes"):
        assert out.float().std() > 5, "test data should spread over many codes"


def test_3d_input_sliced_from_wider_tensor(device):
    """x is the first half of an (B, L, 2K) projection: row stride 2K, last stride 1."""
    a_wide, w, dequant, bias, inv = make_inputs(2 * 7, 24, 80, device)
    a = a_wide.reshape(2, 7, 80)[..., :40]
    w = w[:, :40].contiguous()
    out = int8_linear(a, w, dequant, bias, inv)
    assert out.shape == (2, 7, 24)
    assert_same(out, int8_linear_ref(a, w, dequant, bias, inv))


def test_sliced_weight_rows(device):
    """A weight that is a column slice of a wider one (row stride > K) is read in place."""
    a, w_wide, dequant, bias, inv = make_inputs(9, 24, 64, device)
    a = a[:, :40].contiguous()
    w = w_wide[:, :40]
    assert_same(int8_linear(a, w, dequant, bias, inv), int8_linear_ref(a, w, dequant, bias, inv))


def test_saturates_to_int8_range(device):
    a, w, dequant, bias, inv = make_inputs(63, 24, 40, device, scale=1.0)
    out = int8_linear(a, w, dequant, bias, inv)
    assert_same(out, int8_linear_ref(a, w, dequant, bias, inv))
    assert (out == 127).any() and (out == -128).any()


def test_ties_round_half_to_even(device):
    """acc * 1.0 * 0.5 is exactly x.5 for every odd acc: the code must be the even neighbour."""
    g = torch.Generator().manual_seed(1)
    a = torch.randint(-3, 4, (16, 24), dtype=torch.int8, generator=g).to(device)
    w = torch.randint(-3, 4, (20, 24), dtype=torch.int8, generator=g).to(device)
    ones = torch.ones(20, dtype=torch.float64, device=device)
    out = int8_linear(a, w, ones, None, ones * 0.5)
    acc = a.double() @ w.double().T
    assert (acc.remainder(2) == 1).any(), "test data should contain ties"
    assert torch.equal(out, torch.round(acc / 2).clamp(-128, 127).to(torch.int8))  # torch.round is half-even
    assert_same(out, int8_linear_ref(a, w, ones, None, ones * 0.5))


def test_empty_rows(device):
    a, w, dequant, bias, inv = make_inputs(0, 24, 40, device)
    assert int8_linear(a, w, dequant, bias, inv).shape == (0, 24)


@pytest.mark.parametrize(
    "case,match",
    [
        ("float_a", "a must have dtype"),
        ("k_mismatch", "a has K=40"),
        ("f32_scale", "dequant_scale must have dtype"),
        ("short_bias", "bias must have shape"),
        ("bf16_out", "out_dtype must be one of"),
        ("strided_last_dim", "contiguous last dim"),
        ("4d_input", "a must have 2 or 3 dims"),
    ],
)
def test_rejects_bad_inputs(case, match, device):
    a, w, dequant, bias, inv = make_inputs(8, 24, 40, device)
    kwargs = dict(a=a, weight=w, dequant_scale=dequant, bias=bias, out_inv_scale=inv)
    if case == "float_a":
        kwargs["a"] = a.float()
    elif case == "k_mismatch":
        kwargs["weight"] = w[:, :32]
    elif case == "f32_scale":
        kwargs["dequant_scale"] = dequant.float()
    elif case == "short_bias":
        kwargs["bias"] = bias[:10]
    elif case == "bf16_out":
        kwargs.update(out_inv_scale=None, out_dtype=torch.bfloat16)
    elif case == "strided_last_dim":
        kwargs["a"] = torch.zeros(8, 80, dtype=torch.int8, device=device)[:, ::2]
    elif case == "4d_input":
        kwargs["a"] = a.reshape(1, 2, 4, 40)
    with pytest.raises(ValueError, match=match):
        int8_linear(**kwargs)


def test_rejects_tensors_beyond_32_bit_offsets():
    """Shapes whose element offsets would wrap in the kernels' 32-bit arithmetic (a 262144-token prefill of
    the 2.8b config's in_proj) fail with a message instead; meta tensors hold no memory."""
    meta = torch.device("meta")
    a = torch.empty(32 * 8192, 2560, dtype=torch.int8, device=meta)
    w = torch.empty(10240, 2560, dtype=torch.int8, device=meta)
    scale = torch.empty(10240, dtype=torch.float64, device=meta)
    with pytest.raises(ValueError, match=r"the output spans 2684354560 elements .* run the batch in parts"):
        int8_linear(a, w, scale, out_inv_scale=scale)
    with pytest.raises(ValueError, match=r"a spans .* more than the 2\*\*31"):
        int8_linear(torch.empty(2**20, 2**12, dtype=torch.int8, device=meta),
                    torch.empty(10240, 2**12, dtype=torch.int8, device=meta), scale)


# Real projection shapes (M = B * L tokens, N, K) of mamba-130m (d_model 768, inner 1536, dt_rank 48,
# N 16) and mamba-2.8b (d_model 2560, inner 5120, dt_rank 160), plus single-token decode.
REAL_SHAPES = {
    "130m-in_proj": (2048, 2 * 1536, 768),
    "130m-x_proj": (2048, 48 + 2 * 16, 1536),
    "130m-dt_proj": (2048, 1536, 48),
    "130m-out_proj": (2048, 768, 1536),
    "2.8b-in_proj": (1024, 2 * 5120, 2560),
    "2.8b-x_proj": (1024, 160 + 2 * 16, 5120),
    "2.8b-dt_proj": (1024, 5120, 160),
    "2.8b-out_proj": (1024, 2560, 5120),
    "2.8b-decode-in_proj": (1, 2 * 5120, 2560),
    "2.8b-decode-x_proj": (1, 160 + 2 * 16, 5120),
    "2.8b-decode-dt_proj-B16": (16, 5120, 160),
    "2.8b-decode-out_proj-B16": (16, 2560, 5120),
}


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("shape", REAL_SHAPES.values(), ids=REAL_SHAPES.keys())
@pytest.mark.parametrize("epilogue", ["codes+bias", "fp32"])
def test_real_shapes_on_gpu(shape, epilogue):
    m, n, k = shape
    a, w, dequant, bias, inv = make_inputs(m, n, k, "cuda")
    if epilogue == "codes+bias":
        kwargs = dict(bias=bias, out_inv_scale=inv)
    else:
        kwargs = dict(out_dtype=torch.float32)
    assert_same(int8_linear(a, w, dequant, **kwargs), int8_linear_ref(a, w, dequant, **kwargs))


@pytest.mark.parametrize("residual_dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_residual_added_as_aten_add_does(residual_dtype, device):
    """out_proj with the block's residual add fused: equal bit for bit to the unfused linear followed by
    aten.add, for a 3D input and a float16 / bfloat16 / float32 residual."""
    a, w, dequant, bias, _ = make_inputs(2 * 9, 24, 40, device, scale=0.5)
    a = a.reshape(2, 9, 40)
    g = torch.Generator().manual_seed(4)
    residual = (torch.randn(2, 9, 24, generator=g) * 3).to(residual_dtype).to(device)
    out = int8_linear(a, w, dequant, bias, residual=residual)
    unfused = torch.add(residual, int8_linear_ref(a, w, dequant, bias))
    assert_same(out, unfused)
    assert_same(int8_linear_ref(a, w, dequant, bias, residual=residual), unfused)
    assert not torch.equal(out, int8_linear_ref(a, w, dequant, bias)), "the residual must change the output"


def test_residual_refused_with_codes_or_a_wrong_shape(device):
    a, w, dequant, bias, inv = make_inputs(5, 24, 40, device)
    with pytest.raises(ValueError, match="only to float32 output"):
        int8_linear(a, w, dequant, bias, inv, residual=torch.zeros(5, 24, device=device))
    with pytest.raises(ValueError, match=r"residual must have shape \(5, 24\)"):
        int8_linear(a, w, dequant, bias, residual=torch.zeros(5, 23, device=device))
    with pytest.raises(ValueError, match="only to float32 output"):
        int8_linear_ref(a, w, dequant, bias, inv, residual=torch.zeros(5, 24, device=device))


UNROLLED_ONE_ROW = [c for c in tiles.GPU_CONFIGS if c.kwargs["BLOCK_M"] == 1 and c.kwargs["SPLIT_K"] == 1]


@pytest.mark.parametrize("rows", [1, 5])
@pytest.mark.parametrize("config", UNROLLED_ONE_ROW, ids=lambda c: "1x{BLOCK_N}x{BLOCK_K}".format(**c.kwargs))
def test_unrolled_one_row_tiles_with_whole_k_steps(config, rows, device):
    """One-row tiles unroll their K steps; with K a multiple of the step the loads are unmasked (the test
    below covers the masked last step). With several rows (a small weight's decode batch), a program a row."""
    assert tiles.one_row_k_steps(dict(K=3 * config.kwargs["BLOCK_K"], **config.kwargs)) == 3
    a, w, dequant, bias, inv = make_inputs(rows, 2 * config.kwargs["BLOCK_N"] + 3, 3 * config.kwargs["BLOCK_K"], device)
    assert_same(linear.int8_linear(a, w, dequant, bias, inv, config=config), int8_linear_ref(a, w, dequant, bias, inv))


def _one_row_tiles(m, n, k):
    """The (BLOCK_N, BLOCK_K, SPLIT_K, warps) of the one-row tiles the autotuner would time at (m, n, k)."""
    return {(c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"], c.kwargs["SPLIT_K"], c.num_warps)
            for c in tiles.fitting_configs(tiles.GPU_CONFIGS, dict(M_BUCKET=m, N=n, K=k)) if c.kwargs["BLOCK_M"] == 1}


def _has_one_row_tiles(m, n, k):
    return bool(_one_row_tiles(m, n, k))


def test_one_row_tiles_are_candidates_for_one_row_and_for_a_few_rows_of_a_small_weight():
    """2.8b shapes: x_proj (192 x 5120) and dt_proj (5120 x 160) time one-row tiles up to 16 rows, in_proj
    (10240 x 2560) only at one row, and no weight beyond 16 rows."""
    assert _has_one_row_tiles(1, 10240, 2560) and not _has_one_row_tiles(2, 10240, 2560)
    for n, k in ((192, 5120), (5120, 160)):
        assert _has_one_row_tiles(1, n, k) and _has_one_row_tiles(16, n, k)
        assert not _has_one_row_tiles(32, n, k)


def test_unrolled_one_row_tiles_too_large_for_their_registers_are_not_timed():
    """The 1 x 16 x 128 GEMV tile, meant for dt_proj's K = 160, unrolls all of K: at the 2.8b x_proj's and
    out_proj's K = 5120 it would hold 1280 weight bytes a thread (compiled: all spilled), at in_proj's 2560
    640; at 130m's 1536, 384, the most a tile may hold. Its split-K form loops over K and stays."""
    short_k = (16, 128, 1, 2)
    assert short_k in _one_row_tiles(1, 5120, 160) and short_k in _one_row_tiles(1, 768, 1536)
    for n, k in ((192, 5120), (2560, 5120), (10240, 2560)):
        kept = _one_row_tiles(1, n, k)
        assert short_k not in kept and (4, 512, 1, 2) in kept and (64, 128, 2, 4) in kept
    big_k = 64 * tiles.UNROLLED_MAX_WEIGHT_BYTES_A_THREAD  # past the limit for every unrolled tile at one row
    assert all(split > 1 for _, _, split, _ in _one_row_tiles(1, 64, big_k))


@pytest.mark.parametrize("index", range(len(tiles.GPU_CONFIGS)))
@pytest.mark.parametrize("row_tiles", [0, 2], ids=["one_row", "two_tiles_and_a_row"])
def test_every_gpu_tile_is_exact(index, row_tiles, device):
    """The autotuner may pick any of GPU_CONFIGS for a shape, so each must be exact on its own: one row,
    or rows past two full row tiles; odd K (masked K steps; with split K, some splits empty) and N past two
    full column tiles; codes with bias and float32 with a residual, twice in a row."""
    config = tiles.GPU_CONFIGS[index]
    m, n, k = row_tiles * config.kwargs["BLOCK_M"] + 1, 2 * config.kwargs["BLOCK_N"] + 8, 2 * config.kwargs["BLOCK_K"] + 40
    a, w, dequant, bias, inv = make_inputs(m, n, k, device)
    residual = torch.randn(m, n, device=device)
    for kwargs in (dict(bias=bias, out_inv_scale=inv), dict(bias=bias, residual=residual)):
        for _ in range(2 if config.kwargs["SPLIT_K"] > 1 else 1):  # split K leaves its workspace zero for the next call
            out = linear.int8_linear(a, w, dequant, **kwargs, config=config)
            assert_same(out, int8_linear_ref(a, w, dequant, **kwargs))
