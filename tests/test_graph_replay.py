"""CudaGraphReplay: a captured forward gives the eager forward's outputs bit for bit, per input shape."""

import pytest
import torch

import mamba_qpass as qpass
from mamba_qpass.graph_replay import CudaGraphReplay
from models import random_mamba


def test_refuses_cpu_inputs_with_the_reason():
    replay = CudaGraphReplay(lambda x: x + 1)
    with pytest.raises(ValueError, match="needs CUDA tensor inputs; input 0 is on cpu"):
        replay(torch.zeros(2))


def test_refuses_an_empty_cache():
    with pytest.raises(ValueError, match="max_graphs must be at least 1"):
        CudaGraphReplay(lambda x: x, max_graphs=0)


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["w8a8", "fp32_ssm", "fp"])
def test_replayed_graph_equals_eager_forward(mode):
    model = random_mamba(initializer_range=0.02, hidden_size=64, num_hidden_layers=2).cuda()
    g = torch.Generator().manual_seed(0)
    calibrated = qpass.calibrate(model, [torch.randint(0, 97, (2, 32), generator=g).cuda()], progress=False)
    gm = qpass.capture(model) if mode == "fp" else qpass.apply_mode(calibrated, mode)
    replay = CudaGraphReplay(gm, max_graphs=2)
    shapes = [(1, 40), (3, 17), (1, 40), (2, 8)]  # a repeated shape replays; the third new one evicts
    with torch.no_grad():
        for shape in shapes:
            ids = torch.randint(0, 97, shape, generator=g).cuda()
            assert torch.equal(replay(ids), gm(ids)), f"{mode} {shape}"
    assert len(replay) == 2
    first = replay(ids)
    kept = first.clone()
    replay(torch.randint(0, 97, ids.shape, generator=g).cuda())
    assert torch.equal(first, kept), "a result must stay valid after the next call (outputs are copies)"
