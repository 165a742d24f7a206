"""float_sim's GEMM: nibble products (float16 tensor cores on CUDA, float64 reference elsewhere) and their
float64 accumulator against int64 arithmetic, exactly, on operands that push every float32 sum towards
2**24; and the chunking of a K longer than one exact float32 sum, through float_sim's graph."""

import pytest
import torch

import mamba_qpass as qpass
from mamba_qpass import numerics, ops
from mamba_qpass.kernels.code_matmul.reference import (
    TERMS, accumulator_from_products, code_matmul_ref, nibble_products_ref, weight_from_nibbles,
)
from mamba_qpass.numerics import weight_code_nibbles
from models import random_mamba

qops = torch.ops.mamba_qpass


def _exact(a: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return (a.long().cpu() @ weight.long().cpu().T).double()


def _random_codes(shape, g, low=-128) -> torch.Tensor:
    return torch.randint(low, 128, shape, generator=g).to(torch.int8)


def _accumulator(a: torch.Tensor, nibbles: torch.Tensor) -> torch.Tensor:
    return accumulator_from_products(ops.nibble_products(a, nibbles))


def test_nibbles_hold_every_weight_code():
    codes = torch.arange(-127, 128, dtype=torch.int8).reshape(5, 51)
    nibbles = weight_code_nibbles(codes)
    high, low = nibbles.chunk(2)
    assert nibbles.dtype == torch.float16 and nibbles.shape == (10, 51)
    assert high.min() == -8 and high.max() == 7 and low.min() == 0 and low.max() == 15
    assert torch.equal(weight_from_nibbles(nibbles), codes.double())


def test_nibbles_reject_non_int8_weights():
    with pytest.raises(ValueError, match="int8 \\(N, K\\) matrix"):
        weight_code_nibbles(torch.zeros(3, 4))


@pytest.mark.parametrize("k", [1, 160, 5120, TERMS], ids=lambda k: f"K{k}")
def test_nibble_products_give_the_exact_accumulator_on_random_codes(k, device):
    g = torch.Generator().manual_seed(k)
    a, weight = _random_codes((2, 5, k), g), _random_codes((24, k), g, low=-127)
    nibbles = weight_code_nibbles(weight).to(device)
    a_float = a.float().to(device)
    exact = _exact(a.reshape(-1, k), weight).reshape(2, 5, 24)
    assert torch.equal(code_matmul_ref(a_float, nibbles).cpu(), exact)
    products = ops.nibble_products(a_float, nibbles)
    assert products.dtype == torch.float32 and products.shape == (2, 5, 48) and products.device.type == device.type
    assert torch.equal(products.cpu(), nibble_products_ref(a_float, nibbles).cpu())
    out = accumulator_from_products(products)
    assert out.dtype == torch.float64 and torch.equal(out.cpu(), exact)


def test_nibble_products_refuse_a_k_longer_than_an_exact_float32_sum(device):
    a = torch.zeros(1, TERMS + 1, device=device)
    with pytest.raises(ValueError, match=f"at most {TERMS} terms.*split K into chunks"):
        ops.nibble_products(a, torch.zeros(2, TERMS + 1, dtype=torch.float16, device=device))


def _near_float32_limit(k: int, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows whose partial sums climb to within a few thousand of 2**24 with the largest products
    (-128 * 127: both nibbles' products at their extremes), then add terms of +-1 that a sum keeping fewer
    than 24 bits would drop; half the rows put the small terms first, some shuffle the order."""
    g = torch.Generator().manual_seed(rows)
    big = k - 256
    a = torch.full((rows, k), -128, dtype=torch.int8)
    weight = torch.full((rows, k), 127, dtype=torch.int8)
    a[:, big:] = torch.randint(0, 2, (rows, k - big), generator=g).to(torch.int8) * 2 - 1
    weight[:, big:] = 1
    for r in range(1, rows, 2):
        a[r], weight[r] = a[r].flip(0), weight[r].flip(0)
    for r in range(2, rows, 4):
        order = torch.randperm(k, generator=g)
        a[r], weight[r] = a[r, order], weight[r, order]
    return a, weight


def test_nibble_products_keep_every_bit_near_the_float32_limit(device):
    a, weight = _near_float32_limit(TERMS, rows=16)
    exact = _exact(a, weight)
    low_sums = (a.long() * (weight.long() % 16)).sum(1)
    assert low_sums.abs().max() > 2**23.8, "the low nibbles' float32 sums must come near 2**24"
    out = _accumulator(a.float().to(device), weight_code_nibbles(weight).to(device))
    assert torch.equal(out.cpu(), exact), f"{(out.cpu() != exact).sum().item()} of {exact.numel()} sums differ"


def test_float_sim_sums_a_long_k_in_exact_chunks(monkeypatch):
    """With chunks of 16 columns every GEMM of a tiny model is split (K = 32 and 64): float_sim's logits
    stay w8a8's bit for bit, and the chunks show in its graph."""
    model = random_mamba(initializer_range=0.02)
    g = torch.Generator().manual_seed(5)
    calibrated = qpass.calibrate(model, [torch.randint(0, 97, (2, 24), generator=g)], progress=False)
    monkeypatch.setattr(numerics, "NIBBLE_PRODUCT_TERMS", 16)
    float_sim = qpass.apply_mode(calibrated, "float_sim")
    products = [n for n in float_sim.graph.nodes if n.target == qops.nibble_products.default]
    linears = [n for n in qpass.apply_mode(calibrated, "w8a8").graph.nodes if n.target == qops.int8_linear.default]
    assert len(products) > 2 * len(linears)
    ids = torch.randint(0, 97, (2, 30), generator=g)
    with torch.no_grad():
        assert torch.equal(float_sim(ids), qpass.apply_mode(calibrated, "w8a8")(ids))


@pytest.mark.gpu
@pytest.mark.parametrize(
    "m,n,k", [(2048, 10240, 2560), (2048, 2560, 5120), (2048, 192, 5120), (2048, 5120, 160), (1, 10240, 2560), (16, 2560, 5120)],
    ids=lambda v: str(v),
)
def test_nibble_products_are_exact_at_the_2_8b_shapes_on_the_gpu(m, n, k):
    g = torch.Generator().manual_seed(m + n + k)
    a = _random_codes((m, k), g).float().cuda()
    nibbles = weight_code_nibbles(_random_codes((n, k), g, low=-127)).cuda()
    assert torch.equal(_accumulator(a, nibbles), code_matmul_ref(a, nibbles))
