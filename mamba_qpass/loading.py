"""Load a transformers Mamba model and its tokenizer from a local folder or a hub id."""

import json
from pathlib import Path

import torch

from mamba_qpass.errors import UnsupportedModelError

SAVED_MODEL_METADATA = "mamba_qpass.json"  # the file that marks a folder written by mamba_qpass.save


def _looks_like_a_path(name: str) -> bool:
    """A hub id is ``name`` or ``namespace/name``; anything else is meant as a folder."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def _check_local_folder(folder: Path) -> None:
    """Refuse, before any weights load, what is not a transformers Mamba folder, naming the fix."""
    if not folder.is_dir():
        raise FileNotFoundError(
            f"model folder not found: {folder} (pass a folder holding config.json and the weights, "
            "or a hub id such as state-spaces/mamba-130m-hf)"
        )
    if (folder / SAVED_MODEL_METADATA).exists():
        raise UnsupportedModelError(
            f"{folder} holds a model quantised and saved by mamba-qpass, not a float model: "
            f"load it with mamba_qpass.load({str(folder)!r})"
        )
    config_file = folder / "config.json"
    if not config_file.exists():
        raise FileNotFoundError(f"{config_file} is missing: a model folder needs the config.json transformers writes")
    model_type = json.loads(config_file.read_text()).get("model_type")
    if model_type != "mamba":
        raise UnsupportedModelError(
            f"{folder} holds a {model_type!r} model; mamba-qpass quantises Mamba-1 models "
            "(transformers' MambaForCausalLM, model_type 'mamba')"
        )


def check_model_source(name_or_path: str) -> None:
    """What ``load_pretrained`` refuses before loading (a missing folder, another architecture, a saved
    quantised model), on its own: the command line checks it before reading any data file."""
    local = Path(name_or_path).expanduser()
    if local.exists() or _looks_like_a_path(str(name_or_path)):
        _check_local_folder(local)


def load_pretrained(name_or_path: str, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """``(model, tokenizer)`` through ``from_pretrained``: a local folder (config.json, safetensors,
    tokenizer files) works offline; a hub id works where a network exists. The model is in eval mode.
    A missing folder, a folder of another architecture and a saved quantised model are refused with the
    fix named, before any weights load."""
    from transformers import AutoTokenizer, MambaForCausalLM

    check_model_source(name_or_path)
    model = MambaForCausalLM.from_pretrained(name_or_path, dtype=dtype).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    return model, tokenizer
