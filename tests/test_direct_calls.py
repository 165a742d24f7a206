"""runtime/direct_calls.py: a finished graph run with its ops called directly, and its per-tensor
(de)quantise nodes given their scales as numbers, gives the dispatched graph's outputs bit for bit, in
every mode and in the step graph with states; the HF-style model runs it eagerly, made again when its
graph changes."""

import copy

import pytest
import torch

import mamba_qpass as qpass
from mamba_qpass import ops
from mamba_qpass.capture import with_state
from mamba_qpass.hf import QuantizedMambaForCausalLM
from mamba_qpass.runtime.direct_calls import cuda_graph_blockers, direct_calls
from models import random_mamba
from test_w8a8 import token_batches


@pytest.fixture(scope="module")
def model_and_calibrated():
    model = random_mamba(initializer_range=0.02)
    return model, qpass.calibrate(model, token_batches(97), progress=False)


def _op_nodes(gm) -> list:
    return [n for n in gm.graph.nodes if n.op == "call_function" and isinstance(n.target, torch._ops.OpOverload)
            and n.target.namespace == ops.NAMESPACE]


@pytest.mark.parametrize("mode", qpass.mode_names())
def test_every_mode_gives_the_dispatched_graphs_outputs(model_and_calibrated, mode):
    model, calibrated = model_and_calibrated
    gm = dict(qpass.build_modes(model, ["fp"]))["fp"] if mode == "fp" else qpass.apply_mode(calibrated, mode)
    direct = direct_calls(gm)
    assert _op_nodes(gm) and not _op_nodes(direct), "every op node should call its implementation"
    assert not cuda_graph_blockers(direct), "per-tensor (de)quantise nodes should take their scales as numbers"
    ids = token_batches(97, count=1, batch=2, length=9, seed=3)[0]
    with torch.no_grad():
        assert torch.equal(direct(ids), gm(ids))
        step = with_state(gm, last_logits_only=True)
        direct_step = direct_calls(step)
        logits, states = step(ids)
        direct_logits, direct_states = direct_step(ids)
    assert torch.equal(direct_logits, logits)
    assert len(states) == len(direct_states) and all(torch.equal(a, b) for a, b in zip(states, direct_states))
    assert _op_nodes(gm), "the graph itself keeps its ops"


def test_the_model_runs_its_graph_with_direct_calls_and_follows_a_new_graph(model_and_calibrated):
    model, calibrated = model_and_calibrated
    qmodel = QuantizedMambaForCausalLM(qpass.apply_mode(calibrated, "w8a8"), model.config, "w8a8")
    ids = token_batches(97, count=1, batch=2, length=9, seed=4)[0]
    with torch.no_grad():
        assert torch.equal(qmodel(ids).logits, qmodel.gm(ids))
    assert not _op_nodes(qmodel._eager_graph())
    qmodel.gm = qpass.apply_mode(calibrated, "fp32_ssm")
    assert not _op_nodes(qmodel._eager_graph())
    with torch.no_grad():
        assert torch.equal(qmodel(ids).logits, qmodel.gm(ids))
    assert qmodel._eager.get("source") is qmodel.gm


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["fp32_ssm", "fp32_conv", "qdq"])
def test_on_cuda_int8_dequantise_nodes_run_one_kernel_with_the_same_bits(model_and_calibrated, mode):
    """On CUDA the per-tensor int8 dequantise nodes call the Triton kernel (one pass instead of torch's
    three), and the graph's outputs stay the dispatched graph's bit for bit."""
    from mamba_qpass.cuda_kernels import dequantize_int8_per_tensor

    model, _ = model_and_calibrated
    calibrated = qpass.calibrate(copy.deepcopy(model).cuda(), [ids.cuda() for ids in token_batches(97)], progress=False)
    gm = qpass.apply_mode(calibrated, mode)
    direct = direct_calls(gm)
    targets = [n.target for n in direct.graph.nodes if n.op == "call_function"]
    assert dequantize_int8_per_tensor in targets
    ids = token_batches(97, count=1, batch=2, length=300, seed=5)[0].cuda()
    with torch.no_grad():
        assert torch.equal(direct(ids), gm(ids))
