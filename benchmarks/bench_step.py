"""One CUDA-graph w8a8 decode step per step-graph rewrite variant, without mamba-ssm: for A/Bs of decode
kernels and rewrites in a few minutes of a GPU lease (``bench_decode.py`` builds mamba-ssm first, about
six minutes, and is where the ratios against it come from).

The model is a transformers ``MambaForCausalLM`` with a config's dimensions (``bench_prefill.CONFIGS``) and
``--layers`` layers, random float32 weights (transformers' initialisation), calibrated on two random
64-token prompts and lowered to w8a8; the step starts from the states of an 8-token random prompt. Each
variant is ``bench_decode.REWRITES``' (``default``: what generate runs at that batch size), plus the
default captured without programmatic dependent launch; ``bench_decode.rewrite_step_ms`` checks that every
variant's logits over 4 steps equal the functional step's bit for bit before timing 100 replays of each,
so a row is a time only for a step that computes what the functional one does. Fewer layers than the
config's keep the first call's compiling and autotuning short (every layer runs the same kernels); a
step's time is then the layers' share of a model's step plus its head.

    python benchmarks/bench_step.py [--config 2.8b] [--layers 8] [--batches 16,1] [--variants default] [--repeats 2]
"""

import argparse
import time

import torch
from transformers import MambaConfig, MambaForCausalLM

import bench_decode
import mamba_qpass as qpass
from bench_prefill import CONFIGS, VOCAB
from mamba_qpass.hf import QuantizedMambaForCausalLM
from mamba_qpass.runtime.generate import prefill

PROMPT = 8


def step_model(d_model: int, layers: int, vocab: int, g: torch.Generator, device: str) -> QuantizedMambaForCausalLM:
    """The w8a8 model of the module docstring on ``device``; dt_rank is ceil(d_model / 16), as in the Mamba
    configs."""
    config = MambaConfig(vocab_size=vocab, hidden_size=d_model, num_hidden_layers=layers, state_size=16, expand=2,
                         conv_kernel=4, time_step_rank=-(-d_model // 16), use_bias=False, use_conv_bias=True,
                         residual_in_fp32=True, tie_word_embeddings=True)
    torch.manual_seed(0)
    with torch.device(device):
        model = MambaForCausalLM(config).eval()
    calibration = [torch.randint(0, vocab, (1, 64), generator=g, device=device) for _ in range(2)]
    calibrated = qpass.calibrate(model, calibration, progress=False)
    return QuantizedMambaForCausalLM(qpass.apply_mode(calibrated, "w8a8"), model.config, "w8a8")


def chosen_rewrites(variants: str) -> dict:
    """The REWRITES named in the comma-separated ``variants``, after the functional step the check needs."""
    names = [v for v in variants.split(",") if v]
    unknown = [v for v in names if v not in bench_decode.REWRITES]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; choose among {list(bench_decode.REWRITES)}")
    return {name: bench_decode.REWRITES[name] for name in ["functional", *names]}


@torch.no_grad()
def time_steps(qmodel: QuantizedMambaForCausalLM, batch: int, rewrites: dict, g: torch.Generator) -> dict | None:
    """``rewrite_step_ms`` of each variant at ``batch`` rows, from one random prompt's states."""
    step_graph = qmodel._generation_runtime()["step_graph"]
    vocab = qmodel.config.vocab_size
    ids = torch.randint(0, vocab, (batch, PROMPT + 1), generator=g, device="cuda")
    _, states = prefill(step_graph, list(ids[:, :PROMPT]))
    return bench_decode.rewrite_step_ms(step_graph, states, ids[:, PROMPT:], rewrites)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="2.8b", choices=list(CONFIGS), help="the dimensions")
    parser.add_argument("--layers", type=int, default=8, help="layers of the model (the config's own: its full depth)")
    parser.add_argument("--batches", default="16,1", help="comma-separated batch sizes")
    parser.add_argument("--variants", default="default", help="comma-separated names of bench_decode.REWRITES")
    parser.add_argument("--repeats", type=int, default=2, help="times each batch size's variants are timed, in turn")
    args = parser.parse_args()
    try:
        rewrites = chosen_rewrites(args.variants)
    except ValueError as e:
        parser.error(str(e))
    if not torch.cuda.is_available():
        raise SystemExit("bench_step.py times CUDA graphs: run it on a CUDA machine")
    print(f"device: {torch.cuda.get_device_name()}", flush=True)
    start = time.perf_counter()
    g = torch.Generator(device="cuda").manual_seed(0)
    qmodel = step_model(CONFIGS[args.config][0], args.layers, VOCAB, g, "cuda")
    print(f"{args.config} dims, {args.layers} layers: model ready in {time.perf_counter() - start:.0f} s", flush=True)
    for batch in (int(b) for b in args.batches.split(",")):
        for repeat in range(args.repeats):
            times = time_steps(qmodel, batch, rewrites, g)
            shown = {name: round(ms, 4) for name, ms in times.items()} if times else "no times: logits differ"
            print(f"B={batch} run {repeat + 1} ({time.perf_counter() - start:.0f} s), ms a step: {shown}", flush=True)


if __name__ == "__main__":
    main()
