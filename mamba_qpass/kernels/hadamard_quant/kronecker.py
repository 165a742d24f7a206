"""How the ``hadamard_quant`` kernel splits H_D into two small Kronecker factors.

Sylvester matrices are Kronecker powers of H_2, so H_m ⊗ H_{2**k} = H_{m * 2**a} ⊗ H_{2**(k - a)} for any
0 <= a <= k. With a row y of length D read as the (R, C) matrix Y, H_D @ y = H_R @ Y @ H_C.T: O(D * (R + C))
work per row instead of O(D**2).
"""

from mamba_qpass.numerics import hadamard_factors

MAX_RIGHT_FACTOR = 256  # largest power-of-two factor a kernel holds as one (C, C) tile


def kronecker_split(order: int, max_right: int = MAX_RIGHT_FACTOR) -> tuple[int, int]:
    """(R, C) with hadamard_matrix(order) == kron(hadamard_matrix(R), hadamard_matrix(C)), C the
    power-of-two part of the order capped at ``max_right`` (a power of two, at most 256).

    Every factor has H[0, 0] == 1, so both factors can be read off the full matrix H without storing
    them: H_R = H[::C, ::C] and H_C = H[:C, :C].
    """
    if max_right & (max_right - 1) or not 1 <= max_right <= MAX_RIGHT_FACTOR:
        raise ValueError(f"max_right must be a power of two in [1, {MAX_RIGHT_FACTOR}], got {max_right}")
    _, power = hadamard_factors(order)
    right = min(power, max_right)
    return order // right, right
