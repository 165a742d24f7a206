import pytest
import torch

import mamba_qpass as qpass
from models import MAMBA_130M, hf_logits, random_mamba

LENGTHS = [1, 7, 64, 257]
BATCHES = [1, 3]


def _assert_close_to_hf(model, gm, batch, length, seed=0):
    ids = torch.randint(0, model.config.vocab_size, (batch, length), generator=torch.Generator().manual_seed(seed))
    expected = hf_logits(model, ids)
    with torch.no_grad():
        got = gm(ids)
    assert got.shape == expected.shape
    tolerance = 1e-4 * expected.abs().max().item()
    assert (got - expected).abs().max().item() <= tolerance


@pytest.mark.parametrize("batch", BATCHES, ids=lambda b: f"B{b}")
@pytest.mark.parametrize("length", LENGTHS, ids=lambda n: f"L{n}")
def test_tiny_matches_hf_eager(batch, length):
    model = random_mamba()
    _assert_close_to_hf(model, qpass.capture(model), batch, length)


@pytest.fixture(scope="module")
def mamba_130m():
    model = random_mamba(**MAMBA_130M)
    return model, qpass.capture(model)


@pytest.mark.slow
@pytest.mark.parametrize("batch", BATCHES, ids=lambda b: f"B{b}")
@pytest.mark.parametrize("length", LENGTHS, ids=lambda n: f"L{n}")
def test_mamba_130m_config_matches_hf_eager(mamba_130m, batch, length):
    model, gm = mamba_130m
    _assert_close_to_hf(model, gm, batch, length)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(tie_word_embeddings=False),
        dict(use_bias=True, use_conv_bias=False),
        dict(conv_kernel=2, state_size=4, time_step_rank=3, expand=3, hidden_size=24),
        dict(conv_kernel=1),
    ],
    ids=["untied-head", "linear-bias-no-conv-bias", "odd-sizes-width2", "width1"],
)
def test_other_configs_match_hf_eager(overrides):
    model = random_mamba(**overrides)
    _assert_close_to_hf(model, qpass.capture(model), batch=2, length=9)


def _count(gm, target):
    return sum(1 for n in gm.graph.nodes if n.op == "call_function" and n.target == target)


def test_each_layer_is_single_recognisable_nodes():
    model = random_mamba(num_hidden_layers=3)
    gm = qpass.capture(model)
    assert _count(gm, torch.ops.mamba_qpass.causal_conv1d.default) == 3
    assert _count(gm, torch.ops.mamba_qpass.selective_scan.default) == 3
    assert _count(gm, torch.ops.mamba_qpass.rms_norm.default) == 3 + 1
    assert _count(gm, torch.ops.aten.linear.default) == 4 * 3 + 1


def test_one_capture_serves_every_shape():
    model = random_mamba()
    gm = qpass.capture(model)
    nodes_before = len(gm.graph.nodes)
    for batch, length in [(1, 1), (4, 33), (2, 300)]:
        _assert_close_to_hf(model, gm, batch, length)
    assert len(gm.graph.nodes) == nodes_before


def test_untied_head_uses_its_own_weight():
    model = random_mamba(tie_word_embeddings=False)
    gm = qpass.capture(model)
    assert "lm_head.weight" in dict(gm.named_parameters())
    tied = qpass.capture(random_mamba())
    assert "lm_head.weight" not in dict(tied.named_parameters())


def test_export_sees_custom_ops_with_dynamic_shapes():
    model = random_mamba()
    gm = qpass.capture(model)
    ids = torch.randint(0, 97, (2, 8))
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    exported = torch.export.export(gm, (ids,), dynamic_shapes=({0: batch, 1: seq},))
    graph = exported.graph_module
    assert _count(graph, torch.ops.mamba_qpass.selective_scan.default) == 2
    assert _count(graph, torch.ops.mamba_qpass.causal_conv1d.default) == 2
    other = torch.randint(0, 97, (3, 21))
    torch.testing.assert_close(exported.module()(other), gm(other))
