"""The int8 rules every layer shares, in plain PyTorch: the code range, the rounding, the Hadamard matrix
and its scale. Passes, op references and the comparison tool all read them here; nothing here imports a
kernel or Triton (``kernels/quant_math.py`` holds the Triton twin of the rounding).

Rounding: every requantisation computes a float64 value and takes as its int8 code the value clamped to
[-128, 127] first, then rounded half to even. After the clamp the value is an integer in range, so the
conversion to int8 is exact.

Hadamard: ``hadamard_matrix(D)`` is the unnormalised ±1 matrix (H @ H.T == D * I) of the orders Mamba's
inner sizes need, D = m * 2**k with m in {1, 12, 20}: H_D = H_m ⊗ H_{2**k}, Sylvester's doubling for the
power of two and Paley's first construction for m = q + 1 with q = 11 and q = 19 (primes with
q % 4 == 3). The 1/sqrt(D) that makes it a rotation is folded into the output scale.
"""

import math

import torch

INT8_MIN = -128
INT8_MAX = 127

# A ±1 sum of D float16 values is exact in float64 for D up to this order: float16 values are multiples
# of 2**-24 below 2**16, so the sum is a multiple of 2**-24 below 2**29 and needs at most 53 bits.
MAX_EXACT_HADAMARD_ORDER = 2**13

PALEY_PRIMES = {12: 11, 20: 19}  # order m -> prime q with m = q + 1

# A product of two int8 codes is at most 128 * 128 = 2**14 in magnitude, so every partial sum of up to this
# many of them is an integer of magnitude at most 2**24: exact in float32, whatever the order of the additions.
CODE_PRODUCT_TERMS = 1024
assert CODE_PRODUCT_TERMS * INT8_MIN * INT8_MIN <= 2**24


def int8_grid(v: torch.Tensor) -> torch.Tensor:
    """The int8 codes of a float64 tensor as float64 values: clamp to [-128, 127], round half to even."""
    if v.dtype != torch.float64:
        raise ValueError(f"int8 codes are computed from float64 values, got {v.dtype}")
    return torch.round(v.clamp(float(INT8_MIN), float(INT8_MAX)))


def round_half_even_clamp_int8(v: torch.Tensor) -> torch.Tensor:
    """int8 codes of a float64 tensor: ``int8_grid`` converted (exactly) to int8."""
    return int8_grid(v).to(torch.int8)


def _sylvester(order: int) -> torch.Tensor:
    """H[i, j] = (-1) ** popcount(i & j), the Kronecker power of [[1, 1], [1, -1]]."""
    h = torch.ones(1, 1, dtype=torch.int64)
    while h.shape[0] < order:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def _paley_type_one(q: int) -> torch.Tensor:
    """Order q + 1 for a prime q = 3 (mod 4).

    With chi the quadratic character mod q (chi(0) = 0, +1 on nonzero squares, -1 otherwise) the
    Jacobsthal matrix Q[i, j] = chi(j - i) is antisymmetric (chi(-1) = -1 when q = 3 mod 4) and satisfies
    Q @ Q.T = q * I - J. Bordering it, S = [[0, 1^T], [-1, Q]] is antisymmetric with S @ S.T = q * I, so
    H = I + S has H @ H.T = I + S @ S.T = (q + 1) * I (the cross terms S + S.T cancel).
    """
    squares = {(a * a) % q for a in range(1, q)}
    chi = torch.tensor([0] + [1 if a in squares else -1 for a in range(1, q)], dtype=torch.int64)
    idx = torch.arange(q)
    jacobsthal = chi[(idx[None, :] - idx[:, None]) % q]
    s = torch.zeros(q + 1, q + 1, dtype=torch.int64)
    s[0, 1:] = 1
    s[1:, 0] = -1
    s[1:, 1:] = jacobsthal
    return torch.eye(q + 1, dtype=torch.int64) + s


def hadamard_factors(order: int) -> tuple[int, int]:
    """(m, 2**k) with order = m * 2**k and m in {1, 12, 20}: hadamard_matrix(order) is
    kron(hadamard_matrix(m), hadamard_matrix(2**k))."""
    for m in (1, *PALEY_PRIMES):
        power = order // m
        if order >= 1 and order % m == 0 and power & (power - 1) == 0:
            return m, power
    raise ValueError(
        f"no Hadamard matrix of order {order}: supported orders are m * 2**k with m in {{1, 12, 20}} "
        "(e.g. 768, 1024, 1536, 2048, 3072, 4096, 5120)"
    )


def hadamard_matrix(order: int, dtype: torch.dtype = torch.int8) -> torch.Tensor:
    """The ±1 matrix H_order (unnormalised: H @ H.T == order * I), as ``dtype``."""
    m, power = hadamard_factors(order)
    small = _sylvester(1) if m == 1 else _paley_type_one(PALEY_PRIMES[m])
    return torch.kron(small, _sylvester(power)).to(dtype)


def hadamard_output_scale(out_inv_scale: torch.Tensor, order: int) -> torch.Tensor:
    """c = out_inv_scale * (1 / sqrt(order)) as a float64 scalar tensor (shape ()), on out_inv_scale's device.

    1 / sqrt(order) is a Python float, so c is the same IEEE product on every device; dividing the tensor
    by sqrt(order) instead would not be (CUDA divides a tensor by a scalar as a multiply by its reciprocal).
    """
    return out_inv_scale.to(torch.float64).reshape(()) * hadamard_norm(order)


def hadamard_norm(order: int) -> float:
    """1 / sqrt(order), the factor that makes ``hadamard_matrix(order)`` a rotation (a float64 number)."""
    return 1.0 / math.sqrt(order)
