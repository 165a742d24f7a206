"""The recipe behind the default checkpoint (examples/train_tokenizer.py, examples/train_small_mamba.py),
smoke-tested on the CPU: a tiny run end to end, and the training-only dropout."""

import copy
import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
import train_small_mamba  # noqa: E402
import train_tokenizer  # noqa: E402


def _tiny_model(seed=0):
    from transformers import MambaConfig, MambaForCausalLM

    torch.manual_seed(seed)
    config = MambaConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, state_size=4, expand=2, conv_kernel=4)
    return MambaForCausalLM(config).eval()


def test_dropout_acts_in_training_only_and_stays_out_of_the_checkpoint():
    plain = _tiny_model()
    model = copy.deepcopy(plain)
    handles = train_small_mamba.add_residual_dropout(model, 0.5)
    assert len(handles) == 1 + 2  # the embedding and each layer's mixer
    ids = torch.randint(0, 64, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, plain(ids).logits, rtol=0, atol=0)
        model.train()
        torch.manual_seed(1)
        first = model(ids).logits
        torch.manual_seed(2)
        second = model(ids).logits
    assert not torch.equal(first, second)
    assert model.state_dict().keys() == plain.state_dict().keys()


def test_tiny_run_end_to_end(tmp_path, data_dir):
    from transformers import AutoTokenizer, MambaForCausalLM

    tok_dir, run_dir = tmp_path / "tokenizer", tmp_path / "run"
    common = ["--data-dir", str(data_dir), "--max-books", "2"]
    train_tokenizer.main([*common, "--out", str(tok_dir), "--vocab-size", "300", "--chars-per-book", "20000"])
    train_small_mamba.main([
        *common, "--tokenizer", str(tok_dir), "--out", str(run_dir), "--d-model", "32", "--n-layer", "2",
        "--seq-len", "64", "--batch-size", "4", "--max-steps", "6", "--warmup", "2", "--val-every", "3",
        "--log-every", "3", "--val-seqs", "4", "--device", "cpu",
    ])

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["tokens_seen"] == 6 * 4 * 64
    assert summary["args"]["dropout"] == 0.1 and summary["args"]["min_lr_ratio"] == 0.02
    log = [json.loads(line) for line in (run_dir / "run.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "val_loss" in r] == [0, 3, 6]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in log if "loss" in r)

    final = run_dir / "final"
    model = MambaForCausalLM.from_pretrained(final)
    tokenizer = AutoTokenizer.from_pretrained(final)
    assert model.dtype == torch.float16 and len(tokenizer) == 300
    assert (run_dir / "mid").is_dir()


def test_bad_dropout_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train_small_mamba.main(["--tokenizer", "unused", "--out", str(tmp_path), "--max-steps", "1", "--dropout", "1.0"])
    assert "--dropout must lie in [0, 1), got 1.0" in capsys.readouterr().err
