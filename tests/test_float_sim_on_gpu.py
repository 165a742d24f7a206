"""float_sim's contract on the GPU: the float ops (aten on CUDA, or inductor's fusions of them) reproduce
every int8 code of the Triton kernels of w8a8, and the logits bit for bit, on identical tokens."""

import copy

import pytest
import torch

import mamba_qpass as qpass
from mamba_qpass.taps import with_tap_outputs
from models import random_mamba


def _outputs_on_gpu(gm, ids, compiled: bool = False) -> dict[str, torch.Tensor]:
    with_taps, names = with_tap_outputs(copy.deepcopy(gm).cuda())
    if compiled:
        torch._dynamo.reset()
        with_taps = qpass.compile_exact(with_taps)
    with torch.no_grad():
        logits, *taps = with_taps(ids.cuda())
    return {"logits": logits, **dict(zip(names, taps))}


@pytest.mark.gpu
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "inductor"])
@pytest.mark.parametrize("hadamard", [True, False], ids=["rotated", "unrotated"])
def test_float_sim_matches_every_w8a8_code_on_the_gpu(hadamard, compiled):
    """Eager, and compiled by inductor (``qpass.compile_exact``: its elementwise ops fused into Triton
    kernels, which must not change a rounding)."""
    config = qpass.QuantConfig(hadamard=hadamard)
    model = random_mamba(initializer_range=0.02, hidden_size=64, num_hidden_layers=3)
    g = torch.Generator().manual_seed(2)
    calibrated = qpass.calibrate(model, [torch.randint(0, 97, (4, 64), generator=g) for _ in range(2)],
                                 config=config, progress=False)
    ids = torch.randint(0, 97, (3, 100), generator=g)
    w8a8 = _outputs_on_gpu(qpass.apply_mode(calibrated, "w8a8", config), ids)
    float_sim = _outputs_on_gpu(qpass.apply_mode(calibrated, "float_sim", config), ids, compiled)
    codes = [tap for tap, t in w8a8.items() if t.dtype == torch.int8]
    assert codes
    for tap in [*codes, "logits"]:
        different = (float_sim[tap] != w8a8[tap].to(float_sim[tap].dtype)).sum().item()
        assert different == 0, f"{tap}: {different} of {w8a8[tap].numel()} values differ"
