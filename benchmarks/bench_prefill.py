"""Whole-model prefill on the GPU: mamba-qpass w8a8 against mamba-ssm's fp16 ``MambaLMHeadModel`` (its CUDA
scan and causal-conv1d kernels, cuBLAS GEMMs), same weights, same run.

Both models hold the same random weights: mamba-ssm initialises its model (its own dt and A initialisation,
fp16) and the weights are copied into a transformers ``MambaForCausalLM`` (the parameter names differ only
in ``embedding`` vs ``embeddings``), which mamba-qpass captures, calibrates on random tokens and lowers.

Correctness before time, per config (the row is refused otherwise): the captured float graph reproduces
mamba-ssm's logits (same weights; SQNR >= 20 dB), w8a8's logits are finite and agree with mamba-ssm's
top-1 on at least half the tokens (a random model is a hard case for int8), and w8a8, fp32_ssm and
float_sim give bit-identical logits. Times are medians of CUDA-event timings (``triton.testing.do_bench``).

Each shape is timed twice: eager, as a forward runs from Python (both models launch their kernels one by
one, so on a slow host short prefills wait on the host; ours is the graph with its ops called directly,
``runtime/direct_calls.py``, as the model wrapper's forward runs it), and replayed as CUDA graphs
(``CudaGraphReplay``, both models alike), which leaves the GPU time; a replay must first reproduce its
eager logits bit for bit. At B=1, L=2048 the fp32_ssm and float_sim modes are timed the same two ways, against
w8a8's graph (their target: within 1.5x of its time), and float_sim once more compiled by inductor with
its rounding kept (``qpass.compile_exact``), timed only once its logits equal w8a8's bit for bit.

    python benchmarks/bench_prefill.py [--configs 130m,1.4b,2.8b] [--json out.json] [--profile]
"""

import argparse
import json
import time
from collections.abc import Callable

import torch
from transformers import MambaConfig, MambaForCausalLM
from triton.testing import do_bench

import mamba_qpass as qpass
from mamba_qpass.graph_replay import CudaGraphReplay
from mamba_qpass.runtime.direct_calls import cuda_graph_blockers, direct_calls

CONFIGS = {"130m": (768, 24), "1.4b": (2048, 48), "2.8b": (2560, 64)}  # d_model, layers (state 16, expand 2)
VOCAB = 50280
SHAPES = [(1, 512), (1, 2048), (1, 8192), (16, 2048)]  # (batch, length)
CHECK_SHAPE = (1, 512)


def sqnr_db(x: torch.Tensor, ref: torch.Tensor) -> float:
    x, ref = x.double(), ref.double()
    return (10 * torch.log10(ref.pow(2).sum() / (x - ref).pow(2).sum())).item()


def mamba_ssm_model(d_model: int, layers: int):
    from mamba_ssm.models.config_mamba import MambaConfig as SsmConfig
    from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

    config = SsmConfig(d_model=d_model, n_layer=layers, vocab_size=VOCAB, rms_norm=True, residual_in_fp32=True,
                       fused_add_norm=True, pad_vocab_size_multiple=8)
    return MambaLMHeadModel(config, device="cuda", dtype=torch.float16).eval()


def same_weights_in_transformers(ssm_model, d_model: int, layers: int) -> MambaForCausalLM:
    config = MambaConfig(vocab_size=VOCAB, hidden_size=d_model, num_hidden_layers=layers, state_size=16, expand=2,
                         conv_kernel=4, time_step_rank=-(-d_model // 16), use_bias=False, use_conv_bias=True,
                         residual_in_fp32=True, layer_norm_epsilon=1e-5, tie_word_embeddings=True)
    with torch.device("cuda"):
        model = MambaForCausalLM(config).to(torch.float16).eval()
    weights = {k.replace("backbone.embedding.", "backbone.embeddings."): v for k, v in ssm_model.state_dict().items()}
    model.load_state_dict(weights, strict=True)
    return model


def timed_peak(fn) -> tuple[float, float]:
    """(median ms, GiB one call allocates beyond what was allocated before it: activations and logits).
    Both models stay resident during the run, so the device-wide peak would say nothing per model."""
    with torch.no_grad():
        fn()
        torch.cuda.synchronize()
        resident = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - resident) / 2**30
        ms = do_bench(fn, warmup=10, rep=50, return_mode="median")
    return ms, peak


