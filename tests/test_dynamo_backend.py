"""The torch.compile backend on an unmodified transformers MambaForCausalLM: one graph for every length
and batch size (fullgraph, no recompiles), the logits of qpass.apply bit for bit in every mode, the
graph qpass.apply builds, calibration once, a saved calibration, and the refusals."""

import tomllib
from pathlib import Path

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

import mamba_qpass as qpass
import mamba_qpass.dynamo_backend as backend_module
from mamba_qpass.calibrate import run_calibration
from mamba_qpass.modes import mode_names
from mamba_qpass.snapshot import graph_to_text
from models import hf_logits, random_mamba
from test_w8a8 import token_batches

LENGTHS = (7, 19, 33)
VOCAB = 97
# mamba-130m's widths (the kernels' real shapes) in two layers, with the tiny vocabulary
MAMBA_130M_SMALL = dict(hidden_size=768, state_size=16, num_hidden_layers=2, time_step_rank=48)


@pytest.fixture(scope="module")
def model():
    return random_mamba(initializer_range=0.02)


@pytest.fixture(scope="module")
def calibration():
    return token_batches(VOCAB)


def _inputs():
    """Three lengths, and a second batch size at the last one."""
    return [token_batches(VOCAB, count=1, batch=2, length=n, seed=n)[0] for n in LENGTHS] + [
        token_batches(VOCAB, count=1, batch=3, length=LENGTHS[-1], seed=5)[0]
    ]


def _compile(model, backend):
    torch._dynamo.reset()
    counter = CompileCounterWithBackend(backend)
    return torch.compile(model, backend=counter, fullgraph=True, dynamic=True), counter


@pytest.mark.parametrize("mode", mode_names())
def test_one_graph_for_every_length_with_the_logits_and_graph_of_apply(model, calibration, mode):
    expected = qpass.apply(model, mode=mode, calibration=calibration, progress=False)
    backend = qpass.backend(mode=mode, calibration=calibration)
    compiled, counter = _compile(model, backend)
    for ids in _inputs():
        out = compiled(ids).logits
        assert torch.equal(out, expected(ids).logits), (mode, tuple(ids.shape))
    assert counter.frame_count == 1, "a new length or batch size recompiled"
    (graph,) = backend.graphs
    assert graph_to_text(graph) == graph_to_text(expected.gm)


def test_batch_size_one_first_takes_a_graph_of_its_own(model, calibration):
    """torch specialises a size of 1: compiled first at batch 1, three lengths share that graph and the
    larger batch sizes share one more (two in all, as the README says); the logits stay apply's."""
    expected = qpass.apply(model, mode="w8a8", calibration=calibration, progress=False)
    compiled, counter = _compile(model, qpass.backend(mode="w8a8", calibration=calibration))
    g = torch.Generator().manual_seed(3)
    for batch, length in [(1, 8), (1, 12), (1, 17), (3, 10), (4, 16)]:
        ids = torch.randint(0, VOCAB, (batch, length), generator=g)
        assert torch.equal(compiled(ids).logits, expected(ids).logits)
        assert counter.frame_count == (1 if batch == 1 else 2), (batch, length)


def test_calibration_runs_once_across_recompiles(model, calibration, monkeypatch):
    calls = []

    def counted(*args):
        calls.append(args)
        return run_calibration(*args)

    monkeypatch.setattr(backend_module, "run_calibration", counted)
    expected = qpass.apply(model, mode="w8a8", calibration=calibration, progress=False)
    backend = qpass.backend(mode="w8a8", calibration=calibration)
    torch._dynamo.reset()
    counter = CompileCounterWithBackend(backend)
    compiled = torch.compile(model, backend=counter, dynamic=False)  # a recompile for each length
    for ids in _inputs()[:2]:
        assert torch.equal(compiled(ids).logits, expected(ids).logits)
    assert counter.frame_count == 2 and len(backend.graphs) == 2
    assert len(calls) == 1


def test_a_saved_calibration_gives_the_same_logits(model, calibration, tmp_path):
    calibrated = qpass.calibrate(model, calibration, progress=False)
    qpass.save(calibrated, tmp_path / "calibrated")
    expected = qpass.apply_mode(calibrated, "float_sim")
    for given in (calibrated, tmp_path / "calibrated", str(tmp_path / "calibrated")):
        compiled, _ = _compile(model, qpass.backend(mode="float_sim", calibration=given))
        ids = _inputs()[0]
        assert torch.equal(compiled(ids).logits, expected(ids))


def test_a_calibration_of_other_weights_is_refused(model, calibration):
    other = qpass.calibrate(random_mamba(seed=1, initializer_range=0.02), calibration, progress=False)
    compiled, _ = _compile(model, qpass.backend(mode="w8a8", calibration=other))
    with pytest.raises(Exception, match="calibration was made from other weights"):
        compiled(_inputs()[0])


