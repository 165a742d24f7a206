"""Load a transformers Mamba model and its tokenizer from a local folder or a hub id."""

import torch


def load_pretrained(name_or_path: str, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """``(model, tokenizer)`` through ``from_pretrained``: a local folder (config.json, safetensors,
    tokenizer files) works offline; a hub id works where a network exists. The model is in eval mode."""
    from transformers import AutoTokenizer, MambaForCausalLM

    model = MambaForCausalLM.from_pretrained(name_or_path, dtype=dtype).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    return model, tokenizer
