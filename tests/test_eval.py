"""mamba-qpass eval: the local lambada_openai task, the lm-eval and native backends, metrics, the command."""

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from transformers import MambaConfig, PreTrainedTokenizerFast
from transformers.modeling_outputs import CausalLMOutput

from mamba_qpass.cli import main
from mamba_qpass.local_tasks import shipped_task_config
from mamba_qpass.loglikelihood import Request, encode_request, score_requests
from mamba_qpass.native_tasks import lambada_split, run_native
from mamba_qpass.task_results import DocResult, acc_stderr, agreement, task_metrics
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


class BigramLM(nn.Module):
    """A stand-in causal LM for comparing the backends: small deterministic random logits plus a large
    bump on a memorised next token, so that some LAMBADA targets are greedy and some are not."""

    def __init__(self, memorised: list[list[int]]):
        super().__init__()
        self.config = MambaConfig(vocab_size=VOCAB, hidden_size=8, num_hidden_layers=1)
        generator = torch.Generator().manual_seed(0)
        self.embed = nn.Parameter(torch.randn(VOCAB, 4, generator=generator), requires_grad=False)
        self.head = nn.Parameter(torch.randn(4, VOCAB, generator=generator), requires_grad=False)
        following = torch.full((VOCAB,), -1)
        for tokens in memorised:
            following[torch.tensor(tokens[:-1])] = torch.tensor(tokens[1:])
        self.register_buffer("following", following)

    @property
    def device(self) -> torch.device:
        return self.embed.device

    def tie_weights(self) -> None:
        """lm-eval calls this; nothing to tie."""

    def forward(self, input_ids: torch.Tensor, attention_mask=None) -> CausalLMOutput:
        logits = self.embed[input_ids] @ self.head
        following = self.following[input_ids]
        known = following >= 0
        logits[(*known.nonzero(as_tuple=True), following[known])] += 20.0
        return CausalLMOutput(logits=logits)


def test_local_task_is_lm_eval_lambada_openai_reading_the_shared_file(data_dir):
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


def test_lambada_split_is_lm_eval_doc_to_text_and_target_on_every_document(lambada):
    pytest.importorskip("lm_eval")
    from lm_eval.utils import env  # the Jinja environment lm-eval renders task templates with

    config = shipped_task_config("lambada_openai")
    to_text, to_target = env.from_string(config["doc_to_text"]), env.from_string(config["doc_to_target"])
    for text in lambada:
        assert lambada_split(text) == (to_text.render(text=text), to_target.render(text=text))


def test_request_tokenisation_moves_trailing_spaces_and_prefixes_empty_contexts(tokenizer):
    plain = encode_request(tokenizer, "The quick brown", " fox")
    assert plain == Request(tuple(tokenizer.encode("The quick brown")), (30013,))
    assert encode_request(tokenizer, "The quick brown ", "fox") == plain
    assert encode_request(tokenizer, "", " fox") == Request((tokenizer.eos_token_id,), (30013,))


def test_identical_inputs_are_scored_once_and_results_come_back_in_order():
    rows = []

    class Counting(BigramLM):
        def forward(self, input_ids, attention_mask=None):
            rows.extend(input_ids.tolist())
            return super().forward(input_ids)

    model = Counting([[5, 6, 7]])
    requests = [Request((5,), (6, 7)), Request((1, 2, 3), (4,)), Request((5,), (6, 7))]
    scores = score_requests(model, requests, batch_size=8, max_len=2048, progress=False)
    assert rows == [[1, 2, 3], [5, 6, 0]]  # longest first, right-padded with 0, duplicate scored once
    assert scores[0] == scores[2] and scores[0][1] is True and scores[1][1] is False


def test_lm_eval_and_native_backends_give_identical_documents(data_dir, tokenizer, lambada):
    pytest.importorskip("lm_eval")
    from mamba_qpass.lm_eval_backend import run_lm_eval

    model = BigramLM([tokenizer.encode(text) for text in lambada[:12:2]])  # every other document memorised
    args = (("lambada_openai",), str(data_dir), 12, 5, False)
    native = run_native(model, tokenizer, *args)["lambada_openai"]
    via_lm_eval = run_lm_eval(model, tokenizer, *args)["lambada_openai"]
    assert via_lm_eval.docs == native.docs
    metrics = task_metrics(native.docs)
    assert 0.0 < metrics["acc"] < 1.0  # the comparison covers greedy and non-greedy documents
    assert metrics["acc"] == via_lm_eval.reported["acc,none"]
    assert metrics["perplexity"] == via_lm_eval.reported["perplexity,none"]


