"""benchmarks/bench_decode.py imports without a GPU or mamba-ssm, and its CPU-side arithmetic is right: decode
rates from generate and prefill times, and the bytes of the decode states it reports."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

import mamba_qpass as qpass
from mamba_qpass.runtime.generate import prefill
from models import random_mamba
from test_w8a8 import token_batches

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location("bench_decode", BENCHMARKS / "bench_decode.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


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
