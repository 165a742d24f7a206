"""Unnormalised ±1 Hadamard matrices of the orders Mamba's inner sizes need: D = m * 2**k, m in {1, 12, 20}.

H_D = H_m ⊗ H_{2**k}: Sylvester's doubling for the power of two, and Paley's first construction for
m = q + 1 with q = 11 and q = 19 (primes with q % 4 == 3). Every one satisfies H @ H.T == D * I.

Kernels apply the matrix as two small Kronecker factors (``kronecker_split``): Sylvester matrices are
Kronecker powers of H_2, so H_m ⊗ H_{2**k} = H_{m * 2**a} ⊗ H_{2**(k - a)} for any 0 <= a <= k.
"""

import torch

PALEY_PRIMES = {12: 11, 20: 19}  # order m -> prime q with m = q + 1
MAX_RIGHT_FACTOR = 256  # largest power-of-two factor a kernel holds as one (C, C) tile


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


def _split_order(order: int) -> tuple[int, int] | None:
    """(m, 2**k) with order = m * 2**k and m in {1, 12, 20}, or None."""
    if order < 1:
        return None
    for m in (1, *PALEY_PRIMES):
        if order % m == 0:
            power = order // m
            if power & (power - 1) == 0:
                return m, power
    return None


def _checked_split(order: int) -> tuple[int, int]:
    split = _split_order(order)
    if split is None:
        raise ValueError(
            f"no Hadamard matrix of order {order}: supported orders are m * 2**k with m in {{1, 12, 20}} "
            "(e.g. 768, 1024, 1536, 2048, 3072, 4096, 5120)"
        )
    return split


def is_supported_order(order: int) -> bool:
    return _split_order(order) is not None


def hadamard_matrix(order: int, dtype: torch.dtype = torch.int8) -> torch.Tensor:
    """The ±1 matrix H_order (unnormalised: H @ H.T == order * I), as ``dtype``."""
    m, power = _checked_split(order)
    small = _sylvester(1) if m == 1 else _paley_type_one(PALEY_PRIMES[m])
    return torch.kron(small, _sylvester(power)).to(dtype)


def kronecker_split(order: int) -> tuple[int, int]:
    """(R, C) with hadamard_matrix(order) == kron(hadamard_matrix(R), hadamard_matrix(C)), C the
    power-of-two part of the order capped at 256.

    Every factor has H[0, 0] == 1, so both factors can be read off the full matrix H without storing
    them: H_R = H[::C, ::C] and H_C = H[:C, :C]. With a row y of length D read as the row-major
    (R, C) matrix Y, H @ y is the row-major H_R @ Y @ H_C.T: O(D * (R + C)) work instead of O(D**2).
    """
    _, power = _checked_split(order)
    right = min(power, MAX_RIGHT_FACTOR)
    return order // right, right
