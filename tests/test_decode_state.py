"""State through the graph: every mode's step form (capture.with_state) prefills, returns each layer's conv and
SSM state, and continues from them one token at a time. Decoding reproduces the full-prefix forward (every
int8 and float tensor exactly; the logits to float32 rounding, see test_decode_equals_full_prefix), and the
modes' contracts hold at every decode step."""

import pytest
import torch

import mamba_qpass as qpass
from mamba_qpass.capture import with_state
from mamba_qpass.taps import with_tap_outputs
from models import random_mamba
from test_w8a8 import token_batches

MODES = ["fp", "qdq", "w8a8", "fp32_ssm", "float_sim", "fp32_conv"]
PROMPT, TOTAL = 7, 12


@pytest.fixture(scope="module")
def graphs():
    model = random_mamba(initializer_range=0.02)
    calibrated = qpass.calibrate(model, token_batches(97), progress=False)
    return {mode: qpass.capture(model) if mode == "fp" else qpass.apply_mode(calibrated, mode) for mode in MODES}


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 97, (3, TOTAL), generator=torch.Generator().manual_seed(5))


def _tapped_decode(gm, ids):
    """(full-prefix taps, prefill-then-decode taps concatenated over time, the states after each step, names)."""
    step, names = with_tap_outputs(with_state(gm))
    _, *full = step(ids)
    (_, states), *taps = step(ids[:, :PROMPT])
    pieces, all_states = [taps], [states]
    for t in range(PROMPT, ids.shape[1]):
        (_, states), *taps = step(ids[:, t : t + 1], *states)
        pieces.append(taps)
        all_states.append(states)
    decoded = [torch.cat([piece[k] for piece in pieces], dim=1) for k in range(len(names))]
    return dict(zip(names, full)), dict(zip(names, decoded)), all_states


@pytest.fixture(scope="module")
@torch.no_grad()
def decoded(graphs, ids):
    return {mode: _tapped_decode(gm, ids) for mode, gm in graphs.items()}


@pytest.mark.parametrize("mode", MODES)
def test_decode_equals_full_prefix(mode, decoded):
    """Prefill 7 tokens, then 5 one-token steps from the returned states. In w8a8, fp32_ssm and float_sim
    every tapped tensor (codes, the scan output, the residual stream) equals the 12-token forward's exactly:
    the integer ops are exact and the scan reference runs the same per-step recurrence either way. The
    logits agree to float32 rounding only, as do fp's and qdq's float GEMM outputs and fp32_conv's float
    conv: aten.linear over 1 row and over 12 rows, and F.conv1d over a state-extended window and over a
    zero-padded one, may sum in another order (the CPU kernels block by size)."""
    full, steps, _ = decoded[mode]
    exact = mode in {"w8a8", "fp32_ssm", "float_sim"}
    for name, expected in full.items():
        got = steps[name]
        assert got.shape == expected.shape, name
        if exact and name != "logits":
            assert torch.equal(got, expected), f"{mode} {name}: decode differs from the full prefix"
    logits = full["logits"]
    torch.testing.assert_close(steps["logits"], logits, rtol=1e-5, atol=1e-5 * logits.abs().max().item())
    assert torch.equal(logits.argmax(-1), steps["logits"].argmax(-1))


def test_decode_steps_keep_the_mode_contracts(decoded):
    """At every decode step float_sim reproduces w8a8's codes and logits bit for bit, and fp32_ssm equals w8a8
    exactly; so do their states (float_sim holds the conv codes in float32)."""
    _assert_contracts(decoded)


def _assert_contracts(decoded):
    _, w8a8, w8a8_states = decoded["w8a8"]
    for mode in ("float_sim", "fp32_ssm"):
        _, other, other_states = decoded[mode]
        for name, value in w8a8.items():
            assert torch.equal(other[name].float(), value.float()), f"{mode} {name}"
        for step, (mine, theirs) in enumerate(zip(other_states, w8a8_states)):
            for k, (a, b) in enumerate(zip(mine, theirs)):
                assert torch.equal(a.float(), b.float()), f"{mode} state {k} after step {step}"


@torch.no_grad()
def test_prefill_returns_every_layers_state(graphs, ids):
    """The conv state is the last width-1 conv inputs, as the mode's conv reads them (int8 codes in w8a8);
    the SSM state is float32 (batch, d_inner, d_state) and carries information (prefix-dependent)."""
    step, names = with_tap_outputs(with_state(graphs["w8a8"]))
    (_, states), *taps = step(ids)
    taps = dict(zip(names, taps))
    assert len(states) == 2 * 2
    for layer in range(2):
        conv, ssm = states[2 * layer], states[2 * layer + 1]
        assert conv.dtype == torch.int8 and torch.equal(conv, taps[f"layer{layer}.conv_in"][:, -3:])
        assert ssm.dtype == torch.float32 and ssm.shape == (3, 64, 8)
        assert not torch.equal(ssm[0], ssm[1])


@pytest.mark.parametrize("mode", MODES)
@torch.no_grad()
def test_step_form_without_states_is_the_graph(mode, graphs, ids):
    logits, _ = with_state(graphs[mode])(ids)
    assert torch.equal(logits, graphs[mode](ids))


def test_with_state_applies_once(graphs):
    with pytest.raises(ValueError, match="already takes and returns states"):
        with_state(with_state(graphs["w8a8"]))


@pytest.mark.gpu
@torch.no_grad()
def test_decode_steps_keep_the_mode_contracts_on_gpu():
    """On CUDA the decode steps run the step kernels (selective_state_update, int8_conv_state_update) and the
    float conv with a state: the contracts hold per step as on the CPU, and decoding stays within float32
    rounding of the full-prefix forward (the chunked prefill scan composes the recurrence in another order)."""
    model = random_mamba(initializer_range=0.02).cuda()
    calibrated = qpass.calibrate(model, [b.cuda() for b in token_batches(97)], progress=False)
    ids = torch.randint(0, 97, (3, TOTAL), generator=torch.Generator().manual_seed(5)).cuda()
    decoded = {mode: _tapped_decode(qpass.apply_mode(calibrated, mode), ids) for mode in ("w8a8", "fp32_ssm", "float_sim")}
    _assert_contracts(decoded)
    full, steps, _ = decoded["w8a8"]
    torch.testing.assert_close(steps["logits"], full["logits"], rtol=1e-3, atol=1e-3 * full["logits"].abs().max().item())
