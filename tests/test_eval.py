"""mamba-qpass eval: the shipped lambada_openai task, a user's own task folder, lm-eval glue, metrics, the command."""

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from transformers import MambaForCausalLM, PreTrainedTokenizerFast

from mamba_qpass.cli import main
from mamba_qpass.eval.harness import run_lm_eval, shipped_task_config
from mamba_qpass.eval.results import DocResult, acc_stderr, agreement, task_metrics
from models import random_mamba

VOCAB = 50280  # the GPT-NeoX tokenizer's ids, padded as in the mamba-*-hf models
# lm-eval's lambada_openai fields that name the data source; every other field must be lm-eval's
DATA_FIELDS = {"dataset_path", "dataset_name", "dataset_kwargs"}


@pytest.fixture(scope="module")
def tokenizer(data_dir):
    return PreTrainedTokenizerFast(
        tokenizer_file=str(data_dir / "tokenizers" / "gpt-neox-20b" / "tokenizer.json"),
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
    )


@pytest.fixture(scope="module")
def lambada(data_dir) -> list[str]:
    with open(data_dir / "lambada_openai" / "lambada_test.jsonl", encoding="utf-8") as lines:
        return [json.loads(line)["text"] for line in lines]


def test_shipped_task_is_lm_eval_lambada_openai_reading_the_shared_file(data_dir):
    lm_eval = pytest.importorskip("lm_eval")

    ours = shipped_task_config("lambada_openai")
    theirs = yaml.safe_load((Path(lm_eval.__file__).parent / "tasks/lambada/lambada_openai.yaml").read_text())
    assert {k: v for k, v in ours.items() if k not in DATA_FIELDS} == {
        k: v for k, v in theirs.items() if k not in DATA_FIELDS
    }
    assert theirs["dataset_path"] == "EleutherAI/lambada_openai"
    assert ours["dataset_path"] == "json" and ours["test_split"] == "test"
    path = data_dir / ours["dataset_kwargs"]["data_files"]["test"]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    # the checksum the EleutherAI/lambada_openai dataset card publishes for this file
    assert digest.startswith("4aa8d02c") and digest.endswith("fabdb226")


def _direct_loglikelihood(model, tokenizer, context: str, continuation: str) -> tuple[float, bool]:
    """log p(continuation | context) and is_greedy from one HF forward, tokenised as lm-eval does for
    a context without trailing space: the continuation's tokens follow the context's."""
    context_ids, ids = tokenizer.encode(context), tokenizer.encode(context + continuation)
    assert ids[: len(context_ids)] == context_ids
    with torch.no_grad():
        logits = model(torch.tensor([ids[:-1]]), use_cache=False).logits[0, len(context_ids) - 1 :]
    targets = torch.tensor(ids[len(context_ids) :])
    loglikelihood = F.log_softmax(logits, -1).gather(-1, targets[:, None]).sum().item()
    return loglikelihood, bool((logits.argmax(-1) == targets).all())


def test_loglikelihoods_equal_a_direct_computation_with_the_hf_model(data_dir, tokenizer, lambada):
    pytest.importorskip("lm_eval")
    import mamba_qpass as qpass

    model = random_mamba(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, initializer_range=0.02)
    docs = run_lm_eval(qpass.apply(model, "fp"), tokenizer, ("lambada_openai",), str(data_dir), 4, 3, False)
    for doc in docs["lambada_openai"].docs:
        # lm-eval's lambada_openai: context = the text up to its last space, target = " " + the last word
        context, _, last_word = lambada[doc.doc_id].rpartition(" ")
        loglikelihood, is_greedy = _direct_loglikelihood(model, tokenizer, context, " " + last_word)
        assert doc.loglikelihood == pytest.approx(loglikelihood, rel=1e-5)
        assert doc.is_greedy == is_greedy and doc.correct == is_greedy


