import json
import lzma
import re

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from mamba_qpass import data
from mamba_qpass.cli import build_parser, main
from models import random_mamba


@pytest.fixture
def model_dir(tmp_path, data_dir):
    model = random_mamba(vocab_size=50280, hidden_size=32, num_hidden_layers=2, initializer_range=0.02)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(data_dir / "tokenizers" / "gpt-neox-20b" / "tokenizer.json"),
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
    )
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def test_quantize_command_reports_every_mode(model_dir, tmp_path, capsys):
    out = tmp_path / "results.json"
    argv = [
        "quantize", "--model", str(model_dir), "--modes", "fp,qdq,w8a8", "--calib-samples", "4", "--calib-len", "32",
        "--eval-tokens", "300", "--context-len", "64", "--stride", "32", "--quiet", "--output", str(out),
    ]
    assert main(argv) == 0
    results = json.loads(out.read_text())
    assert list(results["modes"]) == ["fp", "qdq", "w8a8"]
    assert results["modes"]["fp"]["top1_agreement_vs_fp"] == 1.0
    assert results["modes"]["w8a8"]["tokens"] == results["modes"]["fp"]["tokens"] == 299
    assert 1.0 < results["modes"]["w8a8"]["perplexity"] < float("inf")
    assert results["calibration"]["sequences"] == 4 and results["calibration"]["seq_len"] == 32
    assert "calibrated on 4 sequences x 32 tokens (128 tokens; --calib-samples, --calib-len)" in capsys.readouterr().out


def test_quantize_calibrates_on_fewer_sequences_by_default_and_says_so():
    from mamba_qpass.cli import QUICK_CALIB_SAMPLES

    assert build_parser().parse_args(["quantize"]).calib_samples == QUICK_CALIB_SAMPLES == 64
    assert build_parser().parse_args(["quantize"]).eval_tokens == 8192
    assert build_parser().parse_args(["eval"]).calib_samples == build_parser().parse_args(["compare"]).calib_samples == 512


def test_quantize_saves_a_model_that_reloads_to_the_reported_perplexity(model_dir, tmp_path, data_dir, capsys):
    import mamba_qpass as qpass
    from mamba_qpass import data
    from mamba_qpass.eval.perplexity import perplexity

    out, saved = tmp_path / "results.json", tmp_path / "saved-w8a8"
    argv = [
        "quantize", "--model", str(model_dir), "--modes", "w8a8", "--calib-samples", "4", "--calib-len", "32",
        "--eval-tokens", "300", "--context-len", "64", "--stride", "32", "--quiet", "--output", str(out),
        "--save", str(saved),
    ]
    assert main(argv) == 0
    results = json.loads(out.read_text())
    assert results["saved"] == str(saved) and f"saved to {saved}" in capsys.readouterr().out
    reloaded = qpass.load(saved)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(saved)
    text = "".join(data.gutenberg_texts(data.data_file(data.VALIDATION_FILE, data_dir), max_chars=300 * 8))
    tokens = torch.tensor(tokenizer(text)["input_ids"][:300])
    assert perplexity(reloaded, tokens, 64, 32, progress=False)["perplexity"] == results["modes"]["w8a8"]["perplexity"]


def test_save_needs_exactly_one_quantised_mode(tmp_path, capsys):
    argv = ["quantize", "--modes", "w8a8,float_sim", "--save", str(tmp_path / "saved")]
    assert main(argv) == 2
    assert "--save writes one model: give exactly one quantised mode" in capsys.readouterr().err
    assert not (tmp_path / "saved").exists()


def test_unknown_mode_is_an_argument_error(capsys):
    with pytest.raises(SystemExit):
        main(["quantize", "--modes", "w4a4"])
    assert "valid modes are fp" in capsys.readouterr().err
    for command in ("compare", "eval"):
        with pytest.raises(SystemExit):
            main([command, "--reference", "int4"])
        assert "unknown mode 'int4': valid modes are fp" in capsys.readouterr().err


def test_missing_model_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["quantize", "--model", str(tmp_path / "nowhere")]) == 2
    assert f"mamba-qpass: error: model folder not found: {tmp_path / 'nowhere'}" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--calib-samples", "--calib-len", "--context-len", "--stride"])
def test_counts_below_one_are_refused_naming_the_flag(flag, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["quantize", flag, "0"])
    assert exit_.value.code == 2
    assert f"argument {flag}: must be at least 1, got 0" in capsys.readouterr().err