def tensor_bytes(module: torch.nn.Module) -> int:
    seen = {t.data_ptr(): t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()]}
    return sum(seen.values())


def kernel_times_by_layer_position(kernels: list[tuple[str, float]], layers: int) -> list[tuple[str, float]] | None:
    """``(name, mean us)`` for each position of a layer's kernels, from ``(name, us)`` in launch order:
    layers start where the first kernel that runs once a layer does, and every layer must launch the
    same kernels in the same order (None otherwise). What a kernel-name table cannot tell apart, such as
    the projections that all run ``_int8_linear_kernel``, it does by position. Kernels before the first
    layer are left out, and those after the last layer's pattern (the final norm, the head)."""
    names = [name for name, _ in kernels]
    once_a_layer = {name for name in names if names.count(name) == layers}
    if not once_a_layer:
        return None
    marker = next(name for name in names if name in once_a_layer)
    starts = [i for i, name in enumerate(names) if name == marker]
    width = starts[1] - starts[0] if len(starts) > 1 else len(names) - starts[0]
    pattern = names[starts[0]:starts[0] + width]
    if any(names[i:i + width] != pattern for i in starts):
        return None
    return [(pattern[k], sum(kernels[i + k][1] for i in starts) / layers) for k in range(width)]


def print_profile(label: str, layers: int, forward) -> int:
    """The GPU kernels of one ``forward()`` by total time, then by position in a layer; returns how many
    it launches."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad(), profile(activities=[ProfilerActivity.CUDA]) as prof:
        forward()
        torch.cuda.synchronize()
    kernels = sorted((e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA),
                     key=lambda e: e.time_range.start)
    busy_ms = sum(e.device_time for e in kernels) / 1000
    print(f"{label}: {len(kernels)} kernels ({len(kernels) / layers:.1f} per layer), GPU busy {busy_ms:.1f} ms")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=16, max_name_column_width=50), flush=True)
    positions = kernel_times_by_layer_position([(e.name, e.device_time) for e in kernels], layers)
    if positions is None:
        print("  the layers do not launch one pattern of kernels: no table by position", flush=True)
    else:
        print("  by position in a layer (mean us): " + "; ".join(f"{k + 1}. {name[:40]} {us:.2f}"
                                                              for k, (name, us) in enumerate(positions)), flush=True)
    return len(kernels)


def calibrated_pair(name: str, g: torch.Generator):
    """``(mamba-ssm fp16 model, the transformers model holding its weights, that model calibrated on 4 x 512
    random tokens)`` for config ``name``."""
    d_model, layers = CONFIGS[name]
    torch.manual_seed(0)
    ssm = mamba_ssm_model(d_model, layers)
    hf = same_weights_in_transformers(ssm, d_model, layers)
    calibration = [torch.randint(0, VOCAB, (1, 512), generator=g, device="cuda") for _ in range(4)]
    return ssm, hf, qpass.calibrate(hf, calibration, progress=False)


def time_mode(mode: str, graph, eager_graph, x: torch.Tensor) -> dict:
    """``{mode}_ms`` (eager) and ``{mode}_cuda_graph_ms`` (None when the replay differs from the graph's
    logits), or ``{mode}_cuda_graph_blockers`` when the direct-call graph cannot be captured. The direct-call
    graph is the one captured: its dequantise nodes take their scales as numbers, read once, where the
    graph itself reads them on the host at every call, which a CUDA graph cannot capture."""
    row = {f"{mode}_ms": timed_peak(lambda: eager_graph(x))[0]}
    # a compiled forward is not a graph module; inductor's code reads no scale on the host
    blockers = cuda_graph_blockers(eager_graph) if isinstance(eager_graph, torch.fx.GraphModule) else []
    if blockers:
        row[f"{mode}_cuda_graph_blockers"] = blockers
        return row
    replay = CudaGraphReplay(eager_graph, max_graphs=1)
    with torch.no_grad():
        same = torch.equal(replay(x), graph(x))
    row[f"{mode}_cuda_graph_ms"] = timed_peak(lambda: replay(x))[0] if same else None
    return row


def time_compiled_float_sim(graph, w8a8_graph, x: torch.Tensor) -> tuple[dict, Callable]:
    """float_sim handed to inductor with its rounding kept (``qpass.compile_exact``): its row, refused unless
    its logits equal w8a8's bit for bit, and the compiled forward (for a profile)."""
    torch._dynamo.reset()
    compiled = qpass.compile_exact(graph, dynamic=False)
    start = time.perf_counter()
    with torch.no_grad():
        same = torch.equal(compiled(x), w8a8_graph(x))
    row = {"float_sim_inductor_compile_s": time.perf_counter() - start, "float_sim_inductor_equals_w8a8": same}
    if same:
        row.update(time_mode("float_sim_inductor", graph, compiled, x))
    return row, compiled


