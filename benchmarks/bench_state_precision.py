"""What keeping the SSM states in float16 between decode steps costs in accuracy
(``generate(ssm_state_dtype=torch.float16)``, ``runtime/state_precision.py``), measured on a trained model.

The model (the default checkpoint unless --model) is calibrated on the shared Gutenberg training text and
lowered to w8a8. Each of --docs validation passages is prefilled over its first --prompt tokens, then fed
its next --steps tokens one at a time (teacher forcing), once with float32 and once with float16 SSM states,
from the same prefill. Reported over every fed position: the mean negative log-likelihood of the text's
next token (and its perplexity) with each state dtype, the largest difference in any logit, and how often
the top-1 token agrees. As a control, the float32-state decode is compared with re-running the whole
prefix at a few positions (it should agree to float32 rounding).

    python benchmarks/bench_state_precision.py [--docs 4] [--prompt 32] [--steps 224] [--json out.json]
"""

import argparse
import json
import math
import time

import torch

import mamba_qpass as qpass
from mamba_qpass import data
from mamba_qpass.hf import QuantizedMambaForCausalLM
from mamba_qpass.loading import load_pretrained
from mamba_qpass.runtime.generate import prefill


@torch.no_grad()
def teacher_forced(qmodel, tokens: torch.Tensor, prompt: int, dtype: torch.dtype) -> torch.Tensor:
    """(steps + 1, vocab) float32 logits: the prefill's last, then one per fed token."""
    last, states = prefill(qmodel._generation_runtime()["eager_step_graph"], [tokens[:prompt]])
    step = qmodel._decode_step(states, use_cuda_graph=False, ssm_state_dtype=dtype)
    logits = [last[0].float()]
    for t in range(prompt, tokens.shape[0] - 1):
        logits.append(step(tokens[None, t : t + 1])[0].float())
    return torch.stack(logits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="a local checkpoint folder (default: the embedded one)")
    parser.add_argument("--data-dir", default=None, help="the shared data folder (found by default)")
    parser.add_argument("--docs", type=int, default=4)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--steps", type=int, default=224)
    parser.add_argument("--calib-samples", type=int, default=16)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    device = data.default_device()
    model, tokenizer = load_pretrained(args.model or data.default_model(), device=device)
    calibration = list(data.gutenberg_texts(data.data_file(data.CALIBRATION_FILE, args.data_dir),
                                            max_chars=args.calib_samples * 512 * 8))
    qmodel = qpass.apply(model, mode="w8a8", calibration=calibration, tokenizer=tokenizer, progress=False)
    text = "".join(data.gutenberg_texts(data.data_file(data.VALIDATION_FILE, args.data_dir),
                                        max_chars=args.docs * (args.prompt + args.steps + 1) * 8))
    ids = torch.tensor(tokenizer(text)["input_ids"], device=device)
    length = args.prompt + args.steps + 1
    docs = [ids[i * length : (i + 1) * length] for i in range(args.docs)]
    if any(d.shape[0] < length for d in docs):
        raise SystemExit(f"the validation text gave fewer than {args.docs} passages of {length} tokens")

    started = time.perf_counter()
    nll = {torch.float32: [], torch.float16: []}
    max_logit_diff, agree, positions, control = 0.0, 0, 0, 0.0
    for doc in docs:
        targets = doc[args.prompt :]
        logits = {dtype: teacher_forced(qmodel, doc, args.prompt, dtype) for dtype in nll}
        for dtype, lg in logits.items():
            nll[dtype].append(torch.nn.functional.cross_entropy(lg, targets, reduction="none"))
        full, half = logits[torch.float32], logits[torch.float16]
        max_logit_diff = max(max_logit_diff, (full - half).abs().max().item())
        agree += (full.argmax(-1) == half.argmax(-1)).sum().item()
        positions += targets.shape[0]
        for t in (args.steps // 2, args.steps):  # control: float32-state decode vs the whole prefix again
            again = qmodel(doc[None, : args.prompt + t]).logits[0, -1].float()
            control = max(control, (again - full[t]).abs().max().item())
    mean = {str(d).replace("torch.", ""): torch.cat(v).mean().item() for d, v in nll.items()}
    result = {
        "model": args.model or data.default_model(), "device": str(device), "mode": "w8a8",
        "docs": args.docs, "prompt": args.prompt, "steps": args.steps, "positions": positions,
        "mean_nll": mean, "perplexity": {k: math.exp(v) for k, v in mean.items()},
        "nll_increase": mean["float16"] - mean["float32"], "max_logit_difference": max_logit_diff,
        "top1_agreement": agree / positions,
        "control_float32_decode_vs_prefix_max_logit_difference": control,
        "seconds": time.perf_counter() - started,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
