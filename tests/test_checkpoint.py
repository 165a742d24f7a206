"""The embedded default checkpoint (checkpoints/gutenberg-mamba-25m) loads and works on the CPU."""

import json
import math
from pathlib import Path

import pytest
import torch

CKPT = Path(__file__).resolve().parent.parent / "checkpoints" / "gutenberg-mamba-25m"
SENTENCE = (
    "It was a cold morning in the month of December, and the old man sat by the fire with his "
    "pipe, while his daughter read aloud to him from the great book that lay upon the table."
)


@pytest.fixture(scope="module")
def model_and_tokenizer():
    from transformers import AutoTokenizer, MambaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(CKPT)
    model = MambaForCausalLM.from_pretrained(CKPT, dtype=torch.float32).eval()
    return model, tokenizer


def test_files_and_sizes():
    shards = sorted(CKPT.glob("*.safetensors"))
    assert shards, "no safetensors shards"
    assert all(p.stat().st_size <= 15_000_000 for p in shards)
    assert sum(p.stat().st_size for p in CKPT.iterdir() if p.is_file()) <= 60_000_000
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "README.md"):
        assert (CKPT / name).is_file(), name
    config = json.loads((CKPT / "config.json").read_text())
    assert config["dtype"] == "float16"


def test_config(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    c = model.config
    assert c.model_type == "mamba" and c.hidden_act == "silu"
    assert (c.hidden_size, c.num_hidden_layers, c.vocab_size) == (512, 12, 8192)
    assert (c.state_size, c.conv_kernel, c.expand, c.intermediate_size) == (16, 4, 2, 1024)
    assert c.tie_word_embeddings and model.lm_head.weight.data_ptr() == model.backbone.embeddings.weight.data_ptr()
    assert c.bos_token_id == c.eos_token_id == c.pad_token_id == 0
    assert sum(p.numel() for p in model.parameters()) == 24_537_600
    assert len(tokenizer) == 8192
    assert tokenizer.eos_token == tokenizer.bos_token == "<|endoftext|>" and tokenizer.eos_token_id == 0


def test_tokenizer_round_trip(model_and_tokenizer):
    _, tokenizer = model_and_tokenizer
    ids = tokenizer(SENTENCE)["input_ids"]
    assert 0 not in ids  # no BOS/EOS added
    assert tokenizer.decode(ids) == SENTENCE
    assert len(SENTENCE) / len(ids) > 3.0  # a real BPE, not bytes


def test_forward_predicts_better_than_uniform(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    ids = tokenizer(SENTENCE, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids, use_cache=False).logits
    assert logits.shape == (1, ids.shape[1], 8192)
    assert torch.isfinite(logits).all()
    nll = torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:]).item()
    assert nll < math.log(8192) - 1, nll
