"""Tasks scored without lm-eval, per document identical to lm-eval's scoring (see loglikelihood.py).

lambada_openai: one document per line of the file the shipped task YAML names; context = the text up to
its last space, target = " " + its last word (lm-eval's ``doc_to_text`` / ``doc_to_target``:
``text.split(' ')[:-1]|join(' ')`` and ``' ' + text.split(' ')[-1]``).
"""

from pathlib import Path

from mamba_qpass.data import find_data_dir
from mamba_qpass.local_tasks import task_data_files
from mamba_qpass.loglikelihood import encode_request, max_length, score_requests
from mamba_qpass.task_results import DocResult, TaskRun
from mamba_qpass.text_data import lambada_texts

NATIVE_TASKS = ("lambada_openai",)


def lambada_split(text: str) -> tuple[str, str]:
    context, _, last_word = text.rpartition(" ")
    return context, " " + last_word


def _lambada_texts(data_dir: Path, limit: int | None) -> list[str]:
    return lambada_texts(task_data_files("lambada_openai", data_dir)["test"])[:limit]


def run_native(
    model, tokenizer, tasks: tuple[str, ...], data_dir: str | None, limit: int | None, batch_size: int, progress: bool,
    label: str = "",
) -> dict[str, TaskRun]:
    unknown = [t for t in tasks if t not in NATIVE_TASKS]
    if unknown:
        raise ValueError(
            f"the native backend scores {', '.join(NATIVE_TASKS)} only, not {', '.join(unknown)}: "
            "use --backend lm-eval for other tasks"
        )
    runs = {}
    for task in tasks:
        texts = _lambada_texts(find_data_dir(data_dir), limit)
        requests = [encode_request(tokenizer, *lambada_split(text)) for text in texts]
        scores = score_requests(
            model, requests, batch_size, max_length(model.config, tokenizer), progress, f"{task} {label}".strip()
        )
        docs = tuple(DocResult(i, greedy, ll, greedy) for i, (ll, greedy) in enumerate(scores))
        runs[task] = TaskRun(docs, reported={})
    return runs
