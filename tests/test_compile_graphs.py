"""A finished graph compiles with torch.compile for inference, inside and outside no_grad, and gives the
graph's own logits; asking an int8 op for gradients fails with the reason."""

import pytest
import torch

import mamba_qpass as qpass
from mamba_qpass.hf import QuantizedMambaForCausalLM
from models import random_mamba
from test_w8a8 import token_batches

ops = torch.ops.mamba_qpass
QUANTISED = ["qdq", "w8a8", "fp32_ssm", "float_sim", "fp32_conv"]


@pytest.fixture(scope="module")
def model_and_calibrated():
    model = random_mamba(initializer_range=0.02)
    return model, qpass.calibrate(model, token_batches(97), progress=False)


def _graph(model_and_calibrated, mode):
    model, calibrated = model_and_calibrated
    if mode == "fp":
        ((_, gm),) = qpass.build_modes(model, ["fp"])
        return gm
    return qpass.apply_mode(calibrated, mode)


def test_finished_graphs_hold_no_tensor_that_requires_grad(model_and_calibrated):
    for mode in ["fp", *QUANTISED]:
        gm = _graph(model_and_calibrated, mode)
        assert not list(gm.parameters()), mode
        assert not any(t.requires_grad for t in gm.buffers()), mode
    model, calibrated = model_and_calibrated
    assert all(p.requires_grad for p in model.parameters()), "the source model must be left as it was"


# aot_eager runs AOTAutograd, the step that traced a backward through the ops and failed.
@pytest.mark.parametrize("grad", ["no_grad", "grad_enabled"])
@pytest.mark.parametrize("mode", ["fp", *QUANTISED])
def test_graph_compiles_fullgraph_and_gives_its_own_logits(model_and_calibrated, mode, grad):
    torch._dynamo.reset()
    gm = _graph(model_and_calibrated, mode)
    compiled = torch.compile(gm, backend="aot_eager", fullgraph=True)
    ids = token_batches(97, count=1, batch=2, length=19, seed=3)[0]
    with torch.set_grad_enabled(grad == "grad_enabled"):
        out = compiled(ids)
    assert not out.requires_grad
    assert torch.equal(out, gm(ids))


@pytest.mark.slow
def test_w8a8_graph_compiles_with_inductor_outside_no_grad(model_and_calibrated):
    torch._dynamo.reset()
    gm = _graph(model_and_calibrated, "w8a8")
    ids = token_batches(97, count=1, batch=2, length=19, seed=3)[0]
    assert torch.equal(torch.compile(gm, fullgraph=True)(ids), gm(ids))


@pytest.mark.slow
def test_float_sim_compiled_exactly_gives_w8a8s_logits(model_and_calibrated):
    """The HF-style model, as users hold it, through ``qpass.compile_exact`` (one graph for every length)
    and through its own ``compile()``."""
    model, calibrated = model_and_calibrated
    float_sim = QuantizedMambaForCausalLM(_graph(model_and_calibrated, "float_sim"), model.config, "float_sim")
    w8a8 = QuantizedMambaForCausalLM(_graph(model_and_calibrated, "w8a8"), model.config, "w8a8")
    torch._dynamo.reset()
    compiled = qpass.compile_exact(float_sim, dynamic=True)
    for length in (7, 19):
        ids = token_batches(97, count=1, batch=2, length=length, seed=length)[0]
        assert torch.equal(compiled(ids).logits, w8a8(ids).logits), length
    float_sim.compile()  # the same, in place: what `mamba-qpass eval --compile` does
    assert float_sim._compiled is not None
    ids = token_batches(97, count=1, batch=3, length=11, seed=11)[0]
    assert torch.equal(float_sim(ids).logits, w8a8(ids).logits)


def test_exact_inductor_options_keep_the_rounding_in_every_mode():
    assert qpass.exact_inductor_options()["emulate_precision_casts"] is True
    overhead = qpass.exact_inductor_options("reduce-overhead")
    assert overhead["triton.cudagraphs"] is True and overhead["emulate_precision_casts"] is True
    with pytest.raises(RuntimeError, match="Unrecognized mode=fastest"):
        qpass.exact_inductor_options("fastest")


def test_gradients_through_an_int8_op_are_refused_with_the_reason(model_and_calibrated):
    gm = _graph(model_and_calibrated, "w8a8")
    scan = next(n for n in gm.graph.nodes if n.target == ops.int8_selective_scan.default)
    ids = token_batches(97, count=1, batch=1, length=5, seed=3)[0]
    values = {}
    interpreter = torch.fx.Interpreter(gm)
    original = interpreter.run_node

    def record(node):
        result = original(node)
        if node is scan:
            values["args"] = [interpreter.env[a] if isinstance(a, torch.fx.Node) else a for a in node.args]
        return result

    interpreter.run_node = record
    interpreter.run(ids)
    u, delta, A, B, C, D, z, delta_bias, softplus, scales, out_dtype, *state = values["args"]
    D = D.detach().clone().requires_grad_()
    out, _ = ops.int8_selective_scan(u, delta, A, B, C, D, z, delta_bias, softplus, scales, out_dtype, *state)
    with pytest.raises(RuntimeError, match="int8_selective_scan has no gradient.*torch.no_grad"):
        out.float().sum().backward()


def test_the_hf_style_model_compiles_as_one_graph_and_still_checks_token_ids(model_and_calibrated):
    model, calibrated = model_and_calibrated
    qmodel = QuantizedMambaForCausalLM(qpass.apply_mode(calibrated, "w8a8"), model.config, "w8a8")
    torch._dynamo.reset()
    compiled = torch.compile(qmodel, backend="aot_eager", fullgraph=True, dynamic=True)
    for length in (7, 19, 33):
        ids = token_batches(97, count=1, batch=2, length=length, seed=length)[0]
        assert torch.equal(compiled(ids).logits, qmodel(ids).logits)
    with pytest.raises(RuntimeError, match=r"outside the model's vocabulary \[0, 97\)"):
        compiled(torch.tensor([[5, 97], [1, 2]]))