def test_compiles_outside_no_grad_and_leaves_eager_calls_to_transformers(model, calibration):
    expected = qpass.apply(model, mode="w8a8", calibration=calibration, progress=False)
    compiled, _ = _compile(model, qpass.backend(mode="w8a8", calibration=calibration))
    ids = _inputs()[0]
    with torch.enable_grad():
        out = compiled(ids).logits
    assert not out.requires_grad and torch.equal(out, expected(ids).logits)
    # eager: transformers' own forward, not the routed one
    original = type(model).forward.__wrapped__
    with torch.no_grad():
        assert torch.equal(model(ids, use_cache=False).logits, original(model, ids, use_cache=False).logits)
        assert torch.equal(hf_logits(model, ids), original(model, ids, use_cache=False).logits)


def test_calls_the_graph_does_not_serve_are_refused_with_the_reason(model, calibration):
    compiled, _ = _compile(model, qpass.backend(mode="w8a8", calibration=calibration))
    ids = _inputs()[0]
    with pytest.raises(Exception, match="called as model\\(input_ids\\)"):
        compiled(ids, attention_mask=torch.ones_like(ids))


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="mode 'w8a8' needs calibration"):
        qpass.backend(mode="w8a8")
    with pytest.raises(ValueError, match="unknown mode 'int4'"):
        qpass.backend(mode="int4", calibration=[])
    with pytest.raises(ValueError, match="unknown option 'calib'"):
        backend_module.mamba_qpass_backend(None, [], options={"mode": "w8a8", "calib": []})


def test_the_backend_name_resolves_through_the_declared_entry_point(model, calibration, tmp_path, monkeypatch):
    """What ``pip install`` does with pyproject's entry point, done by hand: a dist-info folder on the path
    declaring it; torch.compile then finds "mamba_qpass" by name and passes options to it."""
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    declared = pyproject["project"]["entry-points"]["torch_dynamo_backends"]
    assert declared == {"mamba_qpass": "mamba_qpass.dynamo_backend:mamba_qpass_backend"}
    dist = tmp_path / "mamba_qpass_entry_point-0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mamba-qpass-entry-point\nVersion: 0\n")
    (dist / "entry_points.txt").write_text(
        "[torch_dynamo_backends]\n" + "".join(f"{k} = {v}\n" for k, v in declared.items())
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from torch._dynamo.backends import registry

    monkeypatch.setattr(registry, "_BACKENDS", dict(registry._BACKENDS))
    monkeypatch.setattr(registry, "_COMPILER_FNS", dict(registry._COMPILER_FNS))
    registry._discover_entrypoint_backends.__wrapped__()  # uncached: it ran before the folder existed
    assert "mamba_qpass" in registry.list_backends()

    expected = qpass.apply(model, mode="fp32_ssm", calibration=calibration, progress=False)
    torch._dynamo.reset()
    options = {"mode": "fp32_ssm", "calibration": calibration}
    compiled = torch.compile(model, backend="mamba_qpass", options=options, fullgraph=True, dynamic=True)
    for ids in _inputs()[:3]:
        assert torch.equal(compiled(ids).logits, expected(ids).logits)
    ((_, backend),) = [entry for entry in backend_module._BY_OPTIONS.values() if entry[0] is options]
    assert len(backend.graphs) == 1


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["w8a8", "float_sim"])
def test_the_inductor_hand_off_keeps_the_logits_and_one_graph(model, calibration, mode):
    expected = qpass.apply(model, mode=mode, calibration=calibration, progress=False)
    compiled, counter = _compile(model, qpass.backend(mode=mode, calibration=calibration, inductor=True))
    for ids in _inputs():
        assert torch.equal(compiled(ids).logits, expected(ids).logits), (mode, tuple(ids.shape))
    assert counter.frame_count == 1


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["w8a8", "fp32_ssm", "float_sim"])
def test_the_backend_on_the_gpu_with_and_without_inductor(calibration, mode):
    """The Triton kernels through the backend: graph as it is and handed to inductor, one compile for every
    shape, qpass.apply's logits bit for bit."""
    model = random_mamba(initializer_range=0.02, **MAMBA_130M_SMALL).half()
    expected = qpass.apply(model.cuda(), mode=mode, calibration=[t.cuda() for t in calibration], progress=False)
    for inductor in (False, True):
        backend = qpass.backend(mode=mode, calibration=[t.cuda() for t in calibration], inductor=inductor)
        compiled, counter = _compile(model, backend)
        for ids in _inputs():
            ids = ids.cuda()
            assert torch.equal(compiled(ids).logits, expected(ids).logits), (mode, inductor, tuple(ids.shape))
        assert counter.frame_count == 1, (mode, inductor)
