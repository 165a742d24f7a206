"""Runs lm-eval tasks on a (quantised) model through lm-eval's HFLM and keeps per-document results.

Tasks that mamba-qpass ships (``local_tasks``) are read from the shared data folder, so they work
offline; any other lm-eval task name loads lm-eval's own definition (its dataset needs the hub).
Bootstrapping is off (``bootstrap_iters=0``): the metrics and the acc stderr are computed from the
per-document results (``task_results``).
"""

import contextlib
import io
import tempfile
from pathlib import Path

from mamba_qpass.data import find_data_dir
from mamba_qpass.local_tasks import local_task_names, write_resolved_tasks
from mamba_qpass.task_results import DocResult, TaskRun


def _import_lm_eval():
    try:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError as err:
        raise ImportError(
            f"the lm-eval backend needs lm-eval ({err}): pip install -e '.[eval]', or pass --backend native "
            "(lambada_openai only)"
        ) from err
    return simple_evaluate, HFLM, TaskManager


def _doc_result(sample: dict, output_type: str) -> DocResult:
    correct = bool(sample["acc"]) if "acc" in sample else None
    if output_type != "loglikelihood":
        return DocResult(sample["doc_id"], correct)
    loglikelihood, is_greedy = sample["filtered_resps"][0]
    return DocResult(sample["doc_id"], correct, float(loglikelihood), bool(is_greedy))


def run_lm_eval(
    model, tokenizer, tasks: tuple[str, ...], data_dir: str | None, limit: int | None, batch_size: int, progress: bool
) -> dict[str, TaskRun]:
    simple_evaluate, HFLM, TaskManager = _import_lm_eval()
    local = [t for t in tasks if t in local_task_names()]
    with tempfile.TemporaryDirectory(prefix="mamba_qpass_tasks_") as folder:
        if local:
            write_resolved_tasks(local, find_data_dir(data_dir), Path(folder))
        # lm-eval's own task index is only needed (and slow to build) for tasks we do not ship
        manager = TaskManager(include_path=folder, include_defaults=len(local) < len(tasks))
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