def test_help_is_prose_and_every_flag_is_explained(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "``" not in capsys.readouterr().out
    for command in ("quantize", "compare", "eval"):
        parser = build_parser()._subparsers._group_actions[0].choices[command]
        unexplained = [a.option_strings for a in parser._actions if a.option_strings and not a.help]
        assert not unexplained, f"{command}: {unexplained} have no help text"


def test_compare_command_on_lambada_passages(model_dir, tmp_path, capsys):
    out = tmp_path / "compare.json"
    argv = [
        "compare", "--model", str(model_dir), "--modes", "w8a8,fp32_ssm,float_sim", "--passages", "4",
        "--seq-len", "32", "--calib-samples", "4", "--calib-len", "32", "--quiet", "--output", str(out),
    ]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    assert report["reference"] == "w8a8"
    assert all(d["exact_match_pct"] == 100.0 for d in report["tensors"]["float_sim"].values())
    assert "float_sim vs w8a8" in capsys.readouterr().out


def _progress_bars(stderr: str) -> list[str]:
    """The progress-bar lines (tqdm's) of a captured stderr, each redraw its own line."""
    lines = re.split(r"[\r\n]+", stderr)
    return [line for line in lines if re.search(r"\d+%\||\|\s*\d+/\d+ \[|it/s\]|s/it\]|tok/s\]", line)]


QUICK = {
    "quantize": ["--modes", "w8a8", "--eval-tokens", "100", "--context-len", "64", "--stride", "32"],
    "compare": ["--modes", "w8a8,float_sim", "--passages", "2", "--seq-len", "32"],
    "eval": ["--modes", "fp,w8a8", "--limit", "2", "--ppl-tokens", "100", "--context-len", "64", "--stride", "32"],
}


@pytest.mark.parametrize("command", sorted(QUICK))
def test_quiet_leaves_only_the_weight_loading_bar(command, model_dir, capfd):
    if command == "eval":
        pytest.importorskip("lm_eval")
    argv = [command, "--model", str(model_dir), "--calib-samples", "2", "--calib-len", "32", *QUICK[command]]
    assert main(argv) == 0
    loud = _progress_bars(capfd.readouterr().err)
    assert any(not bar.startswith("Loading weights") for bar in loud)  # the check sees our own bars
    assert main([*argv, "--quiet"]) == 0
    quiet = _progress_bars(capfd.readouterr().err)
    assert quiet and all(bar.startswith("Loading weights") for bar in quiet), quiet


def _data_dir_with_calibration_file(tmp_path, data_dir, content: bytes):
    """A data folder like the shared one whose calibration file holds ``content``."""
    folder = tmp_path / "data"
    (folder / "gutenberg").mkdir(parents=True)
    (folder / data.CALIBRATION_FILE).write_bytes(content)
    (folder / data.VALIDATION_FILE).symlink_to(data_dir / data.VALIDATION_FILE)
    return folder


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty"),
        (lzma.compress(b""), "holds no text"),
        (bytes(range(256)) * 4, "is not xz-compressed JSON lines"),  # binary, not xz
        (lzma.compress(bytes(range(128, 256)) * 4), "is not xz-compressed JSON lines"),  # xz of binary
        (lzma.compress(b"plain words, not JSON\n"), "is not xz-compressed JSON lines"),
    ],
    ids=["empty", "xz-of-nothing", "binary", "xz-of-binary", "not-json"],
)
def test_a_bad_calibration_file_is_one_line_and_exit_2(content, message, model_dir, tmp_path, data_dir, capsys):
    folder = _data_dir_with_calibration_file(tmp_path, data_dir, content)
    argv = ["quantize", "--model", str(model_dir), "--data-dir", str(folder), "--calib-samples", "2", "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err  # one line, before any weights load
    assert err.startswith(f"mamba-qpass: error: {folder / data.CALIBRATION_FILE} {message}") and err.count("\n") == 1


def test_a_missing_data_folder_is_one_line_and_exit_2(model_dir, tmp_path, capsys):
    for command in ("quantize", "compare", "eval"):
        assert main([command, "--model", str(model_dir), "--data-dir", str(tmp_path / "nodata"), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err == f"mamba-qpass: error: data folder {tmp_path / 'nodata'} does not exist\n"


def test_a_binary_or_short_text_file_for_compare_is_refused(model_dir, tmp_path, capsys):
    binary, short = tmp_path / "binary.bin", tmp_path / "short.txt"
    binary.write_bytes(bytes(range(128, 256)))
    short.write_text("too short")
    for path, message in ((binary, "is not UTF-8 text"), (short, "holds fewer than --seq-len 32 tokens")):
        argv = ["compare", "--model", str(model_dir), "--text-file", str(path), "--seq-len", "32", "--quiet"]
        assert main(argv) == 2
        err = capsys.readouterr().err.splitlines()  # the tokenizer counts the tokens: the model loads first
        assert err[-1].startswith(f"mamba-qpass: error: --text-file {path} {message}")
        assert not any(line.startswith("Traceback") for line in err)


def test_compare_of_a_saved_calibration_reports_what_calibrating_again_reports(model_dir, tmp_path, data_dir, capsys):
    import mamba_qpass as qpass
    from mamba_qpass.loading import load_pretrained

    common = ["--modes", "w8a8,fp32_ssm,float_sim", "--passages", "2", "--seq-len", "32", "--quiet"]
    fresh, again = tmp_path / "fresh.json", tmp_path / "again.json"
    argv = ["compare", "--model", str(model_dir), "--calib-samples", "4", "--calib-len", "32", *common]
    assert main([*argv, "--output", str(fresh)]) == 0
    model, tokenizer = load_pretrained(str(model_dir))
    texts = list(data.gutenberg_texts(data.data_file(data.CALIBRATION_FILE, data_dir), max_chars=4 * 32 * 8))
    calibrated = qpass.calibrate(model, texts, tokenizer, qpass.QuantConfig(num_samples=4, seq_len=32), progress=False)
    saved = qpass.save(calibrated, tmp_path / "calibration", tokenizer=tokenizer)
    assert main(["compare", "--model", str(saved), *common, "--output", str(again)]) == 0
    assert json.loads(again.read_text()) == json.loads(fresh.read_text())
    capsys.readouterr()
    assert main(["compare", "--model", str(saved), "--modes", "fp,w8a8", "--quiet"]) == 2
    assert "holds a calibration, from which every quantised mode is built, but not fp" in capsys.readouterr().err


def test_compare_of_a_saved_one_mode_model_is_refused_with_the_reason(model_dir, tmp_path, capsys):
    saved = tmp_path / "saved-w8a8"
    assert main([
        "quantize", "--model", str(model_dir), "--modes", "w8a8", "--calib-samples", "2", "--calib-len", "32",
        "--eval-tokens", "100", "--context-len", "64", "--stride", "32", "--quiet", "--save", str(saved),
    ]) == 0
    capsys.readouterr()
    assert main(["compare", "--model", str(saved), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mamba-qpass: error: {saved} holds the w8a8 model only") and "qpass.calibrate" in err