def test_loglikelihoods_equal_a_direct_computation_with_the_hf_model(data_dir, tokenizer, lambada):
    pytest.importorskip("lm_eval")
    import mamba_qpass as qpass
    from mamba_qpass.lm_eval_backend import run_lm_eval

    model = random_mamba(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, initializer_range=0.02)
    docs = run_lm_eval(qpass.apply(model, "fp"), tokenizer, ("lambada_openai",), str(data_dir), 4, 3, False)
    for doc in docs["lambada_openai"].docs:
        context, target = lambada_split(lambada[doc.doc_id])
        context_ids, ids = tokenizer.encode(context), tokenizer.encode(context + target)
        assert ids[: len(context_ids)] == context_ids
        with torch.no_grad():
            logits = model(torch.tensor([ids[:-1]]), use_cache=False).logits[0, len(context_ids) - 1 :]
        targets = torch.tensor(ids[len(context_ids) :])
        expected = F.log_softmax(logits, -1).gather(-1, targets[:, None]).sum().item()
        assert doc.loglikelihood == pytest.approx(expected, rel=1e-5)
        assert doc.is_greedy == bool((logits.argmax(-1) == targets).all())


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


def test_native_backend_names_the_fix_for_other_tasks(tokenizer):
    with pytest.raises(ValueError, match="--backend lm-eval"):
        run_native(BigramLM([]), tokenizer, ("hellaswag",), None, 4, 4, False)


def test_missing_lm_eval_names_the_fix(monkeypatch, tokenizer):
    import sys

    from mamba_qpass.lm_eval_backend import run_lm_eval

    monkeypatch.setitem(sys.modules, "lm_eval", None)
    with pytest.raises(ImportError, match=r"pip install -e '\.\[eval\]'.*--backend native"):
        run_lm_eval(BigramLM([]), tokenizer, ("lambada_openai",), None, 4, 4, False)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    folder = tmp_path_factory.mktemp("eval") / "model"
    random_mamba(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, initializer_range=0.02).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _eval(model_dir, out: Path, backend: str, modes: str = "fp,w8a8,fp32_ssm,float_sim") -> dict:
    argv = [
        "eval", "--model", str(model_dir), "--modes", modes, "--limit", "5",
        "--batch-size", "3", "--calib-samples", "4", "--calib-len", "32", "--ppl-tokens", "200",
        "--context-len", "64", "--stride", "32", "--backend", backend, "--quiet", "--output", str(out),
    ]
    assert main(argv) == 0
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def native_report(model_dir, tmp_path_factory) -> dict:
    return _eval(model_dir, tmp_path_factory.mktemp("eval") / "native.json", "native")


def _without_timings(report: dict) -> dict:
    report = {**report, "calibration_seconds": None}
    report["results"] = {m: {**r, "seconds": None} for m, r in report["results"].items()}
    return report


def test_eval_command_reports_every_mode_and_is_deterministic(model_dir, native_report, tmp_path, capsys):
    assert _without_timings(_eval(model_dir, tmp_path / "again.json", "native")) == _without_timings(native_report)
    table = capsys.readouterr().out
    assert all(mode in table for mode in ("fp", "w8a8", "fp32_ssm", "float_sim")) and "agree w8a8 %" in table
    for result in native_report["results"].values():
        task = result["tasks"]["lambada_openai"]
        assert task["docs"] == 5 and len(task["documents"]) == 5
        assert set(task["documents"][0]) == {"doc_id", "correct", "loglikelihood", "is_greedy"}
        assert result["text_perplexity"]["tokens"] == 199
    assert native_report["results"]["fp"]["tasks"]["lambada_openai"]["delta_acc_vs_fp"] == 0.0
    assert native_report["results"]["w8a8"]["tasks"]["lambada_openai"]["agreement_with_reference"] == 1.0


def test_eval_command_backends_give_identical_documents_in_every_mode(model_dir, native_report, tmp_path):
    pytest.importorskip("lm_eval")
    # a float and an int8 graph: the other modes reach the backends the same way
    via_lm_eval = _eval(model_dir, tmp_path / "lm_eval.json", "lm-eval", modes="fp,w8a8")
    for mode in ("fp", "w8a8"):
        documents = native_report["results"][mode]["tasks"]["lambada_openai"]["documents"]
        assert documents == via_lm_eval["results"][mode]["tasks"]["lambada_openai"]["documents"]
