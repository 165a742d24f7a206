"""code_matmul (float16 tensor cores on CUDA, float32 on CPU) against its float64 reference and against
int64 arithmetic: the same accumulator exactly, on operands that push every float32 sum towards 2**24."""

import pytest
import torch

from mamba_qpass import ops
from mamba_qpass.kernels.code_matmul.reference import code_matmul_ref, weight_from_nibbles
from mamba_qpass.kernels.code_matmul.tensor_cores import TERMS, code_matmul
from mamba_qpass.numerics import weight_code_nibbles


def _exact(a: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return (a.long().cpu() @ weight.long().cpu().T).double()


def _random_codes(shape, g, low=-128) -> torch.Tensor:
    return torch.randint(low, 128, shape, generator=g).to(torch.int8)


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


@pytest.mark.parametrize("k", [1, 160, 5120, TERMS + 300], ids=lambda k: f"K{k}")
def test_code_matmul_is_exact_on_random_codes(k, device):
    g = torch.Generator().manual_seed(k)
    a, weight = _random_codes((2, 5, k), g), _random_codes((24, k), g, low=-127)
    nibbles = weight_code_nibbles(weight).to(device)
    a_float = a.float().to(device)
    exact = _exact(a.reshape(-1, k), weight).reshape(2, 5, 24)
    assert torch.equal(code_matmul_ref(a_float, nibbles).cpu(), exact)
    out = code_matmul(a_float, nibbles)
    assert out.dtype == torch.float64 and torch.equal(out.cpu(), exact)


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


@pytest.mark.parametrize("k", [TERMS, 2 * TERMS], ids=lambda k: f"K{k}")
def test_code_matmul_keeps_every_bit_near_the_float32_limit(k, device):
    a, weight = _near_float32_limit(k, rows=16)
    exact = _exact(a, weight)
    low_sums = (a[:, :TERMS].long() * (weight[:, :TERMS].long() % 16)).sum(1)
    assert low_sums.abs().max() > 2**23.8, "the low nibbles' float32 sums must come near 2**24"
    out = code_matmul(a.float().to(device), weight_code_nibbles(weight).to(device))
    assert torch.equal(out.cpu(), exact), f"{(out.cpu() != exact).sum().item()} of {exact.numel()} sums differ"


def test_the_op_runs_the_device_implementation(device):
    g = torch.Generator().manual_seed(3)
    a, weight = _random_codes((7, 300), g), _random_codes((9, 300), g, low=-127)
    out = ops.code_matmul(a.float().to(device), weight_code_nibbles(weight).to(device))
    assert out.device.type == device.type and torch.equal(out.cpu(), _exact(a, weight))


@pytest.mark.gpu
@pytest.mark.parametrize(
    "m,n,k", [(2048, 10240, 2560), (2048, 2560, 5120), (2048, 192, 5120), (2048, 5120, 160), (1, 10240, 2560), (16, 2560, 5120)],
    ids=lambda v: str(v),
)
def test_code_matmul_is_exact_at_the_2_8b_shapes_on_the_gpu(m, n, k):
    g = torch.Generator().manual_seed(m + n + k)
    a = _random_codes((m, k), g).float().cuda()
    nibbles = weight_code_nibbles(_random_codes((n, k), g, low=-127)).cuda()
    assert torch.equal(code_matmul(a, nibbles), code_matmul_ref(a, nibbles))
