"""benchmarks/bench_decode.py imports without a GPU or mamba-ssm, and its CPU-side arithmetic is right: decode
rates from generate and prefill times, and the bytes of the decode states it reports."""

import sys

import pytest
import torch

import mamba_qpass as qpass
from benchmark_modules import load_benchmark
from mamba_qpass.runtime.generate import prefill
from models import random_mamba
from test_w8a8 import token_batches


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_decode")


def test_decode_rates_leave_out_the_prefill(bench):
    # 256 new tokens: the first from the prefill (0.5 s), 255 decode steps in the remaining 2.55 s
    rates = bench.decode_rates(generate_s=3.05, prefill_s=0.5, new_tokens=256, batch=16)
    assert rates["ms_per_token"] == pytest.approx(10.0)
    assert rates["tokens_per_s"] == pytest.approx(1600.0)


def test_state_bytes_are_int8_conv_codes_and_fp32_ssm_states(bench):
    model = random_mamba()
    qmodel = qpass.apply(model, "w8a8", token_batches(97), progress=False)
    _, states = prefill(qmodel._generation_runtime()["step_graph"], list(torch.randint(0, 97, (3, 9))))
    layers, inner, state, width = 2, 64, 8, 4
    assert bench.tensors_bytes(states) == layers * 3 * (inner * (width - 1) * 1 + inner * state * 4)


@pytest.mark.parametrize("mode", ["w8a8", "fp"])
@torch.no_grad()
def test_decode_vs_prefix_compares_the_last_step_and_the_ssm_states_with_a_prefill_of_every_token(bench, mode):
    """On the CPU a decode gives a prefill's logits and SSM states to float32 rounding (w8a8: the same codes),
    far above the check's bar; the SSM states of a decode that started from another prompt's states, or
    that missed one token, fall below it."""
    qmodel = qpass.apply(random_mamba(), mode, token_batches(97) if mode == "w8a8" else None, progress=False)
    tokens = torch.randint(0, 97, (2, 30), generator=torch.Generator().manual_seed(1))
    assert min(bench.decode_vs_prefix_sqnr_db(qmodel, tokens, bench.decoded(qmodel, tokens, 14)).values()) > 80
    other_prompt = torch.cat([torch.zeros_like(tokens[:, :14]), tokens[:, 14:]], 1)
    missed_token = torch.cat([tokens[:, :13], tokens[:, 14:]], 1)
    for wrong, prompt_len in ((other_prompt, 14), (missed_token, 13)):
        wrong_decode = bench.decoded(qmodel, wrong, prompt_len)
        assert bench.decode_vs_prefix_sqnr_db(qmodel, tokens, wrong_decode)["ssm_states"] < bench.FP_DECODE_MIN_DB


def test_kernel_times_by_layer_position_tells_the_projections_apart(bench):
    """Three layers of norm, linear, scan, linear after an embedding, then a head: the two linears by
    position, the embedding and the head left out; a layer that launches differently gives None."""
    layer = [("norm", 2.0), ("linear", 10.0), ("scan", 4.0), ("linear", 6.0)]
    kernels = [("embedding", 50.0)] + layer + [(n, t + 1.0) for n, t in layer] + [(n, t + 2.0) for n, t in layer] + [("head", 70.0)]
    by_position = sys.modules["bench_prefill"].kernel_times_by_layer_position  # bench_decode's profile, from bench_prefill
    assert by_position(kernels, layers=3) == [("norm", 3.0), ("linear", 11.0), ("scan", 5.0), ("linear", 7.0)]
    assert by_position(kernels[:-3] + [("other", 1.0)] + kernels[-2:], layers=3) is None


@pytest.mark.parametrize("device", [
    # the in-place step calls the Triton kernels, which run on CPU tensors only in the interpreter
    pytest.param("cpu", marks=pytest.mark.skipif(torch.cuda.is_available(), reason="Triton is compiled for the GPU here")),
    pytest.param("cuda", marks=pytest.mark.gpu),
])
@torch.no_grad()
def test_the_one_row_variant_sets_the_tiling_and_decodes_as_the_rule(bench, device):
    """bench_decode's one-row variant: every in-place state update of the step graph takes ONE_ROW_TILE, the
    graph it copies keeps the rule, and five steps decode as the rule's (bit for bit on the GPU, where the
    tiles share the C reduction's layout; to float32 rounding in the interpreter, whose exp may depend on
    the array's shape)."""
    from mamba_qpass.runtime.fuse_dt_proj import fuse_dt_proj
    from mamba_qpass.runtime.in_place_states import update_states_in_place

    model = random_mamba(initializer_range=0.02)
    qmodel = qpass.apply(model, "w8a8", token_batches(97), progress=False)
    step_graph = qmodel._generation_runtime()["step_graph"].to(device)
    rule = fuse_dt_proj(update_states_in_place(step_graph))
    tiled = bench.with_one_row_tile(rule)
    scans = [n for n in tiled.graph.nodes if n.op == "call_function" and n.target in bench.IN_PLACE_SCANS]
    assert len(scans) == 2 and all(n.kwargs["tiling"] == bench.ONE_ROW_TILE for n in scans)
    assert all("tiling" not in n.kwargs for n in rule.graph.nodes)

    ids = torch.randint(0, 97, (3, 9), generator=torch.Generator().manual_seed(3)).to(device)
    _, states = prefill(step_graph, list(ids[:, :4]))
    logits = {}
    for name, graph in (("rule", rule), ("tiled", tiled)):
        buffers = tuple(s.clone() for s in states)
        outs = []
        for t in range(4, 9):
            out, buffers = graph(ids[:, t : t + 1], *buffers)
            outs.append(out)
        logits[name] = torch.cat(outs, 1)
    if device == "cuda":
        assert torch.equal(logits["tiled"], logits["rule"])
    else:
        torch.testing.assert_close(logits["tiled"], logits["rule"], rtol=1e-4, atol=1e-4)
        assert torch.equal(logits["tiled"].argmax(-1), logits["rule"].argmax(-1))
