"""float_sim's GEMM: float32 chunk GEMMs of int8 codes (float16 tensor cores on CUDA, float64 reference
elsewhere) against int64 arithmetic, exactly, on operands that push every float32 partial sum towards
2**24; and the chunking of a K longer than one exact float32 sum, through float_sim's graph."""

import pytest
import torch

import mamba_qpass as qpass
from mamba_qpass import numerics, ops
from mamba_qpass.kernels.code_matmul.reference import TERMS, code_matmul_chunk_ref, code_matmul_ref
from models import random_mamba

qops = torch.ops.mamba_qpass


def _exact(a: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return (a.long().cpu() @ weight.long().cpu().T).double()


def _random_codes(shape, g) -> torch.Tensor:
    return torch.randint(-128, 128, shape, generator=g).to(torch.int8)


@pytest.mark.parametrize("k", [1, 160, 768, TERMS], ids=lambda k: f"K{k}")
def test_a_chunk_gives_the_exact_accumulator_on_random_codes(k, device):
    g = torch.Generator().manual_seed(k)
    a, weight = _random_codes((2, 5, k), g), _random_codes((24, k), g)
    a_float, weight16 = a.float().to(device), weight.half().to(device)
    exact = _exact(a.reshape(-1, k), weight).reshape(2, 5, 24)
    assert torch.equal(code_matmul_ref(a_float, weight16).cpu(), exact)
    out = ops.code_matmul_chunk(a_float, weight16)
    assert out.dtype == torch.float32 and out.shape == (2, 5, 24) and out.device.type == device.type
    assert torch.equal(out.cpu().double(), exact)
    assert torch.equal(out, code_matmul_chunk_ref(a_float, weight16))


def test_a_chunk_longer_than_an_exact_float32_sum_is_refused(device):
    a = torch.zeros(1, TERMS + 1, device=device)
    with pytest.raises(ValueError, match=f"exact for at most {TERMS} terms.*split K into chunks"):
        ops.code_matmul_chunk(a, torch.zeros(2, TERMS + 1, dtype=torch.float16, device=device))


def _near_float32_limit(rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of TERMS columns whose partial sums climb to within a few hundred thousand of 2**24 with the
    largest products (128 * 128, and -128 * 127), then add terms of +-1 that a sum keeping fewer than 24
    bits would drop; half the rows put the small terms first, some shuffle the order."""
    g = torch.Generator().manual_seed(rows)
    big = TERMS - 24
    a = torch.full((rows, TERMS), -128, dtype=torch.int8)
    weight = torch.full((rows, TERMS), -128, dtype=torch.int8)
    weight[::3] = 127
    a[:, big:] = torch.randint(0, 2, (rows, TERMS - big), generator=g).to(torch.int8) * 2 - 1
    weight[:, big:] = 1
    for r in range(1, rows, 2):
        a[r], weight[r] = a[r].flip(0), weight[r].flip(0)
    for r in range(2, rows, 4):
        order = torch.randperm(TERMS, generator=g)
        a[r], weight[r] = a[r, order], weight[r, order]
    return a, weight


def test_a_chunk_keeps_every_bit_near_the_float32_limit(device):
    a, weight = _near_float32_limit(rows=16)
    exact = _exact(a, weight).diagonal()
    assert exact.abs().min() > 2**23.95, "every float32 sum must come near 2**24"
    out = ops.code_matmul_chunk(a.float().to(device), weight.half().to(device)).cpu().double().diagonal()
    assert torch.equal(out, exact), f"{(out != exact).sum().item()} of {exact.numel()} sums differ"


def test_float_sim_sums_a_long_k_in_exact_chunks(monkeypatch):
    """With chunks of 16 columns every GEMM of a tiny model is split (K = 32 and 64): float_sim's logits
    stay w8a8's bit for bit, and the chunks show in its graph."""
    model = random_mamba(initializer_range=0.02)
    g = torch.Generator().manual_seed(5)
    calibrated = qpass.calibrate(model, [torch.randint(0, 97, (2, 24), generator=g)], progress=False)
    monkeypatch.setattr(numerics, "CODE_PRODUCT_TERMS", 16)
    float_sim = qpass.apply_mode(calibrated, "float_sim")
    chunks = [n for n in float_sim.graph.nodes if n.target == qops.code_matmul_chunk.default]
    linears = [n for n in qpass.apply_mode(calibrated, "w8a8").graph.nodes if n.target == qops.int8_linear.default]
    assert len(chunks) > 2 * len(linears)
    ids = torch.randint(0, 97, (2, 30), generator=g)
    with torch.no_grad():
        assert torch.equal(float_sim(ids), qpass.apply_mode(calibrated, "w8a8")(ids))


@pytest.mark.gpu
@pytest.mark.parametrize(
    "m,n,k", [(2048, 10240, 1024), (2048, 10240, 512), (2048, 192, 1024), (2048, 5120, 160), (1, 10240, 1024),
              (16, 2560, 1024)],
    ids=lambda v: str(v),
)
def test_a_chunk_is_exact_at_the_2_8b_shapes_on_the_gpu(m, n, k):
    g = torch.Generator().manual_seed(m + n + k)
    a = _random_codes((m, k), g).float().cuda()
    weight16 = _random_codes((n, k), g).half().cuda()
    assert torch.equal(ops.code_matmul_chunk(a, weight16).double(), code_matmul_ref(a, weight16))
