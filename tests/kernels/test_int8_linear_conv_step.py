"""int8_linear_conv_step (Triton: in_proj's GEMM with the conv's one-token update in its epilogue) against
int8_linear_conv_step_ref, and against the two kernels it replaces run one after the other: every code and
state identical, also when the state is updated in place."""

import pytest
import torch

from mamba_qpass.kernels.int8_conv_state_update.triton import int8_conv_state_update
from mamba_qpass.kernels.int8_linear import tiles
from mamba_qpass.kernels.int8_linear.triton import int8_linear
from mamba_qpass.kernels.int8_linear_conv_step.reference import int8_linear_conv_step_ref
from mamba_qpass.kernels.int8_linear_conv_step.triton import int8_linear_conv_step
from codes import assert_same_codes

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def make_inputs(batch, k, channels, width, device, seed=0, bias=True):
    """in_proj of 2 * channels outputs (x, then z) over K inputs, and the conv over x."""
    g = torch.Generator().manual_seed(seed)
    n = 2 * channels
    a = torch.randint(-128, 128, (batch, 1, k), dtype=torch.int8, generator=g)
    weight = torch.randint(-128, 128, (n, k), dtype=torch.int8, generator=g)
    dequant = torch.rand(n, dtype=torch.float64, generator=g) * 4e-3 / k**0.5
    inv = 20.0 + 20.0 * torch.rand(n, dtype=torch.float64, generator=g)
    conv_weight = torch.randint(-128, 128, (channels, width), dtype=torch.int8, generator=g)
    conv_dequant = (0.5 + torch.rand(channels, dtype=torch.float64, generator=g)) * 1e-4
    conv_bias = torch.randn(channels, dtype=torch.float64, generator=g) if bias else None
    conv_inv = torch.tensor(30.0, dtype=torch.float64)
    state = torch.randint(-128, 128, (batch, width - 1, channels), dtype=torch.int8, generator=g)
    tensors = (a, weight, dequant, inv, conv_weight, conv_dequant, conv_bias, conv_inv)
    return [t.to(device) if t is not None else None for t in tensors], state.to(device)


def _two_kernels(args, silu, state):
    a, weight, dequant, inv, conv_weight, conv_dequant, conv_bias, conv_inv = args
    codes = int8_linear(a, weight, dequant, None, inv)
    out, new_state = int8_conv_state_update(
        codes[..., : conv_weight.shape[0]], conv_weight, conv_dequant, conv_bias, conv_inv, silu, state
    )
    return codes, out, new_state


SHAPES = {"B1-K40-D24-W4": (1, 40, 24, 4), "B3-K64-D40-W4": (3, 64, 40, 4), "B2-K300-D72-W2": (2, 300, 72, 2),
          "B17-K32-D20-W3": (17, 32, 20, 3)}


@pytest.mark.parametrize("batch,k,channels,width", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("silu", [True, False], ids=["silu", "linear"])
def test_matches_reference_and_the_two_kernels(batch, k, channels, width, silu, device):
    args, state = make_inputs(batch, k, channels, width, device)
    fused = int8_linear_conv_step(*args, silu, state)
    ref = int8_linear_conv_step_ref(*args, silu, state)
    unfused = _two_kernels(args, silu, state)
    for got, want, other in zip(fused, ref, unfused):
        assert_same_codes(got, want)
        assert_same_codes(got, other)
    assert fused[1].float().std() > 5, "test data should spread over many codes"


def test_without_conv_bias_and_in_place(device):
    args, state = make_inputs(2, 64, 40, 4, device, bias=False)
    _, out_ref, state_ref = int8_linear_conv_step_ref(*args, True, state)
    buffer = state.clone()
    codes, out, returned = int8_linear_conv_step(*args, True, buffer, state_out=buffer)
    assert returned is buffer
    assert_same_codes(out, out_ref)
    assert_same_codes(buffer, state_ref)


def test_steps_continue_like_the_two_kernels(device):
    """Four decode steps in place: codes, conv outputs and states as the two kernels give them."""
    args, state = make_inputs(2, 64, 40, 4, device)
    fused_state, unfused_state = state.clone(), state.clone()
    g = torch.Generator().manual_seed(9)
    for _ in range(4):
        args[0] = torch.randint(-128, 128, args[0].shape, dtype=torch.int8, generator=g).to(device)
        fused = int8_linear_conv_step(*args, True, fused_state, state_out=fused_state)
        unfused = _two_kernels(args, True, unfused_state)
        unfused_state = unfused[2]
        for got, want in zip(fused, unfused):
            assert_same_codes(got, want)


def test_rejects_bad_inputs(device):
    args, state = make_inputs(2, 64, 40, 4, device)
    with pytest.raises(ValueError, match="takes one token"):
        int8_linear_conv_step(args[0].expand(2, 3, 64).contiguous(), *args[1:], True, state)
    with pytest.raises(ValueError, match="D <= N"):
        wide = torch.zeros(100, 4, dtype=torch.int8, device=device)
        int8_linear_conv_step(*args[:4], wide, *args[5:], True, state)
    with pytest.raises(ValueError, match="initial_state must have shape"):
        int8_linear_conv_step(*args, True, state[:, :2])


# the 2.8b config: in_proj 2560 -> 2 x 5120, conv width 4; the 130m config: 768 -> 2 x 1536
@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("k,channels", [(2560, 5120), (768, 1536)], ids=["2.8b", "130m"])
@pytest.mark.parametrize("batch", [1, 16])
def test_real_shapes_on_gpu(k, channels, batch):
    """The first call autotunes, replaying the kernel: updated in place, the state still moves one step."""
    args, state = make_inputs(batch, k, channels, 4, "cuda")
    ref_state = int8_linear_conv_step_ref(*args, True, state)[2]
    buffer = state.clone()
    int8_linear_conv_step(*args, True, buffer, state_out=buffer)
    assert_same_codes(buffer, ref_state)
    fused = int8_linear_conv_step(*args, True, state)
    for got, want in zip(fused, int8_linear_conv_step_ref(*args, True, state)):
        assert_same_codes(got, want)
    for got, want in zip(fused, _two_kernels(args, True, state)):
        assert_same_codes(got, want)


@pytest.mark.parametrize("index", range(len(tiles.DECODE_CONFIGS)))
def test_every_decode_tile_is_exact(index, device):
    """The autotuner may pick any decode candidate, split K too (the conv then runs in the tile's last
    program): each gives the reference's codes, conv outputs and states, in place, twice in a row (split K
    leaves its workspace zero for the next call). K has a masked last step and N is not a multiple of the
    tile."""
    config = tiles.DECODE_CONFIGS[index]
    k = 2 * config.kwargs["BLOCK_K"] * config.kwargs["SPLIT_K"] + 40
    args, state = make_inputs(3, k, 40, 4, device)
    for _ in range(2):
        want = int8_linear_conv_step_ref(*args, True, state)
        got = int8_linear_conv_step(*args, True, state, state_out=state, config=config)
        for g, w in zip(got, want):
            assert_same_codes(g, w)
