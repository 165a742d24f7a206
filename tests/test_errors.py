import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, Mamba2Config, Mamba2ForCausalLM

import mamba_qpass as qpass
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
