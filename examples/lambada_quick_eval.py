"""Full lambada_openai (and optionally Gutenberg validation perplexity) for a causal LM checkpoint.

Reproduces lm-eval's `lambada_openai` task without lm-eval: for each line of lambada_test.jsonl,
context = the text up to its last space, continuation = " " + last word. Tokenisation as lm-eval's
HFLM: whole = tok(context + continuation), ctx = tok(context), continuation tokens = whole[len(ctx):],
no BOS. acc = every continuation token is the greedy argmax; perplexity = exp(-mean over documents
of the summed continuation log-likelihood). Runs on CUDA (mamba-ssm kernels if installed) or CPU.

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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_tokenizer import encode_books, gutenberg_files, resolve_data_dir  # noqa: E402


def lambada_requests(texts: list[str], tokenizer) -> list[tuple[list[int], list[int]]]:
    """(context ids, continuation ids) per document, as lm-eval's HFLM builds them."""
    reqs = []
    for text in texts:
        context, _, last = text.rpartition(" ")
        continuation = " " + last
        n_spaces = len(context) - len(context.rstrip())  # HFLM moves trailing context spaces over
        if n_spaces:
            continuation, context = context[-n_spaces:] + continuation, context[:-n_spaces]
        whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
        ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
        cont = whole[len(ctx):]
        if not ctx:  # nothing to condition on: lm-eval would prepend the eot token
            ctx = [tokenizer.eos_token_id]
        reqs.append((ctx, cont))
    return reqs


@torch.no_grad()
def score_requests(model, reqs, batch_size: int, device) -> list[tuple[float, bool]]:
    """(sum of continuation log-probs, all greedy) per request, in input order."""
    order = sorted(range(len(reqs)), key=lambda i: -(len(reqs[i][0]) + len(reqs[i][1])))
    out: list[tuple[float, bool] | None] = [None] * len(reqs)
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        seqs = [(reqs[i][0] + reqs[i][1])[:-1] for i in idx]
        width = max(map(len, seqs))
        ids = torch.zeros(len(seqs), width, dtype=torch.long)  # right padding: causal, so harmless
        for r, s in enumerate(seqs):
            ids[r, : len(s)] = torch.tensor(s)
        logits = model(input_ids=ids.to(device), use_cache=False).logits.float()
        logp = F.log_softmax(logits, dim=-1)
        for r, i in enumerate(idx):
            ctx, cont = reqs[i]
            pos = torch.arange(len(ctx) - 1, len(ctx) - 1 + len(cont), device=logp.device)
            target = torch.tensor(cont, device=logp.device)
            lp = logp[r, pos]
            out[i] = (lp.gather(-1, target[:, None]).sum().item(), bool((lp.argmax(-1) == target).all()))
    return out


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
    ap.add_argument("--lambada", default=None, help="lambada_test.jsonl (default: <data-dir>/lambada_openai/...)")
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

    lambada = args.lambada
    if lambada is None:
        lambada = os.path.join(resolve_data_dir(args.data_dir), "lambada_openai", "lambada_test.jsonl")
    with open(lambada, encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f if line.strip()]
    if args.limit is not None:
        texts = texts[: args.limit]
    t0 = time.time()
    scores = score_requests(model, lambada_requests(texts, tokenizer), args.batch_size, device)
    ll = [s for s, _ in scores]
    result["lambada_openai"] = {
        "docs": len(scores),
        "acc": sum(g for _, g in scores) / len(scores),
        "perplexity": math.exp(-sum(ll) / len(ll)),
        "seconds": time.time() - t0,
    }
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
