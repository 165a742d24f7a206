"""Generation on the GPU: mamba-qpass w8a8 ``generate`` (its decode step a CUDA graph per batch size) against
mamba-ssm's fp16 ``MambaLMHeadModel.generate(cg=True)``, same weights, same run.

The models are bench_prefill's: mamba-ssm's own random initialisation, copied into a transformers
``MambaForCausalLM`` that mamba-qpass captures, calibrates on random tokens and lowers to w8a8.

Correctness before time, per config (the rows are refused otherwise): 64 prompt tokens prefilled and 16
decoded, the float model's SSM states after the last step are within float rounding of a prefill of all 80
tokens (SQNR >= FP_DECODE_MIN_DB); generating with the CUDA graph gives the tokens of generating eagerly;
fp32_ssm and float_sim decode to w8a8's tokens and, at the last step, w8a8's logits bit for bit (the mode
contract, which ties the fused int8 step kernels to the modes built on the references); and w8a8 agrees
with mamba-ssm's top-1 on at least half of a 512-token prompt's positions (a random model is a hard case
for int8).

Reported beside them, not checked: the same decode-against-prefill SQNRs (logits and SSM states) of w8a8
and the float model's logits. In these random-weight models the last logits cannot tell a right decode
from a wrong one: on the H200, with the 2.8b weights, a w8a8 decode whose prefilled states were zeroed, or
that skipped the prompt's last token, is 23.7 to 24.2 dB from the prefill, while right decodes were 23.8
dB, 34.0 dB and bit for bit on four prompts (twenty-fourth session, ``benchmarks/RESULTS.md``). The
prefill's chunked scan and the step's sequential one round differently in float32, int8 requantisation
turns some of those differences into whole-code flips, and a decode with flips scored as low as one that
lost its state. The SSM states are what a wrong decode gets wrong: on the CPU (a 2-layer model) zeroed
states and a skipped token are 11 to 29 dB from the prefill's, a right decode over 129 dB. The 40 dB bar
lies between those and the float model's logits on the H200 (58.6 to 59.4 dB). Measured since on the H200
with the 2.8b weights (twenty-fifth session): the float model's states are 69.3 to 71.0 dB from the
prefill's after a right decode, 10.1 to 10.3 dB after one from zeroed states and 30.8 to 31.0 dB after one
that skipped the prompt's last token.

Timing, per batch size (1, 16, 64), prompt 512 random tokens, 256 new tokens, greedy, no end token: both
``generate`` calls end to end (CUDA graphs captured in an untimed first call), and each model's prefill
alone; decode ms/token = (generate - prefill) / 255 steps, tokens/s = batch * 1000 / (ms/token). Memory:
weights + decode states (mamba-ssm's inference cache: fp16 conv and SSM states), and the peak a generate
call allocates beyond what was resident.

With ``--rewrites``, one CUDA-graph decode step is also timed alone (100 replays) without the step-graph
rewrites of ``runtime/``, with each added in turn and with the default set (``decode_rewrites(batch)``,
what generate runs), and the default set captured without programmatic dependent launch
(``kernels/dependent_launch.py``), from the same states, after checking that every variant's logits equal
the functional step's bit for bit: what each rewrite and the dependent launches buy, in one run. One
variant runs the fused state update with one batch row a program (``ONE_ROW_TILE``, the rule before the
eighteenth session's tile of batch rows), so the rule's tile is timed in the step against it.
``bench_step.py`` times chosen variants without mamba-ssm.
With ``--profile``, the kernels of one step as generate captures it, but with independent launches: under
dependent launch a kernel starts early and its profiled time includes its wait for the one before.

    python benchmarks/bench_decode.py [--configs 130m,1.4b,2.8b] [--batches 1,16,64] [--json out.json] [--profile] [--rewrites] [--float16-states]
"""

import argparse
import json
import statistics
import time

import torch
import torch.fx as fx

import mamba_qpass as qpass
from bench_prefill import CONFIGS, VOCAB, calibrated_pair, print_profile, run_benchmark, sqnr_db, tensor_bytes
from mamba_qpass.capture import ssm_state_positions
from mamba_qpass.cuda_kernels import (
    int8_selective_scan_dt_proj_in_place, int8_selective_scan_in_place, selective_scan_in_place,
)
from mamba_qpass.graph_utils import copied
from mamba_qpass.hf import QuantizedMambaForCausalLM
from mamba_qpass.kernels.dependent_launch import independent_launches
from mamba_qpass.runtime.decode_step import CudaGraphDecodeStep
from mamba_qpass.runtime.fuse_dt_proj import fuse_dt_proj
from mamba_qpass.runtime.fuse_in_proj_conv import fuse_in_proj_conv
from mamba_qpass.runtime.generate import prefill
from mamba_qpass.runtime.in_place_states import update_states_in_place
from mamba_qpass.runtime.state_precision import stored

