"""The int8 rules every layer shares (mamba_qpass.numerics): rounding, range, the Hadamard matrix."""

import math

import pytest
import torch

from mamba_qpass.numerics import (
    hadamard_factors,
    hadamard_matrix,
    hadamard_output_scale,
    int8_grid,
    round_half_even_clamp_int8,
)


# --- rounding ----------------------------------------------------------------------------------------

def test_ties_round_to_even_and_out_of_range_values_saturate():
    v = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, 127.4, 127.6, -128.5, -128.4, 1e300, -1e300],
                     dtype=torch.float64)
    expected = [0, 2, 2, 0, -2, -2, 126, 127, 127, -128, -128, 127, -128]
    assert int8_grid(v).tolist() == expected
    codes = round_half_even_clamp_int8(v)
    assert codes.dtype == torch.int8 and codes.tolist() == expected


def test_grid_values_are_integers_in_range():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(10_000, generator=g, dtype=torch.float64) * 200
    grid = int8_grid(v)
    assert torch.equal(grid, grid.round()) and grid.min() == -128 and grid.max() == 127
    assert torch.equal(round_half_even_clamp_int8(v).double(), grid)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_rounding_refuses_narrower_floats(dtype):
    with pytest.raises(ValueError, match="from float64 values"):
        int8_grid(torch.zeros(3, dtype=dtype))


# --- the Hadamard matrix -----------------------------------------------------------------------------

@pytest.mark.parametrize("order", [1, 2, 4, 12, 20, 24, 40, 48, 96, 160, 768, 1536])
def test_hadamard_matrix_is_hadamard(order):
    h = hadamard_matrix(order)
    assert h.dtype == torch.int8 and h.shape == (order, order)
    assert set(h.unique().tolist()) <= {-1, 1}
    hf = h.float()  # ±1 sums of at most 1536 terms are exact in float32
    assert torch.equal(hf @ hf.T, order * torch.eye(order))


@pytest.mark.parametrize("order", [1, 12, 20, 48, 1536, 5120])
def test_hadamard_matrix_is_the_kronecker_product_of_its_factors(order):
    m, power = hadamard_factors(order)
    assert m * power == order and m in (1, 12, 20)
    assert torch.equal(hadamard_matrix(order), torch.kron(hadamard_matrix(m), hadamard_matrix(power)))


@pytest.mark.parametrize("order", [0, -4, 3, 6, 28, 36, 44, 100, 1000])
def test_hadamard_matrix_rejects_unsupported_orders(order):
    with pytest.raises(ValueError, match=r"m \* 2\*\*k with m in \{1, 12, 20\}"):
        hadamard_matrix(order)


def test_hadamard_matrix_dtype():
    assert hadamard_matrix(12, dtype=torch.float64).dtype == torch.float64


@pytest.mark.parametrize("shape", [(), (1,)], ids=["scalar", "one_element"])
def test_hadamard_output_scale_multiplies_by_the_python_reciprocal_root(shape):
    inv = torch.full(shape, 10.7, dtype=torch.float64)
    c = hadamard_output_scale(inv, 1536)
    assert c.shape == () and c.dtype == torch.float64
    assert c.item() == 10.7 * (1.0 / math.sqrt(1536))
