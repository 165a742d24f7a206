"""Defaults of the command line and examples: the project's own trained checkpoint and the shared data."""

from pathlib import Path

import torch

from mamba_qpass.data import find_data_dir

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CHECKPOINT = REPO_ROOT / "checkpoints" / "gutenberg-mamba-25m"
CALIBRATION_FILE = "gutenberg/train-00.jsonl.xz"
VALIDATION_FILE = "gutenberg/val.jsonl.xz"
LAMBADA_FILE = "lambada_openai/lambada_test.jsonl"
# Characters read for the default calibration recipe: enough for 512 x 512 tokens at ~4 chars/token.
CALIBRATION_CHARS = 2_000_000


def default_model() -> str:
    if not DEFAULT_CHECKPOINT.is_dir():
        raise FileNotFoundError(
            f"the embedded checkpoint {DEFAULT_CHECKPOINT} is missing (a source checkout has it): pass --model "
            "<local folder or hub id>"
        )
    return str(DEFAULT_CHECKPOINT)


def data_file(relative: str, data_dir: str | None = None) -> Path:
    path = find_data_dir(data_dir) / relative
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: is --data-dir the shared data folder?")
    return path


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