IN_PLACE_SCANS = (selective_scan_in_place, int8_selective_scan_in_place, int8_selective_scan_dt_proj_in_place)
# the state update's rule before the tile of batch rows (state_update_tiling): one row a program
ONE_ROW_TILE = dict(BLOCK_D=32, ROWS=1, num_warps=1)


def with_one_row_tile(step_graph: fx.GraphModule) -> fx.GraphModule:
    """A copy of an in-place step graph whose state updates run ONE_ROW_TILE's tiling."""
    tiled = copied(step_graph, "MambaOneRowTileStepGraph")
    for node in tiled.graph.nodes:
        if node.op == "call_function" and node.target in IN_PLACE_SCANS:
            node.kwargs = {**node.kwargs, "tiling": ONE_ROW_TILE}
    tiled.recompile()
    return tiled


PROMPT, NEW = 512, 256
BATCHES = (1, 16, 64)
CHECK_PROMPT, CHECK_STEPS = 64, 16
FP_DECODE_MIN_DB = 40.0
REPEATS = 3
# the CUDA decode step with each rewrite of the step graph added in turn, timed step by step (--rewrites)
REWRITES = {
    "functional": (),
    "in_place": (update_states_in_place,),
    "in_place+fuse_dt_proj": (update_states_in_place, fuse_dt_proj),
    "in_place+fuse_in_proj_conv": (update_states_in_place, fuse_in_proj_conv),
    "in_place+fuse_in_proj_conv+fuse_dt_proj": (update_states_in_place, fuse_in_proj_conv, fuse_dt_proj),
    "in_place+fuse_in_proj_conv+fuse_dt_proj+one_row_tile": (update_states_in_place, fuse_in_proj_conv, fuse_dt_proj,
                                                             with_one_row_tile),
    "default": None,  # decode_rewrites(batch): what generate runs at this batch size
}
TIMED_STEPS = 100


def decode_rates(generate_s: float, prefill_s: float, new_tokens: int, batch: int) -> dict:
    """ms per decode step and tokens/s from the time of a whole generate call and of its prefill: the first
    new token comes from the prefill, each of the other ``new_tokens - 1`` from one decode step."""
    steps = new_tokens - 1
    ms_per_token = 1000 * (generate_s - prefill_s) / steps
    return {"ms_per_token": ms_per_token, "tokens_per_s": batch * 1000 / ms_per_token}


def tensors_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def seconds(fn) -> float:
    """Median wall time of ``fn`` over REPEATS calls, the GPU synchronised around each."""
    times = []
    for _ in range(REPEATS):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def working_gib(fn) -> float:
    """GiB one call allocates beyond what was resident before it (the decode states, logits, graph pools)."""
    torch.cuda.synchronize()
    resident = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - resident) / 2**30


@torch.no_grad()
def decoded(qmodel: QuantizedMambaForCausalLM, tokens: torch.Tensor, prompt_len: int) -> tuple[torch.Tensor, tuple]:
    """(logits of the last step, states after it): the first ``prompt_len`` tokens prefilled, the rest fed
    one step at a time (a CUDA-graph step on CUDA)."""
    _, states = prefill(qmodel._generation_runtime()["step_graph"], list(tokens[:, :prompt_len]))
    step = qmodel._decode_step(states, use_cuda_graph=qmodel.device.type == "cuda")
    for t in range(prompt_len, tokens.shape[1]):
        logits = step(tokens[:, t : t + 1]).clone()
    return logits, tuple(s.clone() for s in step.states)


@torch.no_grad()
def decode_vs_prefix_sqnr_db(qmodel: QuantizedMambaForCausalLM, tokens: torch.Tensor, decode: tuple) -> dict:
    """SQNR (dB) of a decode's last logits and SSM states (``decoded``'s result) against a prefill of every
    one of ``tokens``: ``{"logits": ..., "ssm_states": ...}``."""
    graph = qmodel._generation_runtime()["step_graph"]
    logits, states = decode
    full_logits, full_states = prefill(graph, list(tokens))
    ssm = lambda of: torch.cat([of[i].float().flatten() for i in ssm_state_positions(graph)])
    return {"logits": sqnr_db(logits.float(), full_logits.float()), "ssm_states": sqnr_db(ssm(states), ssm(full_states))}


