"""Programmatic dependent launch (kernels/dependent_launch.py): when it is on, and that a chain of kernels
launched with it, replayed as a CUDA graph with fresh inputs each time, gives the outputs of the same
chain launched the usual way bit for bit (a kernel reading before the one before it has finished would
show as differences). The compiled code's waits are checked without a GPU in test_compiles_for_sm90.py."""

import pytest
import torch

from mamba_qpass.kernels.dependent_launch import MAX_TOKENS, dependent_launch, independent_launches
from mamba_qpass.kernels.hadamard_quant.triton import hadamard_quant
from mamba_qpass.kernels.int8_linear.triton import int8_linear
from mamba_qpass.kernels.rms_norm_quant.triton import rms_norm_quant
from mamba_qpass.numerics import hadamard_matrix
from codes import f64

ON = dict(USE_GDC=True, launch_pdl=True)
OFF = dict(USE_GDC=False)


def test_off_on_the_cpu():
    assert dependent_launch(torch.device("cpu"), 1) == OFF


@pytest.mark.gpu
def test_on_for_decode_sized_launches_on_hopper():
    device = torch.device("cuda")
    if torch.cuda.get_device_capability()[0] < 9:
        assert dependent_launch(device, 1) == OFF
        return
    assert dependent_launch(device, 1) == dependent_launch(device, MAX_TOKENS) == ON
    assert dependent_launch(device, MAX_TOKENS + 1) == OFF
    with independent_launches():
        assert dependent_launch(device, 1) == OFF
    assert dependent_launch(device, 1) == ON


def _block(x, weights):
    """A layer's shape of kernels: norm + quantise, a projection to codes, a torch cast between, the
    rotation, and a projection that adds x (written three kernels earlier) as its residual."""
    norm_w, w_in, dq_in, inv_in, hadamard, inv_had, w_out, dq_out, inv_norm = weights
    codes = rms_norm_quant(x, norm_w, 1e-5, inv_norm)
    hidden = int8_linear(codes, w_in, dq_in, None, inv_in)
    rotated = hadamard_quant(hidden.to(torch.float16), hadamard, inv_had)
    return int8_linear(rotated, w_out, dq_out, residual=x)


@pytest.mark.gpu
@pytest.mark.parametrize("batch", [1, 16])
def test_a_chain_replayed_with_dependent_launch_equals_the_chain_without(batch):
    device = torch.device("cuda")
    g = torch.Generator().manual_seed(batch)
    hidden, inner = 768, 1536
    weights = [
        torch.rand(hidden, generator=g).to(device) + 0.5,
        torch.randint(-128, 128, (inner, hidden), dtype=torch.int8, generator=g).to(device),
        (torch.rand(inner, dtype=torch.float64, generator=g) * 1e-3).to(device),
        (torch.rand(inner, dtype=torch.float64, generator=g) + 0.5).to(device),
        hadamard_matrix(inner).to(torch.int8).to(device),
        f64(0.05, device),
        torch.randint(-128, 128, (hidden, inner), dtype=torch.int8, generator=g).to(device),
        (torch.rand(hidden, dtype=torch.float64, generator=g) * 1e-4).to(device),
        f64(40.0, device),
    ]
    x = torch.zeros(batch, hidden, device=device)
    _block(x, weights)  # compiles and autotunes outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        replayed = _block(x, weights)
    for step in range(20):
        x.copy_(torch.randn(batch, hidden, generator=g).to(device) * (1 + step))
        graph.replay()
        with independent_launches():
            expected = _block(x, weights)
        assert torch.equal(replayed, expected), f"replay {step}: {(replayed != expected).sum().item()} values differ"
