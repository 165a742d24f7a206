"""Per-document task results and the metrics computed from them.

lm-eval's samples become per-document results; the metrics are computed here, from those, with
lm-eval's formulas: acc = mean of the per-document 0/1 accuracy,
its stderr = sample standard deviation / sqrt(n) (lm-eval's ``mean_stderr``; for 0/1 values that is
sqrt(p (1 - p) / (n - 1))), perplexity = exp(-mean log-likelihood of the target).
"""

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class DocResult:
    doc_id: int
    correct: bool | None  # the task's per-document acc; None for a task without one
    loglikelihood: float | None = None  # of the target given the context (loglikelihood tasks)
    is_greedy: bool | None = None  # every target token is the argmax (loglikelihood tasks)
    choice_loglikelihoods: tuple[float, ...] | None = None  # of each choice (multiple-choice tasks)
    target: int | str | None = None  # the gold choice as the task states it (multiple-choice tasks)

    def to_json(self) -> dict:
        """doc_id, correct and the fields the task type fills."""
        fields = asdict(self)
        return {k: v for k, v in fields.items() if k in ("doc_id", "correct") or v is not None}


@dataclass(frozen=True)
class TaskRun:
    docs: tuple[DocResult, ...]  # in doc_id order
    reported: dict  # the metrics as lm-eval itself aggregated them, for audit


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def acc_stderr(values: list[float]) -> float | None:
    if len(values) < 2:
        return None
    mu = _mean(values)
    return math.sqrt(sum((x - mu) ** 2 for x in values) / (len(values) - 1)) / math.sqrt(len(values))


def task_metrics(docs: tuple[DocResult, ...]) -> dict:
    """``{"docs", "acc", "acc_stderr", "perplexity"}``; a metric the documents cannot give is None."""
    correct = [float(d.correct) for d in docs if d.correct is not None]
    lls = [d.loglikelihood for d in docs if d.loglikelihood is not None]
    has_acc = bool(docs) and len(correct) == len(docs)
    has_ll = bool(docs) and len(lls) == len(docs)
    return {
        "docs": len(docs),
        "acc": _mean(correct) if has_acc else None,
        "acc_stderr": acc_stderr(correct) if has_acc else None,
        "perplexity": math.exp(-_mean(lls)) if has_ll else None,
    }


def agreement(docs: tuple[DocResult, ...], reference: tuple[DocResult, ...]) -> float | None:
    """Fraction of documents whose correctness equals the reference's (same documents, same order)."""
    if [d.doc_id for d in docs] != [d.doc_id for d in reference]:
        raise ValueError("agreement needs both runs on the same documents")
    if not docs or any(d.correct is None for d in (*docs, *reference)):
        return None
    return sum(a.correct == b.correct for a, b in zip(docs, reference)) / len(docs)
