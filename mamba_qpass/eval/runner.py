"""Evaluate precision modes side by side on identical inputs.

One calibration serves every mode (``calibrate`` once, ``apply_mode`` per mode); every mode scores the
same task documents and the same Gutenberg token windows. Per-document results are kept, so besides
acc and perplexity the report gives each mode's acc change against ``fp`` and the fraction of documents
on which its correctness equals the reference mode's (``w8a8`` by default).
"""

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import torch

from mamba_qpass.api import calibrate, mode_model
from mamba_qpass.modes import FLOAT_MODE, check_mode
from mamba_qpass.perplexity import perplexity
from mamba_qpass.quant_config import QuantConfig
from mamba_qpass.task_results import TaskRun, agreement, task_metrics

BACKENDS = ("lm-eval", "native")


@dataclass(frozen=True)
class EvalConfig:
    tasks: tuple[str, ...] = ("lambada_openai",)
    backend: str = "lm-eval"  # or "native": our own loop, per document identical to lm-eval (lambada_openai)
    limit: int | None = None  # the first N documents of each task
    batch_size: int = 32
    data_dir: str | None = None  # the shared data folder (local tasks); None: find_data_dir()
    context_len: int = 512  # Gutenberg perplexity windows
    stride: int = 256
    reference: str = "w8a8"  # per-document agreement is measured against this mode
    progress: bool = True

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}: choose one of {', '.join(BACKENDS)}")
        if not self.tasks:
            raise ValueError("no tasks given: name at least one, e.g. lambada_openai")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be a positive number of documents, got {self.limit}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")


def _run_tasks(model, tokenizer, config: EvalConfig, mode: str) -> dict[str, TaskRun]:
    args = (model, tokenizer, config.tasks, config.data_dir, config.limit, config.batch_size, config.progress)
    if config.backend == "native":
        from mamba_qpass.native_tasks import run_native

        return run_native(*args, label=mode)
    from mamba_qpass.lm_eval_backend import run_lm_eval

    return run_lm_eval(*args)


def _task_entry(run: TaskRun, fp_run: TaskRun | None, reference_run: TaskRun | None) -> dict:
    metrics = task_metrics(run.docs)
    fp_acc = task_metrics(fp_run.docs)["acc"] if fp_run else None
    return {
        **metrics,
        "delta_acc_vs_fp": None if fp_acc is None or metrics["acc"] is None else metrics["acc"] - fp_acc,
        "agreement_with_reference": agreement(run.docs, reference_run.docs) if reference_run else None,
        "lm_eval_metrics": run.reported,
        "documents": [d.to_json() for d in run.docs],
    }


def _json_config(config: QuantConfig) -> dict:
    return {k: str(v) if isinstance(v, torch.dtype) else v for k, v in asdict(config).items()}


def evaluate_modes(
    model,
    tokenizer,
    modes: list[str],
    calibration: Iterable | None = None,
    config: EvalConfig = EvalConfig(),
    quant_config: QuantConfig | None = None,
    text_tokens: torch.Tensor | None = None,
    on_mode_done: Callable[[str, dict], None] | None = None,
) -> dict:
    """Evaluate ``model`` (a transformers MambaForCausalLM) in each of ``modes`` on ``config.tasks``
    and, when ``text_tokens`` (a 1-D token stream) is given, its perplexity there.

    calibration: texts (with ``tokenizer``) or token tensors; needed unless ``modes`` is only ``fp``.
    on_mode_done(mode, summary) is called as each mode finishes (summary: seconds and metrics).
    Returns a JSON-ready dict; ``results[mode]["tasks"][task]["documents"]`` holds per-document results.
    """
    for mode in modes:
        check_mode(mode)
    if len(set(modes)) != len(modes):
        raise ValueError(f"modes must not repeat, got {modes}")
    quant_modes = [m for m in modes if m != FLOAT_MODE]
    if quant_modes and calibration is None:
        raise ValueError(
            f"modes {quant_modes} need calibration data: pass calibration=texts (with tokenizer) or token tensors"
        )
    start = time.perf_counter()
    calibrated = calibrate(model, calibration, tokenizer, quant_config, config.progress) if quant_modes else None
    calibration_seconds = time.perf_counter() - start

    runs: dict[str, dict[str, TaskRun]] = {}
    results: dict[str, dict] = {}
    for mode in modes:
        start = time.perf_counter()
        qmodel = mode_model(model, mode, calibrated)
        runs[mode] = _run_tasks(qmodel, tokenizer, config, mode)
        text = None
        if text_tokens is not None:
            text = perplexity(
                qmodel, text_tokens, config.context_len, config.stride, config.batch_size, config.progress,
                desc=f"perplexity {mode}",
            )
        del qmodel  # one mode's graph in memory at a time
        results[mode] = {"seconds": time.perf_counter() - start, "text_perplexity": text}
        if on_mode_done:
            metrics = {task: task_metrics(run.docs) for task, run in runs[mode].items()}
            on_mode_done(mode, {**results[mode], "tasks": metrics})

    for mode in modes:
        results[mode]["tasks"] = {
            task: _task_entry(run, runs.get(FLOAT_MODE, {}).get(task), runs.get(config.reference, {}).get(task))
            for task, run in runs[mode].items()
        }
    return {
        "modes": list(modes),
        "config": {**asdict(config), "tasks": list(config.tasks)},
        "quant_config": _json_config(quant_config or QuantConfig()) if quant_modes else None,
        "calibration_seconds": calibration_seconds if quant_modes else None,
        "results": results,
    }


def _num(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def _pct(fraction, spec: str = ".2f") -> str:
    return "-" if fraction is None else format(100 * fraction, spec)


def format_table(report: dict) -> str:
    """One row per mode and task: acc ± stderr (%), the task's perplexity, acc change vs fp (points),
    agreement with the reference mode (% of documents), Gutenberg perplexity and the mode's seconds."""
    reference = report["config"]["reference"]
    lines = [
        f"{'mode':<10} {'task':<16} {'acc % ± stderr':>15} {'ppl':>10} {'Δacc vs fp':>10} "
        f"{'agree ' + reference + ' %':>14} {'text ppl':>9} {'seconds':>8}"
    ]
    for mode, result in report["results"].items():
        for i, (task, t) in enumerate(result["tasks"].items()):
            first = i == 0  # the mode's own columns go on its first row
            acc = "-" if t["acc"] is None else f"{_pct(t['acc'])} ± {_pct(t['acc_stderr'])}"
            text = result["text_perplexity"]
            lines.append(
                f"{mode if first else '':<10} {task:<16} {acc:>15} {_num(t['perplexity'], '.3f'):>10} "
                f"{_pct(t['delta_acc_vs_fp'], '+.2f'):>10} {_pct(t['agreement_with_reference']):>14} "
                f"{_num(text['perplexity'] if text and first else None, '.3f', ''):>9} "
                f"{_num(result['seconds'] if first else None, '.1f', ''):>8}"
            )
    return "\n".join(lines)
