"""lm-eval tasks shipped with mamba-qpass that read the shared data folder instead of the hub.

Each task is ``tasks/<name>/<name>.yaml``, an lm-eval task config whose ``dataset_kwargs.data_files``
are paths relative to the data folder. lm-eval needs absolute paths, so ``write_resolved_tasks``
writes a copy with the paths resolved into a folder that lm-eval's ``TaskManager(include_path=...)``
then reads.
"""

from pathlib import Path

import yaml

TASKS_DIR = Path(__file__).resolve().parent / "tasks"


def local_task_names() -> list[str]:
    return sorted(p.parent.name for p in TASKS_DIR.glob("*/*.yaml") if p.stem == p.parent.name)


def shipped_task_config(name: str) -> dict:
    """The task's YAML as shipped (data files relative to the data folder)."""
    path = TASKS_DIR / name / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"no local task {name!r}: local tasks are {', '.join(local_task_names())}")
    return yaml.safe_load(path.read_text())


def task_data_files(name: str, data_dir: Path) -> dict[str, Path]:
    """split -> absolute path of the file the task reads, checked to exist."""
    relative = shipped_task_config(name)["dataset_kwargs"]["data_files"]
    files = {split: data_dir / path for split, path in relative.items()}
    for path in files.values():
        if not path.is_file():
            raise FileNotFoundError(
                f"task {name} reads {path}, which does not exist: pass the shared data folder with --data-dir "
                "(or set MAMBA_QPASS_DATA)"
            )
    return files


def write_resolved_tasks(names: list[str], data_dir: Path, folder: Path) -> None:
    """Write each named local task into ``folder/<name>/<name>.yaml`` with absolute data paths."""
    for name in names:
        config = shipped_task_config(name)
        files = task_data_files(name, data_dir)
        config["dataset_kwargs"] = {**config["dataset_kwargs"], "data_files": {s: str(p) for s, p in files.items()}}
        (folder / name).mkdir(parents=True, exist_ok=True)
        (folder / name / f"{name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