def print_mode_row(name: str, batch: int, length: int, mode: str, row: dict, w8a8_graph_ms: float) -> None:
    if f"{mode}_cuda_graph_blockers" in row:
        print(f"{name} B={batch} L={length} {mode} cannot be captured as a CUDA graph: its graph holds "
              f"{', '.join(row[mode + '_cuda_graph_blockers'])}, which read a scale on the host", flush=True)
    elif f"{mode}_cuda_graph_ms" in row:
        ms = row[f"{mode}_cuda_graph_ms"]
        print(f"{name} B={batch} L={length} {mode} as a CUDA graph: " + (
            f"{ms:.2f} ms, {ms / w8a8_graph_ms:.2f}x w8a8's graph" if ms is not None
            else "REFUSED (its replay differs from its eager logits)"), flush=True)


def bench_config(name: str, g: torch.Generator, profile: bool, shapes: list[tuple[int, int]]) -> list[dict]:
    layers = CONFIGS[name][1]
    ssm, hf, calibrated = calibrated_pair(name, g)
    graphs = {mode: qpass.apply_mode(calibrated, mode) for mode in ("w8a8", "fp32_ssm", "float_sim")}
    fp_graph = qpass.capture(hf)

    ids = torch.randint(0, VOCAB, CHECK_SHAPE, generator=g, device="cuda")
    with torch.no_grad():
        ref = ssm(ids).logits.float()
        fp = fp_graph(ids).float()
        logits = {mode: gm(ids).float() for mode, gm in graphs.items()}
    checks = {
        "fp_graph_vs_mamba_ssm_sqnr_db": sqnr_db(fp, ref),
        "w8a8_vs_mamba_ssm_sqnr_db": sqnr_db(logits["w8a8"], ref),
        "w8a8_top1_agreement": (logits["w8a8"].argmax(-1) == ref.argmax(-1)).double().mean().item(),
        "w8a8_finite": bool(torch.isfinite(logits["w8a8"]).all()),
        "fp32_ssm_equals_w8a8": torch.equal(logits["fp32_ssm"], logits["w8a8"]),
        "float_sim_equals_w8a8": torch.equal(logits["float_sim"], logits["w8a8"]),
    }
    ok = (checks["fp_graph_vs_mamba_ssm_sqnr_db"] >= 20 and checks["w8a8_finite"] and checks["w8a8_top1_agreement"] >= 0.5
          and checks["fp32_ssm_equals_w8a8"] and checks["float_sim_equals_w8a8"])
    print(f"{name}: checks {json.dumps(checks)} -> {'ok' if ok else 'FAILED'}", flush=True)
    del fp_graph

    weight_bytes = {"w8a8": tensor_bytes(graphs["w8a8"]), "mamba_ssm_fp16": tensor_bytes(ssm)}
    eager = {mode: direct_calls(gm) for mode, gm in graphs.items()}
    rows = []
    for batch, length in shapes:
        x = torch.randint(0, VOCAB, (batch, length), generator=g, device="cuda")
        base_ms, base_peak = timed_peak(lambda: ssm(x).logits)
        ours_ms, ours_peak = timed_peak(lambda: eager["w8a8"](x))
        replayed = {"w8a8": CudaGraphReplay(graphs["w8a8"], max_graphs=1),
                    "mamba_ssm": CudaGraphReplay(lambda ids: ssm(ids).logits, max_graphs=1)}
        with torch.no_grad():
            replay_ok = (torch.equal(replayed["w8a8"](x), graphs["w8a8"](x))
                         and torch.equal(replayed["mamba_ssm"](x), ssm(x).logits))
        replay_ms = {k: timed_peak(lambda: r(x))[0] for k, r in replayed.items()}
        del replayed
        row = dict(config=name, batch=batch, length=length, check=ok, mamba_ssm_fp16_ms=base_ms, w8a8_ms=ours_ms,
                   mamba_ssm_working_gib=base_peak, w8a8_working_gib=ours_peak, weight_bytes=weight_bytes, checks=checks,
                   replay_equals_eager=replay_ok, w8a8_cuda_graph_ms=replay_ms["w8a8"],
                   mamba_ssm_fp16_cuda_graph_ms=replay_ms["mamba_ssm"])
        if profile:
            row["kernels_per_forward"] = print_profile(f"{name} w8a8 B={batch} L={length}", layers,
                                                       lambda: graphs["w8a8"](x))
        if (batch, length) == (1, 2048):
            for mode in ("fp32_ssm", "float_sim"):
                row.update(time_mode(mode, graphs[mode], eager[mode], x))
            compiled_row, compiled_float_sim = time_compiled_float_sim(graphs["float_sim"], graphs["w8a8"], x)
            row.update(compiled_row)
            if profile:
                # where float_sim's time goes: its float64 GEMMs and its epilogues as separate elementwise kernels
                row["float_sim_kernels_per_forward"] = print_profile(
                    f"{name} float_sim B=1 L=2048", layers, lambda: eager["float_sim"](x)
                )
                if row["float_sim_inductor_equals_w8a8"]:
                    row["float_sim_inductor_kernels_per_forward"] = print_profile(
                        f"{name} float_sim through inductor B=1 L=2048", layers, lambda: compiled_float_sim(x)
                    )
        speedup = f"{base_ms / ours_ms:.2f}x" if ok else "REFUSED"
        print(f"{name} B={batch} L={length}: mamba-ssm fp16 {base_ms:.2f} ms (+{base_peak:.2f} GiB working), "
              f"w8a8 {ours_ms:.2f} ms (+{ours_peak:.2f} GiB working) -> {speedup}"
              + "".join(f"; {mode} {row[mode + '_ms']:.2f} ms" for mode in ("fp32_ssm", "float_sim") if mode + "_ms" in row),
              flush=True)
        for mode in ("fp32_ssm", "float_sim", "float_sim_inductor"):
            print_mode_row(name, batch, length, mode, row, replay_ms["w8a8"])
        if row.get("float_sim_inductor_equals_w8a8") is False:
            print(f"{name} B={batch} L={length} float_sim through inductor REFUSED: its logits differ from w8a8's",
                  flush=True)
        replay_speedup = f"{replay_ms['mamba_ssm'] / replay_ms['w8a8']:.2f}x" if ok and replay_ok else "REFUSED"
        print(f"{name} B={batch} L={length} as CUDA graphs (replay == eager: {replay_ok}): mamba-ssm fp16 "
              f"{replay_ms['mamba_ssm']:.2f} ms, w8a8 {replay_ms['w8a8']:.2f} ms -> {replay_speedup}; "
              f"w8a8 graph against mamba-ssm eager {base_ms / replay_ms['w8a8']:.2f}x", flush=True)
        rows.append(row)
    print(f"{name}: weights + buffers w8a8 {weight_bytes['w8a8'] / 2**30:.3f} GiB, mamba-ssm fp16 "
          f"{weight_bytes['mamba_ssm_fp16'] / 2**30:.3f} GiB ({weight_bytes['w8a8'] / weight_bytes['mamba_ssm_fp16']:.2f}x)",
          flush=True)
    return rows


