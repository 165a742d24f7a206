"""lm-eval's generate_until tasks run through ``HFLM(pretrained=qmodel)``: a local task written here, whose
generations must be the quantised model's own greedy continuations (batched, left-padded by lm-eval)."""

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

import mamba_qpass as qpass
from mamba_qpass.data import default_model
from models import random_mamba
from test_eval import write_local_task

DOCS = [
    {"question": "The river ran past the mill and", "answer": " the"},
    {"question": "Once upon a time", "answer": " there"},
    {"question": "He said", "answer": " that"},
    {"question": "In the morning the sun rose over the hills, and the old shepherd", "answer": " went"},
]
MAX_GEN_TOKS = 6


def _write_generation_task(folder: Path) -> None:
    write_local_task(
        folder, "my_generation", DOCS,
        output_type="generate_until",
        doc_to_text="{{question}}",
        doc_to_target="{{answer}}",
        generation_kwargs={"until": ["\n\n"], "max_gen_toks": MAX_GEN_TOKS, "do_sample": False},
        metric_list=[{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
    )


def test_generate_until_through_hflm_gives_the_models_greedy_continuations(tmp_path):
    pytest.importorskip("lm_eval")
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    tokenizer = AutoTokenizer.from_pretrained(default_model())
    model = random_mamba(vocab_size=tokenizer.vocab_size, tie_word_embeddings=False)
    qmodel = qpass.apply(model, "w8a8", [d["question"] for d in DOCS] * 4, tokenizer, progress=False)
    _write_generation_task(tmp_path / "tasks")
    out = simple_evaluate(
        model=HFLM(pretrained=qmodel, tokenizer=tokenizer, batch_size=3),
        tasks=["my_generation"],
        task_manager=TaskManager(include_path=str(tmp_path / "tasks"), include_defaults=False),
        bootstrap_iters=0,
        log_samples=True,
    )
    samples = sorted(out["samples"]["my_generation"], key=lambda s: s["doc_id"])
    assert len(samples) == len(DOCS)
    for sample in samples:
        ids = torch.tensor([tokenizer.encode(DOCS[sample["doc_id"]]["question"])])
        new = qmodel.generate(ids, max_new_tokens=MAX_GEN_TOKS, eos_token_id=tokenizer.eos_token_id)[0, ids.shape[1] :]
        expected = tokenizer.decode(new, skip_special_tokens=True).split("\n\n")[0]
        (generated,) = sample["resps"][0]
        assert generated == expected and generated.strip()
