"""benchmarks/bench_step.py: its variants are bench_decode's rewrites after the functional step, a bad name
is refused with the list, and on a GPU it times every variant of a small model's step (whose logits the
timer first checks against the functional step's)."""

import pytest
import torch

from benchmark_modules import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_step")


def test_variants_follow_the_functional_step(bench):
    chosen = bench.chosen_rewrites("default,in_place")
    assert list(chosen) == ["functional", "default", "in_place"]
    assert chosen["in_place"] == bench.bench_decode.REWRITES["in_place"]


def test_an_unknown_variant_is_refused_with_the_choices(bench):
    with pytest.raises(ValueError, match=r"unknown variant\(s\) \['defualt'\]; choose among \['functional'"):
        bench.chosen_rewrites("defualt")


def test_the_model_is_w8a8_with_the_asked_dimensions(bench):
    qmodel = bench.step_model(64, 2, 97, torch.Generator().manual_seed(0), "cpu")
    assert qmodel.mode == "w8a8"
    assert (qmodel.config.hidden_size, qmodel.config.num_hidden_layers, qmodel.config.time_step_rank) == (64, 2, 4)
    tokens = qmodel.generate(torch.randint(0, 97, (2, 5)), max_new_tokens=3, eos_token_id=[])
    assert tokens.shape == (2, 8)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: run scripts/gpu_tests.sh on a CUDA machine")
def test_every_variant_of_a_small_step_is_timed_on_the_gpu(bench):
    g = torch.Generator(device="cuda").manual_seed(0)
    qmodel = bench.step_model(256, 2, 512, g, "cuda")
    times = bench.time_steps(qmodel, 4, bench.chosen_rewrites("default,in_place"), g)
    assert times is not None, "a rewritten step's logits differ from the functional step's"
    assert set(times) == {"functional", "default", "in_place", "default, independent launches"}
    assert all(ms > 0 for ms in times.values())