def run_benchmark(configs: str, bench: Callable[[str, torch.Generator], list[dict]], json_path: str | None) -> None:
    """Each of the comma-separated ``configs`` through ``bench(name, generator)`` on the GPU (one seeded
    generator for the run), its rows written to ``json_path`` with the device's name when given."""
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA device")
    g = torch.Generator(device="cuda").manual_seed(0)
    print(f"device: {torch.cuda.get_device_name()}", flush=True)
    rows = []
    for name in configs.split(","):
        rows += bench(name, g)
        torch.cuda.empty_cache()
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "rows": rows}, f, indent=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset of " + ",".join(CONFIGS))
    parser.add_argument("--json", default=None, help="also write every row and check here")
    parser.add_argument("--profile", action="store_true", help="print the w8a8 kernels of one forward at each shape (and float_sim's at B=1, L=2048)")
    parser.add_argument("--shapes", default=",".join(f"{b}x{n}" for b, n in SHAPES),
                        help="comma-separated BATCHxLENGTH shapes to time (default: %(default)s)")
    args = parser.parse_args()
    shapes = [tuple(int(v) for v in shape.split("x")) for shape in args.shapes.split(",")]
    run_benchmark(args.configs, lambda name, g: bench_config(name, g, args.profile, shapes), args.json)


if __name__ == "__main__":
    main()
