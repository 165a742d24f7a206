"""Full lambada_openai (and optionally Gutenberg validation perplexity) for a causal LM checkpoint.

The evaluation that follows every training run (scripts/device_training/job.sh): the float model as
transformers loads it, with mamba-ssm's kernels where installed. lambada_openai is lm-eval's own task
reading the data folder's copy (``mamba_qpass.eval.harness``): acc = every continuation token is the
greedy argmax; perplexity = exp(-mean over documents of the continuation log-likelihood). Needs lm-eval
(``pip install -e '.[eval]'``). Runs on CUDA or CPU.

    python examples/lambada_quick_eval.py --model checkpoints/gutenberg-mamba-25m \
        --data-dir ../shared/data [--limit 200] [--val] [--out eval.json]

`--data-dir` (or MAMBA_QPASS_DATA) holds lambada_openai/ and, for --val, gutenberg/.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

from mamba_qpass.eval.harness import run_lm_eval
from mamba_qpass.eval.results import task_metrics

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_tokenizer import encode_books, gutenberg_files, resolve_data_dir  # noqa: E402


@torch.no_grad()
def stream_nll(model, tokens: torch.Tensor, seq_len: int, batch_size: int, device, max_tokens: int | None):
    """Mean next-token NLL over consecutive windows of seq_len + 1 tokens (stride seq_len)."""
    n_seq = (len(tokens) - 1) // seq_len
    if max_tokens is not None:
        n_seq = min(n_seq, max(1, max_tokens // seq_len))
    offsets = torch.arange(seq_len + 1)
    total, count = 0.0, 0
    for b in range(0, n_seq, batch_size):
        starts = torch.arange(b, min(b + batch_size, n_seq)) * seq_len
        w = tokens[starts[:, None] + offsets].long().to(device)
        logits = model(input_ids=w[:, :-1], use_cache=False).logits.float()
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1), reduction="sum").item()
        count += w[:, 1:].numel()
    return total / count, count


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="checkpoint folder (config, safetensors, tokenizer)")
    ap.add_argument("--data-dir", default=None, help="folder holding lambada_openai/ (default: $MAMBA_QPASS_DATA)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N documents")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--val", action="store_true", help="also Gutenberg validation perplexity")
    ap.add_argument("--val-max-tokens", type=int, default=None)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)

    from transformers import AutoTokenizer, MambaForCausalLM

    device = torch.device(args.device)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = MambaForCausalLM.from_pretrained(args.model, dtype=getattr(torch, args.dtype)).to(device).eval()
    result = {"model": args.model, "dtype": args.dtype, "device": str(device),
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}

    t0 = time.time()
    run = run_lm_eval(model, tokenizer, ("lambada_openai",), resolve_data_dir(args.data_dir), args.limit,
                     args.batch_size, progress=False)["lambada_openai"]
    result["lambada_openai"] = {**task_metrics(run.docs), "seconds": time.time() - t0}
    la = result["lambada_openai"]
    print(f"lambada_openai ({la['docs']} docs): acc {la['acc']:.4f}  ppl {la['perplexity']:.2f}  ({la['seconds']:.0f} s)")

    if args.val:
        t0 = time.time()
        files = gutenberg_files(resolve_data_dir(args.data_dir), "val")
        tokens, n_books, n_chars = encode_books(files, os.path.join(args.model, "tokenizer.json"))
        nll, count = stream_nll(model, torch.from_numpy(tokens.astype("int64")), args.seq_len, max(1, args.batch_size // 4),
                                device, args.val_max_tokens)
        chars_per_token = n_chars / len(tokens)
        result["gutenberg_val"] = {
            "books": n_books, "tokens_scored": count, "loss": nll, "perplexity": math.exp(nll),
            "bits_per_char_approx": nll / math.log(2) / chars_per_token, "seconds": time.time() - t0,
        }
        gv = result["gutenberg_val"]
        print(f"gutenberg val ({gv['tokens_scored']:,} tokens): loss {nll:.4f}  ppl {gv['perplexity']:.2f}  "
              f"~{gv['bits_per_char_approx']:.3f} bits/char ({gv['seconds']:.0f} s)")

    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
