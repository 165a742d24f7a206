"""selective_state_update (Triton, one token from a state) against selective_state_update_ref, which is the
scan reference at length 1: float32 tolerances as in test_selective_scan; the int8 and the float variant
agree bit for bit; a decode of steps continues the scan of the steps before."""

import pytest
import torch

from mamba_qpass.kernels.selective_scan.reference import ScanInputScales, dequantize_scan_inputs, selective_scan_ref
from mamba_qpass.kernels.int8_linear.triton import int8_linear
from mamba_qpass.kernels.selective_state_update.reference import selective_state_update_dt_proj_ref, selective_state_update_ref
from mamba_qpass.kernels.selective_scan.triton import selective_scan
from mamba_qpass.kernels.selective_state_update.triton import DtProjection, selective_state_update
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


@pytest.mark.gpu
def test_decode_steps_continue_the_triton_scan_bit_for_bit():
    """Decoding from the Triton scan's state of a prefix gives the state the Triton scan of the whole
    sequence reaches, bit for bit: both step each state with ``advance_state`` on the same decay and drive
    (a sequence this short is not split into segments). On the GPU every element goes through the same
    instructions whatever the tile; in the interpreter exp and log are numpy's, which may take different
    code paths for the scan's and the step's arrays, so bit-equality there would hold only by luck
    (``test_updates_in_place_and_continues_a_scan`` checks decode steps against one scan there, to float
    tolerance)."""
    device = "cuda"
    args = make_inputs(2, 9, 24, 16, device, int8=True)
    _, whole_state = selective_scan(**args, scales=SCALES)
    prefix = {k: v[:, :4] if k in SEQUENCES else v for k, v in args.items()}
    _, state = selective_scan(**prefix, scales=SCALES)
    for t in range(4, 9):
        step = {k: v[:, t : t + 1] if k in SEQUENCES else v for k, v in args.items() if k != "initial_state"}
        _, state = _call(selective_state_update, step | {"state": state}, scales=SCALES)
    assert torch.equal(state, whole_state)


def assert_same_state_whatever_the_tile(state, expected, device):
    """On the GPU every state element takes the same instructions whatever the tile, so bit for bit; in the
    interpreter exp is numpy's, whose code path may depend on the array's shape (see the test above)."""
    if device == "cuda":
        assert torch.equal(state, expected)
    else:
        assert_close_to_ref(state, expected, device)


def test_a_given_tiling_replaces_the_rule(device):
    """``tiling=`` (what sweep_tilings.py times): the new state the rule's (bit for bit on the GPU), the
    output within float32 rounding of it (the sum over the state may be ordered differently)."""
    args = _step_args(2, 40, 16, device, int8=True)
    out, state = _call(selective_state_update, args, scales=SCALES)
    out16, state16 = _call(selective_state_update, args, scales=SCALES, tiling=dict(BLOCK_D=16))
    assert_same_state_whatever_the_tile(state16, state, device)
    assert_close_to_ref(out16, out, device)


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


def _dt_projection(batch, channels, rank, device, seed=7):
    """dt_proj's int8 input as a column slice of a wider x_proj output (as in the graph), and its weight,
    scaled so the delta codes spread over the int8 range and some saturate."""
    g = torch.Generator().manual_seed(seed)
    x_proj_out = torch.randint(-128, 128, (batch, 1, rank + 32), dtype=torch.int8, generator=g)
    weight = torch.randint(-128, 128, (channels, rank), dtype=torch.int8, generator=g)
    dequant = torch.rand(channels, dtype=torch.float64, generator=g) * 8e-4 / rank**0.5
    inv = 20.0 + 40.0 * torch.rand(channels, dtype=torch.float64, generator=g)
    projection = DtProjection(weight.to(device), dequant.to(device), inv.to(device))
    return x_proj_out.to(device)[..., :rank], projection


def _fused_and_unfused(batch, channels, rank, device, tiling=None):
    args = _step_args(batch, channels, 16, device, int8=True)
    low_rank, projection = _dt_projection(batch, channels, rank, device)
    fused = _call(selective_state_update, args | {"delta": low_rank}, scales=SCALES, dt_proj=projection, tiling=tiling)
    delta = int8_linear(low_rank, projection.weight, projection.dequant_scale, None, projection.out_inv_scale)
    unfused = _call(selective_state_update, args | {"delta": delta}, scales=SCALES, tiling=tiling)
    ref = selective_state_update_dt_proj_ref(
        args["u"], low_rank, projection.weight, projection.dequant_scale, projection.out_inv_scale, args["A"],
        args["B"], args["C"], args["D"], args["z"], args["delta_bias"], True, None, args["state"], SCALES,
    )
    return fused, unfused, ref, delta


@pytest.mark.parametrize("batch,channels,rank", [(2, 40, 5), (1, 300, 70), (3, 24, 64)], ids=["R5", "R70", "R64"])
def test_fused_dt_proj_equals_the_two_kernels(batch, channels, rank, device):
    """dt_proj computed in the step kernel: out and state bit for bit those of the int8_linear kernel
    followed by the unfused step kernel, and within float32 rounding of the composed references."""
    (out, state), (out2, state2), (ref, ref_state), delta = _fused_and_unfused(batch, channels, rank, device)
    assert torch.equal(out, out2) and torch.equal(state, state2)
    assert_close_to_ref(out, ref, device)
    assert_close_to_ref(state, ref_state, device)
    assert delta.float().std() > 20 and (delta.abs() >= 127).any(), "test data should spread over the codes"


