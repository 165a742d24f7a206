"""Prefill through the torch.compile backend on the GPU: the finished graph run as it is against the same
graph handed to inductor (custom ops kept, elementwise glue fused), and with inductor's reduce-overhead
mode (CUDA graphs), on a transformers ``MambaForCausalLM`` of bench_prefill's sizes.

The model holds random fp16 weights at a trained model's scale and is calibrated once on random tokens;
every variant is a ``qpass.backend`` built from that one calibrated graph, so all compile the same
graph. Correctness before time, per config and mode (the row is refused otherwise): each compiled
variant's logits equal the uncompiled graph's (``qpass.apply_mode``) bit for bit, and each compiles
no more graphs than Dynamo's dynamic shapes need: one for every length and batch size, plus one when the
shapes mix batch size 1 with larger ones (torch specialises a size of 1). Reported: the first call's seconds (trace, passes,
compile, run) and median CUDA-event times (``triton.testing.do_bench``).

    python benchmarks/bench_compile.py [--configs 130m,1.4b] [--modes w8a8,float_sim] [--json out.json]

Decode: a compiled model's ``generate`` runs the decode path of the model qpass.apply returns (its
decode step the project's own CUDA graph; dynamo_generate.py), whichever variant compiled it, so inductor
and reduce-overhead cannot change it. Each variant's ``generate`` (B=1, prompt 128, 128 new tokens,
greedy) is timed to show it, after checking that the model's generate is routed to the backend's graph
and that its tokens equal the graph variant's; bench_decode.py times decode against mamba-ssm.
"""

import argparse
import time

import torch
from torch._dynamo.testing import CompileCounterWithBackend
from transformers import MambaConfig, MambaForCausalLM

import mamba_qpass as qpass
from mamba_qpass.dynamo_generate import compiled_generation
from bench_prefill import CONFIGS, SHAPES, VOCAB, run_benchmark, timed_peak

VARIANTS = {"graph": False, "inductor": True, "inductor_reduce_overhead": "reduce-overhead"}
PROMPT, NEW = 128, 128


def timed_generate(model, prompt: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(tokens, ms per new token) of a greedy ``generate`` from ``prompt``, timed after an untimed call
    (which captures the decode step's CUDA graph)."""
    kwargs = dict(max_new_tokens=NEW, do_sample=False, eos_token_id=[])
    model.generate(prompt, **kwargs)
    torch.cuda.synchronize()
    start = time.perf_counter()
    tokens = model.generate(prompt, **kwargs)
    torch.cuda.synchronize()
    return tokens, (time.perf_counter() - start) * 1000 / NEW


def transformers_model(d_model: int, layers: int) -> MambaForCausalLM:
    config = MambaConfig(vocab_size=VOCAB, hidden_size=d_model, num_hidden_layers=layers, state_size=16, expand=2,
                         conv_kernel=4, time_step_rank=-(-d_model // 16), use_bias=False, use_conv_bias=True,
                         residual_in_fp32=True, layer_norm_epsilon=1e-5, tie_word_embeddings=True,
                         initializer_range=0.02)
    torch.manual_seed(0)
    with torch.device("cuda"):
        return MambaForCausalLM(config).to(torch.float16).eval()


def bench_mode(name: str, model, calibrated, mode: str, g: torch.Generator) -> list[dict]:
    reference = qpass.apply_mode(calibrated, mode)
    inputs = {shape: torch.randint(0, VOCAB, shape, generator=g, device="cuda") for shape in SHAPES}
    rows = []
    expected_graphs = len({batch == 1 for batch, _ in SHAPES})
    prompt = torch.randint(0, VOCAB, (1, PROMPT), generator=g, device="cuda")
    expected_tokens = None
    for variant, inductor in VARIANTS.items():
        torch._dynamo.reset()
        counter = CompileCounterWithBackend(qpass.backend(mode=mode, calibration=calibrated, inductor=inductor))
        compiled = torch.compile(model, backend=counter, fullgraph=True, dynamic=True)
        first = next(iter(inputs.values()))
        start = time.perf_counter()
        with torch.no_grad():
            compiled(first)
        torch.cuda.synchronize()
        first_call_s = time.perf_counter() - start
        with torch.no_grad():
            equal = all(torch.equal(compiled(x).logits, reference(x)) for x in inputs.values())
        ok = equal and counter.frame_count == expected_graphs
        print(f"{name} {mode} {variant}: first call {first_call_s:.1f} s, logits equal the graph's: {equal}, "
              f"compiles: {counter.frame_count} (expected {expected_graphs}) -> {'ok' if ok else 'REFUSED'}", flush=True)
        for (batch, length), x in inputs.items():
            row = dict(config=name, mode=mode, variant=variant, batch=batch, length=length, check=ok,
                       first_call_s=first_call_s)
            if ok:
                row["ms"], row["working_gib"] = timed_peak(lambda: compiled(x).logits)
                print(f"{name} {mode} {variant} B={batch} L={length}: {row['ms']:.2f} ms "
                      f"(+{row['working_gib']:.2f} GiB working)", flush=True)
            rows.append(row)
        routed = compiled_generation(model) is not None  # else generate would run transformers' float model
        if ok and routed:
            tokens, ms = timed_generate(model, prompt)
            expected_tokens = tokens if expected_tokens is None else expected_tokens
            same = torch.equal(tokens, expected_tokens)
            rows.append(dict(config=name, mode=mode, variant=variant, generate_ms_per_token=ms, check=same))
            print(f"{name} {mode} {variant} generate B=1: {ms:.3f} ms/token (prefill included), tokens equal the "
                  f"graph variant's: {same}", flush=True)
        else:
            print(f"{name} {mode} {variant} generate: REFUSED (the model's generate is "
                  f"{'routed' if routed else 'not routed'} to the backend's graph)", flush=True)
    graph_rows = {(r["batch"], r["length"]): r for r in rows if r["variant"] == "graph" and r["check"] and "ms" in r}
    for r in rows:
        base = graph_rows.get((r.get("batch"), r.get("length")))
        if r["variant"] != "graph" and base and r["check"] and "ms" in r:
            print(f"{name} {mode} B={r['batch']} L={r['length']}: {r['variant']} {base['ms'] / r['ms']:.2f}x "
                  "the graph as it is", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="130m,1.4b", help="comma-separated subset of " + ",".join(CONFIGS))
    parser.add_argument("--modes", default="w8a8", help="comma-separated modes (qpass.mode_names())")
    parser.add_argument("--json", default=None, help="also write every row here")
    args = parser.parse_args()
    def bench_config(name: str, g: torch.Generator) -> list[dict]:
        model = transformers_model(*CONFIGS[name])
        calibration = [torch.randint(0, VOCAB, (1, 512), generator=g, device="cuda") for _ in range(4)]
        calibrated = qpass.calibrate(model, calibration, progress=False)
        return [row for mode in args.modes.split(",") for row in bench_mode(name, model, calibrated, mode, g)]

    run_benchmark(args.configs, bench_config, args.json)


if __name__ == "__main__":
    main()
