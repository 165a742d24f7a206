"""int8_conv_state_update (Triton, one token from the conv state) against int8_conv_state_update_ref, which
is the int8 conv reference at length 1: identical codes and states; decode steps continue the conv of the
steps before, code for code."""

import pytest
import torch

from mamba_qpass.kernels.int8_causal_conv1d.reference import int8_causal_conv1d_ref
from mamba_qpass.kernels.int8_conv_state_update.reference import int8_conv_state_update_ref
from mamba_qpass.kernels.int8_conv_state_update.triton import int8_conv_state_update
from codes import assert_same_codes
from test_int8_causal_conv1d import make_inputs


def _state(batch, width, channels, seed=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-128, 128, (batch, width - 1, channels), dtype=torch.int8, generator=g)


SHAPES = {"B2-D24-W4": (2, 24, 4), "B3-D40-W2": (3, 40, 2), "B1-D300-W4": (1, 300, 4), "B2-D24-W1": (2, 24, 1)}


@pytest.mark.parametrize("batch,channels,width", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("silu", [True, False], ids=["silu", "linear"])
def test_matches_reference(batch, channels, width, silu, device):
    x, w, dequant, bias, inv = make_inputs(batch, 1, channels, width, device)
    state = _state(batch, width, channels).to(device)
    out, new_state = int8_conv_state_update(x, w, dequant, bias, inv, silu, state)
    ref, ref_state = int8_conv_state_update_ref(x, w, dequant, bias, inv, silu, state)
    assert_same_codes(out, ref)
    assert_same_codes(new_state, ref_state)
    assert out.float().std() > 5 or batch * channels < 64, "test data should spread over many codes"


def test_without_bias(device):
    x, w, dequant, _, inv = make_inputs(2, 1, 24, 4, device)
    state = _state(2, 4, 24).to(device)
    out, new_state = int8_conv_state_update(x, w, dequant, None, inv, True, state)
    ref, ref_state = int8_conv_state_update_ref(x, w, dequant, None, inv, True, state)
    assert_same_codes(out, ref)
    assert_same_codes(new_state, ref_state)


def test_steps_continue_the_prefill(device):
    """Prefill 3 steps, decode 6 one at a time from the state: the codes and the final state of one conv over
    all 9."""
    x, w, dequant, bias, inv = make_inputs(2, 9, 24, 4, device)
    whole, whole_state = int8_causal_conv1d_ref(x, w, dequant, bias, inv)
    _, state = int8_causal_conv1d_ref(x[:, :3], w, dequant, bias, inv)
    for t in range(3, 9):
        out, state = int8_conv_state_update(x[:, t : t + 1], w, dequant, bias, inv, True, state)
        assert_same_codes(out, whole[:, t : t + 1])
    assert_same_codes(state, whole_state)


def test_updates_in_place(device):
    """state_out=state: the steps write each new state over the old one, code for code as the prefill."""
    x, w, dequant, bias, inv = make_inputs(2, 9, 24, 4, device)
    whole, whole_state = int8_causal_conv1d_ref(x, w, dequant, bias, inv)
    _, state = int8_causal_conv1d_ref(x[:, :3], w, dequant, bias, inv)
    for t in range(3, 9):
        out, returned = int8_conv_state_update(x[:, t : t + 1], w, dequant, bias, inv, True, state, state_out=state)
        assert returned is state
        assert_same_codes(out, whole[:, t : t + 1])
    assert_same_codes(state, whole_state)
    with pytest.raises(ValueError, match="state_out must be an int8 tensor"):
        int8_conv_state_update(x[:, :1], w, dequant, bias, inv, True, state, state_out=state.float())


def test_rejects_more_than_one_token(device):
    x, w, dequant, bias, inv = make_inputs(2, 2, 24, 4, device)
    with pytest.raises(ValueError, match="takes one token"):
        int8_conv_state_update(x, w, dequant, bias, inv, True, _state(2, 4, 24).to(device))
    with pytest.raises(ValueError, match="initial_state must have shape"):
        int8_conv_state_update(x[:, :1], w, dequant, bias, inv, True, _state(2, 3, 24).to(device))


# the 2.8b config: d_inner 5120, conv width 4
@pytest.mark.gpu
@pytest.mark.parametrize("batch", [1, 16, 64])
def test_real_shapes_on_gpu(batch):
    x, w, dequant, bias, inv = make_inputs(batch, 1, 5120, 4, "cuda")
    x = torch.cat([x, x], dim=-1)[..., :5120]  # strided like the in_proj slice
    state = _state(batch, 4, 5120).cuda()
    out, new_state = int8_conv_state_update(x, w, dequant, bias, inv, True, state)
    ref, ref_state = int8_conv_state_update_ref(x, w, dequant, bias, inv, True, state)
    assert_same_codes(out, ref)
    assert_same_codes(new_state, ref_state)
