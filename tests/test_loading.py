import json

import pytest
import torch
from transformers import PreTrainedTokenizerFast

import mamba_qpass as qpass
from mamba_qpass.errors import UnsupportedModelError
from mamba_qpass.loading import _looks_like_a_path, load_pretrained
from models import hf_logits, random_mamba


def test_local_folder_loads_and_captures(tmp_path, data_dir):
    model = random_mamba(vocab_size=50280, hidden_size=16, num_hidden_layers=1)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(data_dir / "tokenizers" / "gpt-neox-20b" / "tokenizer.json"),
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
    )
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert list(tmp_path.glob("*.safetensors"))

    loaded, loaded_tokenizer = load_pretrained(str(tmp_path))
    ids = loaded_tokenizer("The quick brown fox", return_tensors="pt").input_ids
    assert ids.tolist() == [[510, 3158, 8516, 30013]]
    assert loaded.dtype == torch.float32 and not loaded.training
    expected = hf_logits(model, ids)
    torch.testing.assert_close(hf_logits(loaded, ids), expected, rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(qpass.capture(loaded)(ids), expected, rtol=1e-5, atol=1e-5)


def test_missing_local_folder_is_reported_as_a_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="model folder not found: .*nowhere"):
        load_pretrained(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        load_pretrained("./models/not-here")


def test_hub_ids_are_left_to_transformers():
    assert not _looks_like_a_path("state-spaces/mamba-130m-hf")
    assert not _looks_like_a_path("mamba-130m-hf")
    assert _looks_like_a_path("runs/today/mamba") and _looks_like_a_path("~/mamba")


def test_a_folder_of_another_architecture_is_refused_before_any_weights_load(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))  # and no weights at all
    with pytest.raises(UnsupportedModelError, match="holds a 'llama' model; mamba-qpass quantises Mamba-1"):
        load_pretrained(str(tmp_path))


def test_a_folder_without_config_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        load_pretrained(str(tmp_path))


def test_a_saved_quantised_model_points_to_qpass_load(tmp_path):
    model = random_mamba(hidden_size=16, num_hidden_layers=1)
    g = torch.Generator().manual_seed(0)
    qmodel = qpass.apply(model, "w8a8", calibration=[torch.randint(0, 97, (2, 16), generator=g)], progress=False)
    folder = qpass.save(qmodel, tmp_path / "saved")
    with pytest.raises(UnsupportedModelError, match=r"saved by mamba-qpass.*mamba_qpass.load"):
        load_pretrained(str(folder))
