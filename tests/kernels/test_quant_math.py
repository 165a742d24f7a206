"""The bit-manipulating conversions of ``quant_math`` against PyTorch's, over the whole int32 range, the
int8 codes' edges and float64 values around every bound the rounding relies on."""

import torch
import triton
import triton.language as tl

from mamba_qpass.kernels.quant_math import EXACT_FP_LAUNCH, tl_int32_to_float64, tl_round_half_even_clamp_int8
from mamba_qpass.numerics import round_half_even_clamp_int8


@triton.jit
def _convert_kernel(x_ptr, as_float_ptr, codes_ptr, scale_ptr, N, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    v = tl_int32_to_float64(tl.load(x_ptr + offs, mask=mask, other=0))
    tl.store(as_float_ptr + offs, v, mask=mask)
    tl.store(codes_ptr + offs, tl_round_half_even_clamp_int8(v * tl.load(scale_ptr)), mask=mask)


def test_int32_to_float64_and_codes_are_exact(device):
    g = torch.Generator().manual_seed(0)
    edges = torch.tensor([-2**31, -2**31 + 1, -2**24 - 1, -129, -128, -127, -1, 0, 1, 127, 128, 2**24 + 1, 2**31 - 1])
    x = torch.cat([edges, torch.randint(-2**31, 2**31 - 1, (4000,), generator=g)]).to(torch.int32).to(device)
    for scale in (1.0, 0.5, 2.0**-20, 3.7e-7):  # 0.5 puts half the values on ties
        as_float = torch.empty(x.shape, dtype=torch.float64, device=device)
        codes = torch.empty(x.shape, dtype=torch.int8, device=device)
        scale_t = torch.tensor(scale, dtype=torch.float64, device=device)
        _convert_kernel[(triton.cdiv(x.numel(), 1024),)](x, as_float, codes, scale_t, x.numel(), BLOCK=1024, **EXACT_FP_LAUNCH)
        assert torch.equal(as_float, x.double())
        assert torch.equal(codes, round_half_even_clamp_int8(x.double() * scale))


@triton.jit
def _codes_kernel(v_ptr, codes_ptr, N, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    tl.store(codes_ptr + offs, tl_round_half_even_clamp_int8(tl.load(v_ptr + offs, mask=mask, other=0.0)), mask=mask)


def test_codes_of_float64_values_at_every_bound(device):
    """Ties at the clamp's edges, values whose rounding reaches 2**30 and 2**31 (the low word's sign bit),
    the rounding trick's 2**51 and 2**52, subnormals, the largest doubles and the infinities."""
    bounds = [0.0, 0.5, 1.5, 2.5, 126.5, 127.0, 127.5, 128.0, 128.5, 129.0, 255.5, 256.0, 2.0**30, 2.0**31, 2.0**32,
              2.0**51, 2.0**52, 2.0**53, 2.0**63, 2.0**64, 1e300, float("inf"), 5e-324, 2.2e-308]
    nudged = [f(b) for b in bounds for f in (lambda b: b, lambda b: torch.nextafter(torch.tensor(b, dtype=torch.float64),
                                                                                     torch.tensor(0.0, dtype=torch.float64)).item(),
                                              lambda b: torch.nextafter(torch.tensor(b, dtype=torch.float64),
                                                                        torch.tensor(float("inf"), dtype=torch.float64)).item(),
                                              lambda b: b - 0.5, lambda b: b + 0.5)]
    g = torch.Generator().manual_seed(0)
    spread = torch.randn(4000, generator=g, dtype=torch.float64) * torch.logspace(-3, 12, 4000, dtype=torch.float64)
    v = torch.cat([torch.tensor(nudged, dtype=torch.float64), spread])
    v = torch.cat([v, -v]).to(device)
    codes = torch.empty(v.shape, dtype=torch.int8, device=device)
    _codes_kernel[(triton.cdiv(v.numel(), 1024),)](v, codes, v.numel(), BLOCK=1024, **EXACT_FP_LAUNCH)
    assert torch.equal(codes, round_half_even_clamp_int8(v))
