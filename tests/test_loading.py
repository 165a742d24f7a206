import torch
from transformers import PreTrainedTokenizerFast

import mamba_qpass as qpass
from mamba_qpass.loading import load_pretrained
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