@torch.no_grad()
def checks(name, ssm, calibrated, qmodel, fp_model, g) -> tuple[dict, bool]:
    prompt = torch.randint(0, VOCAB, (1, PROMPT), generator=g, device="cuda")
    ref = ssm(prompt).logits.float()
    full = qmodel(prompt).logits.float()
    ids = prompt[:, :CHECK_PROMPT]
    tokens = qmodel.generate(ids, max_new_tokens=CHECK_STEPS, eos_token_id=[])
    eager = qmodel.generate(ids, max_new_tokens=CHECK_STEPS, eos_token_id=[], use_cuda_graph=False)
    w8a8_decode = decoded(qmodel, tokens, CHECK_PROMPT)
    result = {
        "fp_decode_vs_prefix_sqnr_db": decode_vs_prefix_sqnr_db(fp_model, tokens, decoded(fp_model, tokens, CHECK_PROMPT)),
        # not checked: a random model's int8 code flips make it a lottery (module docstring)
        "w8a8_decode_vs_prefix_sqnr_db": decode_vs_prefix_sqnr_db(qmodel, tokens, w8a8_decode),
        "graph_equals_eager": torch.equal(tokens, eager),
    }
    for mode in ("fp32_ssm", "float_sim"):
        other = QuantizedMambaForCausalLM(qpass.apply_mode(calibrated, mode), qmodel.config, mode)
        result[f"{mode}_decodes_as_w8a8"] = (
            torch.equal(other.generate(ids, max_new_tokens=CHECK_STEPS, eos_token_id=[]), tokens)
            and torch.equal(decoded(other, tokens, CHECK_PROMPT)[0], w8a8_decode[0])
        )
    result["w8a8_top1_agreement_with_mamba_ssm"] = (full.argmax(-1) == ref.argmax(-1)).double().mean().item()
    result["w8a8_finite"] = bool(torch.isfinite(full).all())
    ok = (result["fp_decode_vs_prefix_sqnr_db"]["ssm_states"] >= FP_DECODE_MIN_DB and result["graph_equals_eager"]
          and result["fp32_ssm_decodes_as_w8a8"] and result["float_sim_decodes_as_w8a8"] and result["w8a8_finite"]
          and result["w8a8_top1_agreement_with_mamba_ssm"] >= 0.5)
    print(f"{name}: checks {json.dumps(result)} -> {'ok' if ok else 'FAILED'}", flush=True)
    return result, ok


@torch.no_grad()
def rewrite_step_ms(step_graph, states, tokens, rewrites: dict = REWRITES) -> dict | None:
    """ms per CUDA-graph decode step with each set of ``rewrites`` (a subset of REWRITES holding its
    "functional"), from the same states; None (and a line saying so) unless every variant's logits over 4
    steps equal the functional step's bit for bit."""
    steps = {name: CudaGraphDecodeStep(step_graph, states, rewrites=chosen) for name, chosen in rewrites.items()}
    with independent_launches():  # captured without programmatic dependent launch: what it buys
        steps["default, independent launches"] = CudaGraphDecodeStep(step_graph, states)
    logits = {}
    for name, step in steps.items():
        step.start(states)
        logits[name] = torch.stack([step(tokens).clone() for _ in range(4)])
    if not all(torch.equal(v, logits["functional"]) for v in logits.values()):
        print("  the rewritten steps' logits differ from the functional step's: no per-rewrite times", flush=True)
        return None
    times = {}
    for name, step in steps.items():
        step.start(states)
        times[name] = 1000 * seconds(lambda: [step(tokens) for _ in range(TIMED_STEPS)]) / TIMED_STEPS
    return times


