"""Keeping the SSM states in float16 between decode steps (``generate(ssm_state_dtype=torch.float16)``).

A layer's SSM state is float32 (batch, d_inner, d_state): 21 MB a batch row at the 2.8b config, read and
written by every decode step, so at batch 16 and more the states outweigh the int8 weights' share of
memory, and at batch 64 the state update is the slowest kernel of a step. Stored in float16 it is half of
that. Each step still computes in float32 from the stored values; only the new state is rounded to
float16 (to nearest even) for storage. The prefill is unchanged (its scan keeps the state in float32 over
the whole prompt); its final states are rounded once.

Exactness changes, and the cost is measured rather than assumed (``benchmarks/bench_state_precision.py``,
results in ``benchmarks/RESULTS.md``): with float16 states decoding no longer equals re-running the
prefix, but w8a8, fp32_ssm and float_sim still decode bit for bit alike (they round the same values), and
the CUDA-graph step equals the eager one (its kernels read and write the float16 state directly, with the
same roundings).
"""

import torch

SSM_STATE_DTYPES = (torch.float32, torch.float16)


def check_ssm_state_dtype(dtype: torch.dtype) -> None:
    if dtype not in SSM_STATE_DTYPES:
        raise ValueError(f"ssm_state_dtype must be one of {SSM_STATE_DTYPES}, got {dtype}")


def stored(states: tuple[torch.Tensor, ...], positions: tuple[int, ...], dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """``states`` with the SSM ones (at ``positions``) rounded to ``dtype`` for keeping between steps."""
    return tuple(s.to(dtype) if i in positions else s for i, s in enumerate(states))


def computed(states: tuple[torch.Tensor, ...], positions: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
    """``states`` with the SSM ones in float32, as the step graph's ops take them."""
    return tuple(s.float() if i in positions else s for i, s in enumerate(states))
