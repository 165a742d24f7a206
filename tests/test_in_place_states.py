"""The CUDA decode step's rewrites of the step graph. update_states_in_place: the convs and scans write the
new state over the old one, so each step's state outputs must be its state inputs, updated. fuse_dt_proj:
the state update computes dt_proj, one int8_linear a layer fewer; fuse_in_proj_conv: in_proj's kernel does
the conv's step. Either way the logits and states must be those of the functional step graph (bit for bit
on the GPU, where both run the same kernels; on the CPU the in-place graph runs the Triton step kernels in
the interpreter and the functional one the references, so there the int8 codes agree exactly and the
float values to float32 rounding)."""

import pytest
import torch

import mamba_qpass as qpass
from mamba_qpass.capture import with_state
from mamba_qpass.cuda_kernels import int8_linear_conv_step_in_place, int8_selective_scan_dt_proj_in_place
from mamba_qpass.graph_utils import attr_of
from mamba_qpass.kernels.selective_state_update.triton import state_update_tiling
from mamba_qpass.runtime.decode_step import DT_PROJ_FUSED_MAX_BYTES, decode_rewrites
from mamba_qpass.runtime.fuse_dt_proj import fuse_dt_proj
from mamba_qpass.runtime.fuse_in_proj_conv import fuse_in_proj_conv
from mamba_qpass.runtime.in_place_states import IN_PLACE, update_states_in_place
from models import random_mamba
from test_w8a8 import token_batches

MODES = ["w8a8", "float_sim"]
# the kernels run on CUDA, or on the CPU in Triton's interpreter (which tests/conftest.py turns on only
# where there is no CUDA)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(scope="module")
def graphs():
    model = random_mamba(initializer_range=0.02)
    calibrated = qpass.calibrate(model, token_batches(97), progress=False)
    return {mode: qpass.apply_mode(calibrated, mode) for mode in MODES}


def _decode(step, ids, states, steps):
    logits = []
    for t in range(steps):
        out, new_states = step(ids[:, t : t + 1], *states)
        logits.append(out)
        states = new_states
    return torch.cat(logits, 1), states


def _count(gm, *targets):
    return sum(n.op == "call_function" and n.target in targets for n in gm.graph.nodes)


FUSIONS = {"in_place": (), "fuse_dt_proj": (fuse_dt_proj,), "fuse_in_proj_conv": (fuse_in_proj_conv,),
           "both": (fuse_in_proj_conv, fuse_dt_proj)}


@pytest.mark.parametrize("fusions", FUSIONS.values(), ids=FUSIONS.keys())
@pytest.mark.parametrize("mode", MODES)
@torch.no_grad()
def test_rewritten_steps_equal_functional_steps(mode, fusions, graphs):
    device = DEVICE
    step = with_state(graphs[mode], last_logits_only=True).to(device)
    in_place = update_states_in_place(step)
    linears = _count(in_place, torch.ops.mamba_qpass.int8_linear.default)
    for fuse in fusions:
        in_place = fuse(in_place)
    # w8a8 has two layers' dt_projs and in_proj + conv pairs to fuse; float_sim has no int8 GEMM or scan
    fused = {fuse_dt_proj: int8_selective_scan_dt_proj_in_place, fuse_in_proj_conv: int8_linear_conv_step_in_place}
    for fuse in fusions:
        assert _count(in_place, fused[fuse]) == (2 if mode == "w8a8" else 0), fuse.__name__
    fused_calls = _count(in_place, *fused.values())
    assert _count(in_place, torch.ops.mamba_qpass.int8_linear.default) == linears - fused_calls
    targets = (*IN_PLACE.values(), *fused.values())
    replaced = [n for n in in_place.graph.nodes if n.op == "call_function" and n.target in targets]
    assert len(replaced) >= 2, "both layers' scans (and w8a8's int8 convs) should update in place"
    ids = torch.randint(0, 97, (3, 9), generator=torch.Generator().manual_seed(2)).to(device)
    _, states = step(ids[:, :4])
    buffers = tuple(s.clone() for s in states)
    expected, expected_states = _decode(step, ids[:, 4:], states, 5)

    logits = []
    for t in range(4, 9):
        out, returned = in_place(ids[:, t : t + 1], *buffers)
        logits.append(out)
        updated = [r is b for r, b in zip(returned, buffers)]
        assert sum(updated) == len(replaced), "each in-place op's state output must be its state input"
        buffers = tuple(returned)
    logits = torch.cat(logits, 1)
    for got, want in zip(buffers, expected_states):
        if want.dtype == torch.int8 or device == "cuda":
            assert torch.equal(got, want)
        else:
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    if device == "cuda":
        assert torch.equal(logits, expected)
    else:
        torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
        assert torch.equal(logits.argmax(-1), expected.argmax(-1))


def test_in_place_step_refuses_a_prompt(graphs):
    in_place = update_states_in_place(with_state(graphs["w8a8"], last_logits_only=True))
    with pytest.raises(ValueError, match="updates a given state by one token"):
        in_place(torch.zeros(1, 3, dtype=torch.long))


def test_dt_proj_is_fused_only_while_its_weight_reads_fit_the_limit(graphs):
    """decode_rewrites fuses dt_proj while its weight bytes, times the state update's programs of batch
    rows (each reads the weight once), is at most DT_PROJ_FUSED_MAX_BYTES; fuse_dt_proj's limit skips
    larger ones."""
    step_graph = update_states_in_place(with_state(graphs["w8a8"], last_logits_only=True))
    scans = [n for n in step_graph.graph.nodes if n.target is IN_PLACE[torch.ops.mamba_qpass.int8_selective_scan.default]]
    weight_bytes = max(attr_of(step_graph, scan.args[1].args[1]).nbytes for scan in scans)
    assert _count(fuse_dt_proj(step_graph, max_weight_bytes=weight_bytes), int8_selective_scan_dt_proj_in_place) == len(scans)
    assert _count(fuse_dt_proj(step_graph, max_weight_bytes=weight_bytes - 1), int8_selective_scan_dt_proj_in_place) == 0
    reads_that_fit = DT_PROJ_FUSED_MAX_BYTES // weight_bytes
    outcomes = set()
    for batch in (1, 16, reads_that_fit, reads_that_fit + 1, 64 * reads_that_fit):
        fits = -(-batch // state_update_tiling(batch, torch.device("cuda"), dt_proj=True)["ROWS"]) <= reads_that_fit
        *_, last = decode_rewrites(batch)
        assert last.func is fuse_dt_proj
        assert (last.keywords["max_weight_bytes"] >= weight_bytes) == fits, batch
        outcomes.add(fits)
    assert outcomes == {True, False}, "the batches should fall on both sides of the limit"


@pytest.mark.parametrize("batch, fused", [(1, True), (16, True), (32, False), (64, False)])
def test_dt_proj_fusion_at_the_2_8b_config_follows_the_timed_batches(batch, fused):
    """2.8b's dt_proj weight (5120 x 160 int8 codes): fused where it was timed faster on an H200 (B=1; B=16
    with 8 batch rows a program), left to the GEMM where it was timed slower (B=32 with 8 rows a program;
    B=64 with one row a program, not yet timed with 8)."""
    weight_bytes = 5120 * 160
    *_, last = decode_rewrites(batch)
    assert (last.keywords["max_weight_bytes"] >= weight_bytes) == fused
