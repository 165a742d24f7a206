"""Runs lm-eval tasks on a (quantised) model through lm-eval's HFLM and keeps per-document results.

Three places a task can come from, in this order: the tasks mamba-qpass ships (``tasks/<name>/<name>.yaml``,
lm-eval task configs whose data files are paths relative to the shared data folder, so they work offline),
the user's own task folders (``include_path``, as lm-eval's ``--include_path``), and lm-eval's own task
definitions (whose datasets need the hub). lm-eval needs absolute data paths, so a shipped task is written
with its paths resolved into a temporary folder that lm-eval's ``TaskManager`` then reads.

Bootstrapping is off (``bootstrap_iters=0``): the metrics and the acc stderr are computed from the
per-document results (``results``).
"""

import contextlib
import io
import tempfile
from pathlib import Path

import yaml

from mamba_qpass.data import find_data_dir
from mamba_qpass.eval.results import DocResult, TaskRun

TASKS_DIR = Path(__file__).resolve().parent / "tasks"


def shipped_task_names() -> list[str]:
    return sorted(p.parent.name for p in TASKS_DIR.glob("*/*.yaml") if p.stem == p.parent.name)


def shipped_task_config(name: str) -> dict:
    """The task's YAML as shipped (data files relative to the data folder)."""
    path = TASKS_DIR / name / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"no shipped task {name!r}: shipped tasks are {', '.join(shipped_task_names())}")
    return yaml.safe_load(path.read_text())


def task_data_files(name: str, data_dir: Path) -> dict[str, Path]:
    """split -> absolute path of the file a shipped task reads, checked to exist."""
    relative = shipped_task_config(name)["dataset_kwargs"]["data_files"]
    files = {split: data_dir / path for split, path in relative.items()}
    for path in files.values():
        if not path.is_file():
            raise FileNotFoundError(
                f"task {name} reads {path}, which does not exist: pass the shared data folder with --data-dir "
                "(or set MAMBA_QPASS_DATA)"
            )
    return files


def _write_resolved_tasks(names: list[str], data_dir: Path, folder: Path) -> None:
    """Write each named shipped task into ``folder/<name>/<name>.yaml`` with absolute data paths."""
    for name in names:
        config = shipped_task_config(name)
        files = task_data_files(name, data_dir)
        config["dataset_kwargs"] = {**config["dataset_kwargs"], "data_files": {s: str(p) for s, p in files.items()}}
        (folder / name).mkdir(parents=True, exist_ok=True)
        (folder / name / f"{name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def _import_lm_eval():
    try:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError as err:
        raise ImportError(f"evaluation needs lm-eval ({err}): pip install -e '.[eval]'") from err
    return simple_evaluate, HFLM, TaskManager


def _task_manager(TaskManager, tasks: tuple[str, ...], include_paths: list[Path]):
    """A TaskManager that knows every task in ``tasks``; lm-eval's own index is slow to build, so it is
    read only when the shipped and included folders do not hold them all."""
    for folder in include_paths:
        if not folder.is_dir():
            raise FileNotFoundError(f"task folder {folder} does not exist: --include-path takes a folder of task YAMLs")
    manager = TaskManager(include_path=[str(p) for p in include_paths], include_defaults=False)
    if all(manager.match_tasks([task]) for task in tasks):
        return manager
    manager = TaskManager(include_path=[str(p) for p in include_paths], include_defaults=True)
    unknown = [task for task in tasks if not manager.match_tasks([task])]
    if unknown:
        where = ", ".join(str(p) for p in include_paths[1:]) or "no --include-path"
        raise ValueError(
            f"unknown task(s) {', '.join(unknown)}: not shipped ({', '.join(shipped_task_names())}), not in "
            f"the included folders ({where}) and not an lm-eval task"
        )
    return manager


def _pairs(responses: list) -> list[tuple[float, bool | None]]:
    """(log-likelihood, is_greedy) per request of a document; lm-eval gives a pair per loglikelihood
    request, or the bare log-likelihood for some filters."""
    return [(float(r[0]), bool(r[1])) if isinstance(r, (tuple, list)) else (float(r), None) for r in responses]


def _doc_result(sample: dict, output_type: str) -> DocResult:
    correct = bool(sample["acc"]) if "acc" in sample else None
    if output_type == "loglikelihood":
        ((loglikelihood, is_greedy),) = _pairs(sample["filtered_resps"])
        return DocResult(sample["doc_id"], correct, loglikelihood, is_greedy)
    if output_type == "multiple_choice":
        choices = tuple(ll for ll, _ in _pairs(sample["filtered_resps"]))
        return DocResult(sample["doc_id"], correct, choice_loglikelihoods=choices, target=sample["target"])
    return DocResult(sample["doc_id"], correct)


def run_lm_eval(
    model,
    tokenizer,
    tasks: tuple[str, ...],
    data_dir: str | None,
    limit: int | None,
    batch_size: int,
    progress: bool,
    include_path: str | None = None,
) -> dict[str, TaskRun]:
    simple_evaluate, HFLM, TaskManager = _import_lm_eval()
    shipped = [t for t in tasks if t in shipped_task_names()]
    with tempfile.TemporaryDirectory(prefix="mamba_qpass_tasks_") as folder:
        if shipped:
            _write_resolved_tasks(shipped, find_data_dir(data_dir), Path(folder))
        included = [Path(folder), *([Path(include_path)] if include_path else [])]
        manager = _task_manager(TaskManager, tasks, included)
        # lm-eval's progress bars and warnings print to stderr and cannot be switched off otherwise
        quiet = contextlib.nullcontext() if progress else contextlib.redirect_stderr(io.StringIO())
        with quiet:
            lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
            out = simple_evaluate(
                model=lm, tasks=list(tasks), task_manager=manager, limit=limit, bootstrap_iters=0, log_samples=True
            )
    runs = {}
    for task in out["samples"]:  # a group or tag name stands for its tasks, each reported on its own
        output_type = out["configs"][task]["output_type"]
        samples = sorted(out["samples"][task], key=lambda s: s["doc_id"])
        reported = {k: v for k, v in out["results"][task].items() if k not in ("name", "alias")}
        runs[task] = TaskRun(tuple(_doc_result(s, output_type) for s in samples), reported)
    return runs
