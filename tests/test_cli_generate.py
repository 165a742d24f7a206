"""mamba-qpass generate: streams the prompt and its continuation, reports tokens/s; from a float model
(calibrating) or from a folder qpass.save wrote, which continue the prompt identically."""

import json

import pytest
import torch
from transformers import AutoTokenizer

import mamba_qpass as qpass
from mamba_qpass.cli import build_parser, main
from mamba_qpass.data import default_model
from models import random_mamba

PROMPT = "The river ran past the mill and"
CALIBRATION = ("--calib-samples", "4", "--calib-len", "32")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("generate") / "model"
    tokenizer = AutoTokenizer.from_pretrained(default_model())
    random_mamba(vocab_size=tokenizer.vocab_size, tie_word_embeddings=False).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _generate(capsys, out, *argv) -> tuple[dict, str]:
    capsys.readouterr()
    assert main(["generate", "--prompt", PROMPT, "--quiet", "--device", "cpu", "--output", str(out), *argv]) == 0
    return json.loads(out.read_text()), capsys.readouterr().out


def test_generate_streams_the_text_and_reports_tokens_per_second(model_dir, data_dir, tmp_path, capsys):
    results, printed = _generate(capsys, tmp_path / "float.json", "--model", str(model_dir), "--max-new-tokens", "6", *CALIBRATION)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompt_ids = tokenizer(PROMPT)["input_ids"]
    assert results["mode"] == "w8a8" and results["tokens"][: len(prompt_ids)] == prompt_ids
    assert results["new_tokens"] == len(results["tokens"]) - len(prompt_ids) == 6
    text = tokenizer.decode(results["tokens"])
    assert printed.startswith(text) and results["text"] == text
    assert f"6 new tokens after a {len(prompt_ids)}-token prompt" in printed and "tokens/s" in printed
    assert results["tokens_per_second"] > 0

    saved = tmp_path / "saved"
    assert main(["quantize", "--model", str(model_dir), "--modes", "w8a8", *CALIBRATION, "--eval-tokens", "100",
                 "--context-len", "32", "--stride", "16", "--quiet", "--save", str(saved)]) == 0
    again, _ = _generate(capsys, tmp_path / "saved.json", "--model", str(saved), "--max-new-tokens", "6")
    assert again["tokens"] == results["tokens"], "the saved model continues as the calibrated one did"
    expected = qpass.load(saved).generate(torch.tensor([prompt_ids]), max_new_tokens=6, eos_token_id=tokenizer.eos_token_id)
    assert again["tokens"] == expected[0].tolist()

    sampled, _ = _generate(capsys, tmp_path / "s1.json", "--model", str(saved), "--max-new-tokens", "6", "--do-sample", "--seed", "1")
    resampled, _ = _generate(capsys, tmp_path / "s2.json", "--model", str(saved), "--max-new-tokens", "6", "--do-sample", "--seed", "1")
    assert sampled["tokens"] == resampled["tokens"] != results["tokens"]

    assert main(["generate", "--prompt", PROMPT, "--model", str(saved), "--mode", "float_sim", "--quiet"]) == 2
    assert "holds the w8a8 model only" in capsys.readouterr().err


def test_generate_on_the_embedded_checkpoint(data_dir, tmp_path, capsys):
    results, printed = _generate(capsys, tmp_path / "default.json", "--max-new-tokens", "3", "--calib-samples", "2")
    assert results["model"] == default_model() and results["new_tokens"] == 3
    assert printed.startswith(PROMPT) and len(results["text"]) > len(PROMPT)


def test_every_generate_flag_is_explained():
    parser = build_parser()._subparsers._group_actions[0].choices["generate"]
    unexplained = [a.option_strings for a in parser._actions if a.option_strings and not a.help]
    assert not unexplained
    assert {"--prompt", "--mode", "--max-new-tokens", "--model", "--device", "--quiet"} <= {
        flag for a in parser._actions for flag in a.option_strings
    }
