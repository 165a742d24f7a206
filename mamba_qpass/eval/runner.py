"""Evaluate precision modes side by side on identical inputs.

One calibration serves every mode (``build_modes``); every mode scores the same lm-eval task documents
and the same Gutenberg token windows. Per-document results are kept, so besides
acc and perplexity the report gives each mode's acc change against ``fp`` and the fraction of documents
on which its correctness equals the reference mode's (``w8a8`` by default).
"""

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import torch

from mamba_qpass.api import build_modes
from mamba_qpass.eval.harness import run_lm_eval
from mamba_qpass.eval.perplexity import perplexity
from mamba_qpass.eval.results import TaskRun, agreement, task_metrics
from mamba_qpass.hf import QuantizedMambaForCausalLM
from mamba_qpass.modes import MODES
from mamba_qpass.quant_config import QuantConfig


@dataclass(frozen=True)
class EvalConfig:
    tasks: tuple[str, ...] = ("lambada_openai",)
    include_path: str | None = None  # a folder of the user's own lm-eval task YAMLs
    limit: int | None = None  # the first N documents of each task
    batch_size: int = 32
    data_dir: str | None = None  # the shared data folder (shipped tasks); None: find_data_dir()
    context_len: int = 512  # Gutenberg perplexity windows
    stride: int = 256
    reference: str = "w8a8"  # per-document agreement is measured against this mode
    progress: bool = True
    compile: bool = False  # each mode's forward through inductor with its rounding kept (QuantizedMambaForCausalLM.compile)

    def __post_init__(self):
        if not self.tasks:
            raise ValueError("no tasks given: name at least one, e.g. lambada_openai")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be a positive number of documents, got {self.limit}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")


def _run_tasks(model, tokenizer, config: EvalConfig) -> dict[str, TaskRun]:
    return run_lm_eval(
        model, tokenizer, config.tasks, config.data_dir, config.limit, config.batch_size, config.progress,
        config.include_path,
    )


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
    start = time.perf_counter()
    graphs = build_modes(model, modes, calibration, tokenizer, quant_config, config.progress)
    calibration_seconds = time.perf_counter() - start
    calibrated = any(MODES[mode].needs_calibration for mode in modes)
    # A generator, so one mode's graph is in memory at a time.
    models = ((mode, QuantizedMambaForCausalLM(graph, model.config, mode)) for mode, graph in graphs)
    results = _evaluate(models, modes, tokenizer, config, text_tokens, on_mode_done)
    if not calibrated:
        return _report(modes, config, None, None, results)
    return _report(modes, config, _json_config(quant_config or QuantConfig()), calibration_seconds, results)


def evaluate_saved(
    qmodel: QuantizedMambaForCausalLM,
    tokenizer,
    config: EvalConfig = EvalConfig(),
    text_tokens: torch.Tensor | None = None,
    on_mode_done: Callable[[str, dict], None] | None = None,
) -> dict:
    """``evaluate_modes`` for a model ``qpass.load`` returned: its one mode, no calibration to run."""
    modes = [qmodel.mode]
    return _report(modes, config, None, None, _evaluate([(qmodel.mode, qmodel)], modes, tokenizer, config,
                                                         text_tokens, on_mode_done))


def _report(modes, config: EvalConfig, quant_config: dict | None, calibration_seconds, results: dict) -> dict:
    return {
        "modes": list(modes),
        "config": {**asdict(config), "tasks": list(config.tasks)},
        "quant_config": quant_config,
        "calibration_seconds": calibration_seconds,
        "results": results,
    }


def _evaluate(models, modes, tokenizer, config: EvalConfig, text_tokens, on_mode_done) -> dict:
    runs: dict[str, dict[str, TaskRun]] = {}
    results: dict[str, dict] = {}
    start = time.perf_counter()
    for mode, qmodel in models:
        if config.compile:
            qmodel.compile()
        runs[mode] = _run_tasks(qmodel, tokenizer, config)
        text = None
        if text_tokens is not None:
            text = perplexity(
                qmodel, text_tokens, config.context_len, config.stride, config.batch_size, config.progress,
                desc=f"perplexity {mode}",
            )
        del qmodel
        results[mode] = {"seconds": time.perf_counter() - start, "text_perplexity": text}
        if on_mode_done:
            metrics = {task: task_metrics(run.docs) for task, run in runs[mode].items()}
            on_mode_done(mode, {**results[mode], "tasks": metrics})
        start = time.perf_counter()

    for mode in modes:
        results[mode]["tasks"] = {
            task: _task_entry(run, runs.get("fp", {}).get(task), runs.get(config.reference, {}).get(task))
            for task, run in runs[mode].items()
        }
    return results


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
