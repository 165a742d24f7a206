import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, Mamba2Config, Mamba2ForCausalLM

import mamba_qpass as qpass
from mamba_qpass.calibrate import CalibrationDataError
from models import random_mamba


def test_non_mamba_model_is_refused_naming_what_is_supported():
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=11, n_positions=16))
    with pytest.raises(qpass.UnsupportedModelError, match="MambaForCausalLM"):
        qpass.capture(model)


def test_mamba2_is_refused_naming_mamba1():
    config = Mamba2Config(
        vocab_size=11, hidden_size=16, num_hidden_layers=1, num_heads=2, head_dim=16, state_size=8, n_groups=1
    )
    with pytest.raises(qpass.UnsupportedModelError, match="Mamba-2 models are not supported.*Mamba-1"):
        qpass.capture(Mamba2ForCausalLM(config))


def test_unsupported_activation_is_refused():
    with pytest.raises(ValueError, match="hidden_act 'gelu'.*'silu'"):
        qpass.capture(random_mamba(hidden_act="gelu"))


def test_conv_wider_than_four_is_refused():
    with pytest.raises(ValueError, match="conv_kernel 5.*1 to 4"):
        qpass.capture(random_mamba(conv_kernel=5))


def test_unsupported_dtype_is_refused_naming_supported_ones():
    with pytest.raises(ValueError, match="torch.float64.*torch.float32"):
        qpass.capture(random_mamba().double())


def test_half_models_are_captured():
    model = random_mamba().to(torch.bfloat16)
    gm = qpass.capture(model)
    logits = gm(torch.randint(0, 97, (2, 5)))
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()


@pytest.fixture(scope="module")
def w8a8_model():
    model = random_mamba()
    g = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    return qpass.apply(model, "w8a8", calibration=[torch.randint(0, vocab, (2, 16), generator=g)], progress=False)


@pytest.mark.parametrize(
    "ids, match",
    [
        (torch.tensor([[1.0, 2.0]]), r"integer tensor of token ids \(torch.long\), got a torch.float32 tensor"),
        (torch.tensor([1, 2, 3]), r"shape \(batch, seq\), got \(3,\): for one sequence use ids\[None\]"),
        (torch.tensor([[5, 97]]), r"token ids from 5 to 97, outside the model's vocabulary \[0, 97\)"),
        (torch.tensor([[-1, 3]]), r"from -1 to 3, outside"),
    ],
    ids=["float", "1-D", "beyond-vocab", "negative"],
)
def test_bad_input_ids_are_refused_with_the_fix(w8a8_model, ids, match):
    with pytest.raises(ValueError, match=match):
        w8a8_model(ids)


def test_an_empty_sequence_gives_empty_logits(w8a8_model):
    assert w8a8_model(torch.zeros(2, 0, dtype=torch.long)).logits.shape == (2, 0, 97)


def test_calibration_texts_that_are_all_empty_are_refused():
    class Whitespace:
        eos_token_id = 0

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [1] * len(text.split())}

    with pytest.raises(CalibrationDataError, match="calibration texts hold no tokens \\(3 texts"):
        qpass.apply(random_mamba(), "w8a8", calibration=["", " ", "\n"], tokenizer=Whitespace(), progress=False)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_weights_are_refused_naming_the_weight(bad):
    model = random_mamba()
    with torch.no_grad():
        model.backbone.layers[1].mixer.x_proj.weight[2, 3] = bad
    expected = "1 NaN and 0 infinite" if bad != bad else "0 NaN and 1 infinite"
    with pytest.raises(ValueError, match=f"weight backbone.layers.1.mixer.x_proj.weight holds {expected} values"):
        qpass.calibrate(model, [torch.randint(0, 97, (2, 16))], progress=False)
    with pytest.raises(ValueError, match="holds .* values"):
        qpass.apply(model, "fp")


def test_a_model_on_several_devices_is_refused():
    model = random_mamba()
    model.backbone.norm_f.weight = torch.nn.Parameter(model.backbone.norm_f.weight.to("meta"))
    with pytest.raises(qpass.UnsupportedModelError, match=r"on several devices \(cpu, meta\).*model.to\('cuda'\)"):
        qpass.capture(model)


def test_input_on_another_device_than_the_model_is_refused(w8a8_model):
    with pytest.raises(ValueError, match="input_ids are on meta but the model is on cpu: move them"):
        w8a8_model(torch.zeros(1, 3, dtype=torch.long, device="meta"))


def test_saturation_beyond_the_calibrated_ranges_warns_naming_the_tensor():
    from mamba_qpass.saturation import SATURATION_WARNING_PCT, warn_on_saturation

    model = random_mamba()
    g = torch.Generator().manual_seed(0)
    broad = torch.randint(0, 97, (8, 64), generator=g)
    own = qpass.saturation(qpass.apply_mode(qpass.calibrate(model, [broad], progress=False), "w8a8"), broad)
    assert 0 < max(own.values()) < 0.2  # on its calibration data: about the percentile's designed 0.05%
    narrow = qpass.apply_mode(qpass.calibrate(model, [broad[:1, :4]], progress=False), "w8a8")  # 4 tokens
    shares = qpass.saturation(narrow, torch.randint(0, 97, (2, 64), generator=g))
    worst = max(shares, key=shares.get)
    assert shares[worst] > SATURATION_WARNING_PCT
    with pytest.warns(qpass.SaturationWarning, match=rf"random text: int8 saturation above 1.0% .*{worst} {shares[worst]:.2f}%"):
        warn_on_saturation(shares, "random text")
    assert qpass.saturation(qpass.apply(model, "fp").gm, broad) == {}


def test_the_saturation_share_counts_codes_at_the_int8_limits(w8a8_model):
    ids = torch.randint(0, 97, (2, 16), generator=torch.Generator().manual_seed(1))
    shares = qpass.saturation(w8a8_model.gm, ids)
    from mamba_qpass.taps import tapped_nodes, with_tap_outputs

    tapped, names = with_tap_outputs(w8a8_model.gm)
    outputs = dict(zip(names, tapped(ids)[1:]))
    assert shares and set(shares) <= set(names)
    for name, share in shares.items():
        codes = outputs[name]
        assert share == 100.0 * int(((codes == -128) | (codes == 127)).sum()) / codes.numel()
