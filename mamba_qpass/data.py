"""Where the project's shared data lives: a flag, then ``MAMBA_QPASS_DATA``, then a ``shared/data``
folder beside or above the current directory or the package (the layout of a development checkout)."""

import os
from pathlib import Path

ENV_VAR = "MAMBA_QPASS_DATA"


def find_data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The data folder, or a FileNotFoundError that says how to point at it."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_dir():
            raise FileNotFoundError(f"data folder {path} does not exist")
        return path
    if os.environ.get(ENV_VAR):
        path = Path(os.environ[ENV_VAR])
        if not path.is_dir():
            raise FileNotFoundError(f"{ENV_VAR}={path} is not a folder")
        return path
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        for folder in (start, *start.parents):
            candidate = folder / "shared" / "data"
            if candidate.is_dir():
                return candidate
    raise FileNotFoundError(
        f"no shared data folder found: pass its path (e.g. --data-dir ../shared/data) or set {ENV_VAR}"
    )