def test_acc_stderr_is_lm_eval_mean_stderr():
    pytest.importorskip("lm_eval")
    from lm_eval.api.metrics import mean_stderr

    values = [1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    p, n = sum(values) / len(values), len(values)
    assert acc_stderr(values) == mean_stderr(values)
    assert acc_stderr(values) == pytest.approx(math.sqrt(p * (1 - p) / (n - 1)), rel=1e-12)


def test_metrics_and_agreement_from_documents():
    docs = tuple(DocResult(i, c, -float(i + 1), c) for i, c in enumerate([True, False, True, True]))
    reference = tuple(DocResult(i, c) for i, c in enumerate([True, True, False, True]))
    metrics = task_metrics(docs)
    assert metrics["acc"] == 0.75 and metrics["perplexity"] == pytest.approx(math.exp(2.5))
    assert agreement(docs, reference) == 0.5
    assert agreement(docs, docs) == 1.0


def test_document_json_keeps_the_fields_of_its_task_type():
    assert DocResult(3, True, -1.5, True).to_json() == {"doc_id": 3, "correct": True, "loglikelihood": -1.5, "is_greedy": True}
    choice = DocResult(4, False, choice_loglikelihoods=(-2.0, -1.0), target=0).to_json()
    assert choice == {"doc_id": 4, "correct": False, "choice_loglikelihoods": (-2.0, -1.0), "target": 0}


def test_missing_lm_eval_names_the_fix(monkeypatch, tokenizer):
    import sys

    monkeypatch.setitem(sys.modules, "lm_eval", None)
    with pytest.raises(ImportError, match=r"evaluation needs lm-eval .*pip install -e '\.\[eval\]'"):
        run_lm_eval(None, tokenizer, ("lambada_openai",), None, 4, 4, False)


def test_a_missing_task_folder_is_named(tokenizer, tmp_path):
    pytest.importorskip("lm_eval")
    with pytest.raises(FileNotFoundError, match="task folder .*nowhere does not exist: --include-path"):
        run_lm_eval(None, tokenizer, ("my_task",), None, 4, 4, False, include_path=str(tmp_path / "nowhere"))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    folder = tmp_path_factory.mktemp("eval") / "model"
    random_mamba(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, initializer_range=0.02).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _eval(model_dir, out: Path, *extra: str, modes: str = "fp,w8a8,fp32_ssm,float_sim") -> dict:
    argv = [
        "eval", "--model", str(model_dir), "--modes", modes, "--limit", "5", "--batch-size", "3",
        "--calib-samples", "4", "--calib-len", "32", "--quiet", "--output", str(out), *extra,
    ]
    assert main(argv) == 0
    return json.loads(out.read_text())


LAMBADA_ARGS = ("--ppl-tokens", "200", "--context-len", "64", "--stride", "32")


@pytest.fixture(scope="module")
def report(model_dir, tmp_path_factory) -> dict:
    pytest.importorskip("lm_eval")
    return _eval(model_dir, tmp_path_factory.mktemp("eval") / "report.json", *LAMBADA_ARGS)


def _without_timings(report: dict) -> dict:
    report = {**report, "calibration_seconds": None}
    report["results"] = {m: {**r, "seconds": None} for m, r in report["results"].items()}
    return report


def test_eval_command_reports_every_mode_and_is_deterministic(model_dir, report, tmp_path, capsys):
    again = _eval(model_dir, tmp_path / "again.json", *LAMBADA_ARGS)
    assert _without_timings(again) == _without_timings(report)
    table = capsys.readouterr().out
    assert all(mode in table for mode in ("fp", "w8a8", "fp32_ssm", "float_sim")) and "agree w8a8 %" in table
    for result in report["results"].values():
        task = result["tasks"]["lambada_openai"]
        assert task["docs"] == 5 and len(task["documents"]) == 5
        assert set(task["documents"][0]) == {"doc_id", "correct", "loglikelihood", "is_greedy"}
        assert task["acc"] == task["lm_eval_metrics"]["acc,none"]
        assert result["text_perplexity"]["tokens"] == 199
    assert report["results"]["fp"]["tasks"]["lambada_openai"]["delta_acc_vs_fp"] == 0.0
    assert report["results"]["w8a8"]["tasks"]["lambada_openai"]["agreement_with_reference"] == 1.0


def test_eval_of_a_saved_model_scores_what_calibrating_again_scores(model_dir, report, tmp_path, capsys):
    """quantize --save, then eval --model of that folder: no float model, no calibration, and the same
    per-document results and perplexity as the eval that calibrated the same way."""
    saved = tmp_path / "saved-w8a8"
    assert main([
        "quantize", "--model", str(model_dir), "--modes", "w8a8", "--calib-samples", "4", "--calib-len", "32",
        "--eval-tokens", "100", "--context-len", "64", "--stride", "32", "--quiet", "--save", str(saved),
    ]) == 0
    out = tmp_path / "saved.json"
    argv = ["eval", "--model", str(saved), "--limit", "5", "--batch-size", "3", "--quiet", "--output", str(out)]
    assert main([*argv, *LAMBADA_ARGS]) == 0
    again = json.loads(out.read_text())
    assert again["modes"] == ["w8a8"] and again["calibration_seconds"] is None
    ours, theirs = again["results"]["w8a8"], report["results"]["w8a8"]
    assert ours["tasks"]["lambada_openai"]["documents"] == theirs["tasks"]["lambada_openai"]["documents"]
    assert ours["text_perplexity"] == theirs["text_perplexity"]
    capsys.readouterr()
    assert main([*argv, "--modes", "fp,w8a8"]) == 2
    assert "holds the w8a8 model only" in capsys.readouterr().err


@pytest.mark.slow
def test_eval_compiled_scores_what_the_graph_scores(model_dir, report, tmp_path):
    """--compile runs float_sim through inductor (every rounding kept): the same documents and perplexity."""
    compiled = _eval(model_dir, tmp_path / "compiled.json", *LAMBADA_ARGS, "--compile", modes="float_sim")
    ours, theirs = compiled["results"]["float_sim"], report["results"]["float_sim"]
    assert compiled["config"]["compile"] is True
    assert ours["tasks"]["lambada_openai"]["documents"] == theirs["tasks"]["lambada_openai"]["documents"]
    assert ours["text_perplexity"] == theirs["text_perplexity"]


CHOICE_DOCS = [
    {"question": "The cat sat on the", "choices": [" mat", " moon", " idea"], "label": 0},
    {"question": "Water boils at one hundred", "choices": [" degrees", " apples"], "label": 0},
    {"question": "She opened the door and walked", "choices": [" in", " out", " away", " slowly"], "label": 2},
]


def write_local_task(folder: Path, name: str, docs: list[dict], **fields) -> None:
    """A user's own lm-eval task over a local JSON file, as lm-eval documents them: ``docs`` as the test
    split, and the task's own ``fields`` (output type, prompt, target, metrics)."""
    folder.mkdir()
    data = folder / "docs.jsonl"
    data.write_text("".join(json.dumps(doc) + "\n" for doc in docs))
    config = {"task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
              "test_split": "test", **fields}
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(config))


