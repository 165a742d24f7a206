"""Where the defaults come from: the project's own checkpoint, the shared data folder and its files.

The data folder is a flag, then ``MAMBA_QPASS_DATA``, then a ``shared/data`` folder beside or above the
current directory or the package (the layout of a development checkout). The default checkpoint is
``checkpoints/gutenberg-mamba-25m`` of a source checkout: the package's own (an editable install),
else one in the current directory or above it; an installed wheel does not carry it.
"""

import json
import lzma
import os
from collections.abc import Iterator
from pathlib import Path

import torch

DATA_ENV_VAR = "MAMBA_QPASS_DATA"
CHECKPOINT = Path("checkpoints") / "gutenberg-mamba-25m"
CALIBRATION_FILE = "gutenberg/train-00.jsonl.xz"
VALIDATION_FILE = "gutenberg/val.jsonl.xz"
LAMBADA_FILE = "lambada_openai/lambada_test.jsonl"

_PACKAGE_DIR = Path(__file__).resolve().parent


def _candidates(relative: Path, starts: tuple[Path, ...]) -> Iterator[Path]:
    """``relative`` under each start folder and each folder above it."""
    for start in starts:
        for folder in (start, *start.parents):
            yield folder / relative


def find_data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The data folder, or a FileNotFoundError that says how to point at it."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_dir():
            raise FileNotFoundError(f"data folder {path} does not exist")
        return path
    if os.environ.get(DATA_ENV_VAR):
        path = Path(os.environ[DATA_ENV_VAR])
        if not path.is_dir():
            raise FileNotFoundError(f"{DATA_ENV_VAR}={path} is not a folder")
        return path
    for candidate in _candidates(Path("shared") / "data", (Path.cwd(), _PACKAGE_DIR)):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"no shared data folder found: pass its path (e.g. --data-dir ../shared/data) or set {DATA_ENV_VAR}"
    )


def data_file(relative: str, data_dir: str | None = None) -> Path:
    path = find_data_dir(data_dir) / relative
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: is --data-dir the shared data folder?")
    return path


def default_model() -> str:
    """The default checkpoint's folder, or a FileNotFoundError that says how to name a model."""
    for candidate in _candidates(CHECKPOINT, (_PACKAGE_DIR, Path.cwd())):
        if (candidate / "config.json").is_file():
            return str(candidate)
    raise FileNotFoundError(
        f"the default checkpoint {CHECKPOINT} was not found (it ships with the source checkout, not with an "
        "installed package): run from the checkout, or pass --model <local folder or hub id>"
    )


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class DataFileError(ValueError):
    """A data file that is empty or not in its expected format; the message names the file."""


def gutenberg_texts(path: Path, max_chars: int | None = None) -> Iterator[str]:
    """Book texts of a ``{"title","author","text"}`` jsonl.xz file, in file order; stops after
    ``max_chars`` characters in all (the last text cut short). A file that is not xz-compressed JSON
    lines with a "text" field, or that holds no text, raises DataFileError."""
    if path.stat().st_size == 0:
        raise DataFileError(f"{path} is empty: point --data-dir at the shared data folder, or restore the file")
    remaining = max_chars
    chars = 0
    try:
        with lzma.open(path, "rt", encoding="utf-8") as lines:
            for line in lines:
                if not line.strip():
                    continue
                text = json.loads(line)["text"]
                if not isinstance(text, str):
                    raise TypeError(f'"text" holds a {type(text).__name__}, not a string')
                if remaining is not None:
                    text = text[:remaining]
                    remaining -= len(text)
                chars += len(text)
                yield text
                if remaining is not None and remaining <= 0:
                    return
    except (lzma.LZMAError, EOFError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        reason = f"no {err} field" if isinstance(err, KeyError) else str(err)
        raise DataFileError(
            f'{path} is not xz-compressed JSON lines of {{"text": ...}} records ({reason}): '
            "point --data-dir at the shared data folder, or restore the file"
        ) from err
    if not chars:
        raise DataFileError(f"{path} holds no text: point --data-dir at the shared data folder, or restore the file")


def lambada_texts(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line)["text"] for line in lines if line.strip()]
