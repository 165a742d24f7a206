"""Generation through a model compiled with the mamba_qpass backend: ``cmodel.generate`` must generate with
the backend's graph (the tokens of ``qpass.apply(model, mode).generate``), not with transformers' float
forward, which is what it would run otherwise. The test model is one whose float and w8a8 greedy tokens
differ, so the routing is what decides the result."""

import pytest
import torch
from transformers import MambaForCausalLM
from transformers.generation.utils import GenerationMixin

import mamba_qpass as qpass
from mamba_qpass.dynamo_generate import compiled_generation
from models import random_mamba
from test_w8a8 import token_batches

VOCAB, NEW = 97, 8


def _float_greedy(model, ids, new):
    """Greedy tokens of the float model, re-running the whole prefix each step."""
    with torch.no_grad():
        for _ in range(new):
            ids = torch.cat([ids, model(ids).logits[:, -1].argmax(-1, keepdim=True)], 1)
    return ids


@pytest.fixture(scope="module")
def setup():
    model = random_mamba(seed=1, initializer_range=0.5)
    calibration = token_batches(VOCAB)
    ids = torch.randint(0, VOCAB, (2, 6), generator=torch.Generator().manual_seed(1))
    quantized = qpass.apply(model, mode="w8a8", calibration=calibration, progress=False)
    expected = quantized.generate(ids, max_new_tokens=NEW, eos_token_id=[])
    assert not torch.equal(expected, _float_greedy(model, ids, NEW)), "the test needs w8a8 and float to differ"
    return model, calibration, ids, expected


def test_the_compiled_model_generates_with_the_backends_graph(setup):
    model, calibration, ids, expected = setup
    torch._dynamo.reset()
    compiled = torch.compile(model, backend=qpass.backend(mode="w8a8", calibration=calibration), dynamic=True)
    assert compiled_generation(model) is None, "nothing is recorded before the first compiled call"
    with torch.no_grad():
        compiled(ids)
    recorded = compiled_generation(model)
    assert recorded is not None and recorded.mode == "w8a8"
    assert torch.equal(compiled.generate(ids, max_new_tokens=NEW, eos_token_id=[]), expected)
    assert recorded.model(model.config) is recorded.model(model.config), "the quantized model is made once"


def test_models_never_compiled_generate_as_before(setup):
    _, _, ids, _ = setup
    other = random_mamba(seed=2)
    assert MambaForCausalLM.generate.routes_to_mamba_qpass and compiled_generation(other) is None
    kwargs = dict(max_new_tokens=4, do_sample=False, pad_token_id=0, attention_mask=torch.ones_like(ids))
    assert torch.equal(other.generate(ids, **kwargs), GenerationMixin.generate(other, ids, **kwargs))


def test_a_model_compiled_from_its_calibrated_graph_generates_with_the_backends_graph(setup):
    """With a calibrated graph as the calibration (as bench_compile passes it), the backend's graph holds
    the weights as buffers sharing the model's memory, not as its parameters: the model is still found."""
    _, calibration, ids, expected = setup
    model = random_mamba(seed=1, initializer_range=0.5)  # the setup's weights, never compiled
    torch._dynamo.reset()
    calibrated = qpass.calibrate(model, calibration, progress=False)
    compiled = torch.compile(model, backend=qpass.backend(mode="w8a8", calibration=calibrated), dynamic=True)
    with torch.no_grad():
        compiled(ids)
    assert compiled_generation(model) is not None
    assert torch.equal(model.generate(ids, max_new_tokens=NEW, eos_token_id=[]), expected)