@pytest.mark.parametrize("batch,rows", [(5, 2), (3, 16), (16, 16), (4, 4)], ids=["B5-R2", "B3-R16", "B16-R16", "B4-R4"])
def test_fused_dt_proj_with_several_rows_a_program(batch, rows, device):
    """ROWS batch rows a program, their dt_proj sums in the columns of one dot: out and state bit for bit
    the two kernels' at the same tiling, also where the batch does not fill the last program."""
    block_d = 16 if device == "cuda" else 32
    (out, state), (out2, state2), _, _ = _fused_and_unfused(batch, 40, 70, device, tiling=dict(BLOCK_D=block_d, ROWS=rows))
    assert torch.equal(out, out2) and torch.equal(state, state2)


def test_several_rows_a_program_without_dt_proj(device):
    args = _step_args(5, 40, 16, device, int8=True)
    out, state = _call(selective_state_update, args, scales=SCALES)
    out2, state2 = _call(selective_state_update, args, scales=SCALES, tiling=dict(BLOCK_D=32, ROWS=2))
    assert_same_state_whatever_the_tile(state2, state, device)
    assert_close_to_ref(out2, out, device)
    with pytest.raises(ValueError, match="ROWS must be a power of two"):
        _call(selective_state_update, args, scales=SCALES, tiling=dict(BLOCK_D=32, ROWS=3))


def test_fused_dt_proj_rejects_bad_inputs(device):
    args = _step_args(2, 40, 16, device, int8=True)
    low_rank, projection = _dt_projection(2, 40, 5, device)
    with pytest.raises(ValueError, match="only into the int8 state update"):
        _call(selective_state_update, args | {"delta": low_rank}, dt_proj=projection)
    with pytest.raises(ValueError, match=r"dt_proj's int8 input\] must have shape \(2, 1, 5\)"):
        _call(selective_state_update, args | {"delta": low_rank[..., :4]}, scales=SCALES, dt_proj=projection)
    with pytest.raises(ValueError, match="ROWS must be a power of two, at most 16 with dt_proj"):
        _call(selective_state_update, args | {"delta": low_rank}, scales=SCALES, dt_proj=projection,
              tiling=dict(BLOCK_D=32, ROWS=17))
    with pytest.raises(ValueError, match="dt_proj weight must have 40 rows"):
        short = DtProjection(projection.weight[:39], projection.dequant_scale, projection.out_inv_scale)
        _call(selective_state_update, args | {"delta": low_rank}, scales=SCALES, dt_proj=short)


@pytest.mark.gpu
@pytest.mark.parametrize("batch", [1, 16, 64])
def test_fused_dt_proj_real_shapes_on_gpu(batch):
    """The 2.8b config: d_inner 5120, dt_rank 160."""
    (out, state), (out2, state2), (ref, ref_state), _ = _fused_and_unfused(batch, 5120, 160, "cuda")
    assert torch.equal(out, out2) and torch.equal(state, state2)
    assert_close_to_ref(out, ref, "cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("rows,warps", [(4, 1), (16, 8)])
def test_fused_dt_proj_several_rows_a_program_real_shapes_on_gpu(rows, warps):
    """The 2.8b config at 16 batch rows, ROWS of them a program (candidates of sweep_tilings.py)."""
    tiling = dict(BLOCK_D=16, ROWS=rows, num_warps=warps)
    (out, state), (out2, state2), _, _ = _fused_and_unfused(16, 5120, 160, "cuda", tiling=tiling)
    assert torch.equal(out, out2) and torch.equal(state, state2)


@pytest.mark.parametrize("tiling", [None, dict(BLOCK_D=16, ROWS=2)], ids=["rule", "two-rows"])
def test_a_float16_state_is_computed_on_in_float32(tiling, device):
    """A state kept in float16: the step is the float32 step from that state's values. The new state is
    that step's rounded to float16 (in place too), bit for bit; the output agrees to float32 rounding, not
    bit for bit, since on the GPU the C reduction's order follows the state load's vector width, which is
    wider for float16. bfloat16 is refused."""
    dtype = torch.float16
    args = _step_args(2, 40, 16, device, int8=True)
    low = args["state"].to(dtype)
    out, new_state = _call(selective_state_update, args | {"state": low}, scales=SCALES, tiling=tiling)
    out32, state32 = _call(selective_state_update, args | {"state": low.float()}, scales=SCALES, tiling=tiling)
    assert new_state.dtype == dtype
    assert torch.equal(new_state, state32.to(dtype))
    assert_close_to_ref(out, out32, device)
    buffer = low.clone()
    _, returned = _call(selective_state_update, args | {"state": buffer}, scales=SCALES, state_out=buffer, tiling=tiling)
    assert returned is buffer and torch.equal(buffer, new_state)
    with pytest.raises(ValueError, match="state_out must be a tensor of state's shape and dtype"):
        _call(selective_state_update, args | {"state": low}, scales=SCALES, state_out=low.float())
    with pytest.raises(ValueError, match="state must have dtype"):
        _call(selective_state_update, args | {"state": low.bfloat16()}, scales=SCALES)