@torch.no_grad()
def bench_config(name: str, batches, g: torch.Generator, profile: bool, rewrites: bool, float16_states: bool) -> list[dict]:
    ssm, hf, calibrated = calibrated_pair(name, g)
    qmodel = QuantizedMambaForCausalLM(qpass.apply_mode(calibrated, "w8a8"), hf.config, "w8a8")
    fp_model = qpass.apply(hf, "fp", progress=False)
    del hf
    check, ok = checks(name, ssm, calibrated, qmodel, fp_model, g)
    del calibrated, fp_model
    torch.cuda.empty_cache()

    rows = []
    for batch in batches:
        # mamba-ssm keeps its decoding cache unless the batch grows (utils/generation.py, update_graph_cache):
        # a smaller batch after a larger one would prefill into the larger batch's conv states and fail
        ssm._decoding_cache = None
        ids = torch.randint(0, VOCAB, (batch, PROMPT), generator=g, device="cuda")
        ours = lambda: qmodel.generate(ids, max_new_tokens=NEW, eos_token_id=[])  # noqa: E731
        theirs = lambda: ssm.generate(ids, max_length=PROMPT + NEW, cg=True, top_k=1)  # noqa: E731
        ours_tokens, theirs_tokens = ours(), theirs()  # captures each CUDA graph, untimed
        assert ours_tokens.shape == (batch, PROMPT + NEW) and theirs_tokens.shape == (batch, PROMPT + NEW)
        step_graph = qmodel._generation_runtime()["step_graph"]
        _, states = prefill(step_graph, list(ids))
        state_bytes = {
            "w8a8": tensors_bytes(states),
            "mamba_ssm_fp16": tensors_bytes(t for pair in ssm.allocate_inference_cache(batch, PROMPT + NEW).values() for t in pair),
        }
        weights = {"w8a8": tensor_bytes(qmodel.gm), "mamba_ssm_fp16": tensor_bytes(ssm)}
        prefill_s = seconds(lambda: prefill(step_graph, list(ids)))
        row = dict(
            config=name, batch=batch, prompt=PROMPT, new_tokens=NEW, check=ok, checks=check,
            w8a8=decode_rates(seconds(ours), prefill_s, NEW, batch),
            mamba_ssm_fp16=decode_rates(seconds(theirs), seconds(lambda: ssm(ids, num_last_tokens=1)), NEW, batch),
            weight_bytes=weights, state_bytes=state_bytes,
            memory_ratio=(weights["w8a8"] + state_bytes["w8a8"]) / (weights["mamba_ssm_fp16"] + state_bytes["mamba_ssm_fp16"]),
            w8a8_working_gib=working_gib(ours), mamba_ssm_working_gib=working_gib(theirs),
        )
        ratio = f"{row['mamba_ssm_fp16']['ms_per_token'] / row['w8a8']['ms_per_token']:.2f}x" if ok else "REFUSED"
        print(
            f"{name} B={batch}: mamba-ssm fp16 {row['mamba_ssm_fp16']['ms_per_token']:.3f} ms/token "
            f"({row['mamba_ssm_fp16']['tokens_per_s']:.0f} tok/s), w8a8 {row['w8a8']['ms_per_token']:.3f} ms/token "
            f"({row['w8a8']['tokens_per_s']:.0f} tok/s) -> {ratio}; weights + states {row['memory_ratio']:.2f}x of fp16",
            flush=True,
        )
        if float16_states:  # the same decode with the SSM states kept in float16 between steps
            half = lambda: qmodel.generate(ids, max_new_tokens=NEW, eos_token_id=[], ssm_state_dtype=torch.float16)  # noqa: E731
            half()  # captures its CUDA graph, untimed
            half_state_bytes = tensors_bytes(stored(states, ssm_state_positions(step_graph), torch.float16))
            row["w8a8_float16_states"] = decode_rates(seconds(half), prefill_s, NEW, batch)
            row["memory_ratio_float16_states"] = (weights["w8a8"] + half_state_bytes) / (
                weights["mamba_ssm_fp16"] + state_bytes["mamba_ssm_fp16"])
            print(f"{name} B={batch}: w8a8 with float16 SSM states {row['w8a8_float16_states']['ms_per_token']:.3f} "
                  f"ms/token; weights + states {row['memory_ratio_float16_states']:.2f}x of fp16", flush=True)
        if rewrites:
            row["step_ms_by_rewrites"] = rewrite_step_ms(step_graph, states, ids[:, :1])
            if row["step_ms_by_rewrites"]:
                print(f"{name} B={batch}: ms per CUDA-graph step, " + ", ".join(
                    f"{k} {v:.3f}" for k, v in row["step_ms_by_rewrites"].items()), flush=True)
        if profile:
            # the step as generate runs it (one graph replay), captured without dependent launch: with it, a
            # kernel's time would include its wait for the kernel before
            with independent_launches():
                step = CudaGraphDecodeStep(step_graph, states)
            step.start(states)
            row["kernels_per_step"] = print_profile(f"{name} w8a8 decode step B={batch}, independent launches",
                                                    CONFIGS[name][1], lambda: step(ids[:, :1]))
        rows.append(row)
        torch.cuda.empty_cache()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset of " + ",".join(CONFIGS))
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)), help="comma-separated batch sizes")
    parser.add_argument("--json", default=None, help="also write every row and check here")
    parser.add_argument("--profile", action="store_true",
                        help="print the kernels of one w8a8 decode step (its CUDA graph, independent launches) per batch size")
    parser.add_argument("--float16-states", action="store_true",
                        help="also time w8a8 with its SSM states kept in float16 between steps")
    parser.add_argument("--rewrites", action="store_true",
                        help="also time one CUDA-graph step without the step-graph rewrites, and with each added")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    run_benchmark(args.configs, lambda name, g: bench_config(name, batches, g, args.profile, args.rewrites, args.float16_states), args.json)


if __name__ == "__main__":
    main()
