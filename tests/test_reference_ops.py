"""The plain-PyTorch references against transformers' own torch implementations, and the custom
ops' registrations (fake implementations, schemas) through torch.library.opcheck."""

import pytest
import torch
from transformers.models.mamba import modeling_mamba as hf

from mamba_qpass import ops
from mamba_qpass.kernels.causal_conv1d.reference import causal_conv1d_ref
from mamba_qpass.kernels.selective_scan.reference import selective_scan_ref


def _rand(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("width", [1, 2, 4])
def test_causal_conv1d_ref_matches_transformers(width):
    x, w, b = _rand(2, 11, 6, seed=0), _rand(6, width, seed=1), _rand(6, seed=2)
    expected = hf.causal_conv1d_fn(x.transpose(1, 2), w, b, activation="silu").transpose(1, 2)
    torch.testing.assert_close(causal_conv1d_ref(x, w, b, silu=True), expected)


@pytest.mark.parametrize("seq_len", [1, 63, 130], ids=lambda n: f"L{n}")
def test_selective_scan_ref_matches_transformers(seq_len):
    batch, d, n = 2, 5, 3
    u, dt, z = _rand(batch, seq_len, d, seed=0), _rand(batch, seq_len, d, seed=1), _rand(batch, seq_len, d, seed=2)
    A, B, C = -torch.rand(d, n) - 0.1, _rand(batch, seq_len, n, seed=3), _rand(batch, seq_len, n, seed=4)
    D, bias = _rand(d, seed=5), _rand(d, seed=6)
    expected, expected_state = hf.mamba_selective_scan(
        u.transpose(1, 2), dt.transpose(1, 2), A, B.transpose(1, 2), C.transpose(1, 2), D=D, z=z.transpose(1, 2),
        delta_bias=bias, delta_softplus=True, return_last_state=True,
    )
    out, state = selective_scan_ref(u, dt, A, B, C, D, z, bias, True)
    torch.testing.assert_close(out, expected.transpose(1, 2))
    torch.testing.assert_close(state, expected_state)


def test_selective_scan_initial_state_continues_a_sequence():
    batch, L, d, n = 1, 20, 4, 3
    u, dt, B, C = _rand(batch, L, d, seed=0), _rand(batch, L, d, seed=1), _rand(batch, L, n, seed=2), _rand(batch, L, n, seed=3)
    A = -torch.rand(d, n)
    whole, whole_state = selective_scan_ref(u, dt, A, B, C)
    first, state = selective_scan_ref(u[:, :8], dt[:, :8], A, B[:, :8], C[:, :8])
    second, final = selective_scan_ref(u[:, 8:], dt[:, 8:], A, B[:, 8:], C[:, 8:], initial_state=state)
    torch.testing.assert_close(torch.cat([first, second], 1), whole)
    torch.testing.assert_close(final, whole_state)


def test_custom_ops_pass_opcheck():
    x = _rand(2, 7, 6, seed=0)
    torch.library.opcheck(ops.causal_conv1d, (x, _rand(6, 4, seed=1), _rand(6, seed=2), True))
    torch.library.opcheck(ops.rms_norm, (x, _rand(6, seed=3), 1e-5))
    A = -torch.rand(6, 3)
    args = (x, _rand(2, 7, 6, seed=4), A, _rand(2, 7, 3, seed=5), _rand(2, 7, 3, seed=6), _rand(6, seed=7), x, _rand(6, seed=8), True)
    torch.library.opcheck(ops.selective_scan, args)
