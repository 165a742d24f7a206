"""float_sim is built from the op references' own float arithmetic (ops.float_arithmetic), not from a copy:
perturb that arithmetic in a reference and both the w8a8 graph (whose CPU ops run the references) and
float_sim change, still code for code equal to each other."""

import pytest
import torch
import torch.fx as fx

import mamba_qpass as qpass
from mamba_qpass.kernels.hadamard_quant import reference as hadamard_quant_reference
from mamba_qpass.kernels.int8_causal_conv1d import reference as int8_causal_conv1d_reference
from mamba_qpass.kernels.int8_linear import reference as int8_linear_reference
from mamba_qpass.kernels.quantize import reference as quantize_reference
from mamba_qpass.kernels.rms_norm_quant import reference as rms_norm_quant_reference
from mamba_qpass.kernels.selective_scan import reference as selective_scan_reference
from mamba_qpass.numerics import int8_grid
from mamba_qpass.ops import float_arithmetic
from mamba_qpass.passes.emit import Emitter, Input
from mamba_qpass.taps import with_tap_outputs
from models import random_mamba

ROTATED = qpass.QuantConfig(num_samples=4, seq_len=16, batch_size=2)
UNROTATED = qpass.QuantConfig(num_samples=4, seq_len=16, batch_size=2, hadamard=False)


def _codes_plus_one(original):
    """The same epilogue with every code one step up (saturating at 127)."""
    def perturbed(*args, **kwargs):
        return int8_grid(original(*args, **kwargs) + 1.0)
    return perturbed


def _u_doubled(original):
    def perturbed(*args, **kwargs):
        u, *rest = original(*args, **kwargs)
        return (u * 2.0, *rest)
    return perturbed


def _residual_halved(original):
    def perturbed(out, residual):
        return original(out, residual * 0.5)
    return perturbed


# (reference module, function, perturbation, config whose w8a8 graph has the op)
PERTURBATIONS = {
    "rms_norm_quant": (rms_norm_quant_reference, "rms_norm_quant_epilogue", _codes_plus_one, ROTATED),
    "int8_linear": (int8_linear_reference, "int8_linear_epilogue", _codes_plus_one, ROTATED),
    "int8_causal_conv1d": (int8_causal_conv1d_reference, "int8_causal_conv1d_epilogue", _codes_plus_one, ROTATED),
    "hadamard_quant": (hadamard_quant_reference, "hadamard_quant_epilogue", _codes_plus_one, ROTATED),
    "quantize": (quantize_reference, "quantize_epilogue", _codes_plus_one, UNROTATED),
    "int8_selective_scan": (selective_scan_reference, "dequantize_scan_inputs", _u_doubled, ROTATED),
    "int8_linear-residual": (int8_linear_reference, "add_residual", _residual_halved, ROTATED),
}


@pytest.fixture(scope="module")
def calibrated():
    model = random_mamba(initializer_range=0.02)
    g = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, 97, (2, 16), generator=g) for _ in range(2)]
    return {config: qpass.calibrate(model, batches, config=config, progress=False) for config in (ROTATED, UNROTATED)}


def _outputs(gm) -> dict[str, torch.Tensor]:
    with_taps, names = with_tap_outputs(gm)
    ids = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        logits, *taps = with_taps(ids)
    return {"logits": logits, **dict(zip(names, taps))}


def _mode_outputs(calibrated, config, mode):
    return _outputs(qpass.apply_mode(calibrated[config], mode, config))


@pytest.mark.parametrize("op", PERTURBATIONS)
def test_float_sim_follows_a_perturbed_reference(op, calibrated, monkeypatch):
    module, name, perturb, config = PERTURBATIONS[op]
    before = _mode_outputs(calibrated, config, "w8a8")
    monkeypatch.setattr(module, name, perturb(getattr(module, name)))
    w8a8, float_sim = (_mode_outputs(calibrated, config, mode) for mode in ("w8a8", "float_sim"))

    codes = [tap for tap, t in w8a8.items() if t.dtype == torch.int8]
    assert codes and w8a8.keys() == float_sim.keys()
    for tap in [*codes, "logits"]:
        assert torch.equal(float_sim[tap], w8a8[tap].to(float_sim[tap].dtype)), f"float_sim {tap} did not follow"
    changed = [tap for tap in codes if not torch.equal(w8a8[tap], before[tap])]
    assert changed, f"perturbing {name} changed no int8 tensor: the test would not see float_sim ignore it"


def test_only_int8_ops_have_float_arithmetic():
    with pytest.raises(ValueError, match="not an int8 op of mamba_qpass"):
        float_arithmetic(torch.ops.mamba_qpass.rms_norm.default)


def test_a_recorded_function_may_not_create_tensors():
    graph = fx.Graph()
    x = graph.placeholder("x")
    out = graph.output(x)
    emit = Emitter(fx.GraphModule(torch.nn.Module(), graph), out)
    with pytest.raises(ValueError, match="creates a tensor of its own"):
        emit.recorded(lambda x: x * torch.tensor([1.0, 2.0]), x=Input(x, torch.zeros(1, 2)))
