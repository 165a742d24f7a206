"""selective_state_update (Triton, one token from a state) against selective_state_update_ref, which is the
scan reference at length 1: float32 tolerances as in test_selective_scan; the int8 and the float variant
agree bit for bit; a decode of steps continues the scan of the steps before."""

import pytest
import torch

from mamba_qpass.kernels.selective_scan.reference import ScanInputScales, dequantize_scan_inputs, selective_scan_ref
from mamba_qpass.kernels.selective_state_update.reference import selective_state_update_ref
from mamba_qpass.kernels.selective_state_update.triton import selective_state_update
from test_selective_scan import assert_close_to_ref, make_inputs

SCALES = ScanInputScales(u=0.02, delta=0.01, B=0.03, C=0.03, z=0.025)
SEQUENCES = ("u", "delta", "B", "C", "z")


def _step_args(batch, channels, state, device, **kw):
    args = make_inputs(batch, 1, channels, state, device, **kw)
    args["state"] = args.pop("initial_state")
    return args


def _call(fn, args, **kw):
    return fn(
        args["u"], args["delta"], args["A"], args["B"], args["C"], args["D"], args["z"], args["delta_bias"], True,
        kw.pop("out_dtype", None), args["state"], **kw,
    )


SHAPES = {"B2-D24-N16": (2, 24, 16), "B3-D40-N12": (3, 40, 12), "B1-D300-N16": (1, 300, 16)}


@pytest.mark.parametrize("batch,channels,state", SHAPES.values(), ids=SHAPES.keys())
def test_float_inputs_match_reference(batch, channels, state, device):
    args = _step_args(batch, channels, state, device)
    out, new_state = _call(selective_state_update, args)
    ref, ref_state = _call(selective_state_update_ref, args)
    assert out.shape == (batch, 1, channels)
    assert_close_to_ref(out, ref, device)
    assert_close_to_ref(new_state, ref_state, device)


@pytest.mark.parametrize("variant", ["full", "no_z", "fp16_out"])
def test_int8_inputs_match_reference_and_the_float_variant_bit_for_bit(variant, device):
    args = _step_args(2, 40, 16, device, int8=True)
    if variant == "no_z":
        args["z"] = None
    out_dtype = torch.float16 if variant == "fp16_out" else None
    out, new_state = _call(selective_state_update, args, scales=SCALES, out_dtype=out_dtype)
    ref, ref_state = _call(selective_state_update_ref, args, scales=SCALES, out_dtype=out_dtype)
    assert_close_to_ref(out, ref, device)
    assert_close_to_ref(new_state, ref_state, device)
    values = dequantize_scan_inputs(SCALES, *(args[k] for k in SEQUENCES))
    float_out, float_state = _call(selective_state_update, args | dict(zip(SEQUENCES, values)), out_dtype=out.dtype)
    assert torch.equal(float_out, out) and torch.equal(float_state, new_state)


def test_updates_in_place_and_continues_a_scan(device):
    """Five decode steps, the state updated in place, give the outputs and the state of one scan over them."""
    args = make_inputs(2, 5, 24, 16, device)
    whole, whole_state = selective_scan_ref(**args)
    state = args["initial_state"].clone()
    for t in range(5):
        step = {k: v[:, t : t + 1] if k in SEQUENCES else v for k, v in args.items() if k != "initial_state"}
        out, returned = _call(selective_state_update, step | {"state": state}, state_out=state)
        assert returned is state
        assert_close_to_ref(out, whole[:, t : t + 1], device)
    assert_close_to_ref(state, whole_state, device)


def test_rejects_more_than_one_token(device):
    args = make_inputs(2, 3, 24, 16, device)
    args["state"] = args.pop("initial_state")
    with pytest.raises(ValueError, match="takes one token"):
        _call(selective_state_update, args)
    with pytest.raises(ValueError, match="takes one token"):
        _call(selective_state_update_ref, args)


# the 2.8b config: d_inner 5120, d_state 16
@pytest.mark.gpu
@pytest.mark.parametrize("batch", [1, 16, 64])
def test_real_shapes_on_gpu(batch):
    args = _step_args(batch, 5120, 16, "cuda", int8=True)
    out, new_state = _call(selective_state_update, args, scales=SCALES, out_dtype=torch.float16)
    ref, ref_state = _call(selective_state_update_ref, args, scales=SCALES, out_dtype=torch.float16)
    assert_close_to_ref(out, ref, "cuda")
    assert_close_to_ref(new_state, ref_state, "cuda")
    values = dequantize_scan_inputs(SCALES, *(args[k] for k in SEQUENCES))
    float_out, float_state = _call(selective_state_update, args | dict(zip(SEQUENCES, values)), out_dtype=torch.float16)
    assert torch.equal(float_out, out) and torch.equal(float_state, new_state)