def _write_choice_task(folder: Path) -> None:
    """A multiple-choice task of CHOICE_DOCS."""
    write_local_task(
        folder, "my_choices", CHOICE_DOCS,
        output_type="multiple_choice",
        doc_to_text="{{question}}",
        doc_to_choice="{{choices}}",
        doc_to_target="label",
        target_delimiter="",
        metric_list=[{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
    )


def test_eval_command_runs_a_users_task_folder_and_keeps_every_choice(model_dir, tokenizer, tmp_path):
    pytest.importorskip("lm_eval")
    _write_choice_task(tmp_path / "tasks")
    args = ("--include-path", str(tmp_path / "tasks"), "--tasks", "my_choices", "--ppl-tokens", "0")
    report = _eval(model_dir, tmp_path / "choices.json", *args, modes="fp,w8a8")
    model = MambaForCausalLM.from_pretrained(model_dir).eval()
    for mode in ("fp", "w8a8"):
        task = report["results"][mode]["tasks"]["my_choices"]
        assert task["docs"] == len(CHOICE_DOCS) and task["perplexity"] is None
        for doc, expected in zip(task["documents"], CHOICE_DOCS):
            assert set(doc) == {"doc_id", "correct", "choice_loglikelihoods", "target"}
            assert doc["target"] == expected["label"]
            lls = doc["choice_loglikelihoods"]
            assert len(lls) == len(expected["choices"])
            assert doc["correct"] == (max(range(len(lls)), key=lls.__getitem__) == expected["label"])
            if mode == "fp":
                direct = [_direct_loglikelihood(model, tokenizer, expected["question"], c)[0] for c in expected["choices"]]
                assert lls == pytest.approx(direct, rel=1e-5)
    fp_lls = [d["choice_loglikelihoods"] for d in report["results"]["fp"]["tasks"]["my_choices"]["documents"]]
    w8a8_lls = [d["choice_loglikelihoods"] for d in report["results"]["w8a8"]["tasks"]["my_choices"]["documents"]]
    assert fp_lls != w8a8_lls  # each mode's own scores, not a copy of one


def test_an_unknown_task_names_where_tasks_come_from(model_dir, tmp_path, capsys):
    pytest.importorskip("lm_eval")
    _write_choice_task(tmp_path / "tasks")
    argv = ["eval", "--model", str(model_dir), "--modes", "fp", "--include-path", str(tmp_path / "tasks"),
            "--tasks", "my_choice", "--ppl-tokens", "0", "--quiet"]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "unknown task(s) my_choice: not shipped (lambada_openai), not in the included folders" in error
    assert str(tmp_path / "tasks") in error
