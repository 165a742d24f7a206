"""The plain-PyTorch references against transformers' own torch implementations, and every custom op's
registrations (fake implementations, schemas) through torch.library.opcheck."""

import pytest
import torch
from transformers.models.mamba import modeling_mamba as hf

from mamba_qpass import ops
from mamba_qpass.numerics import hadamard_matrix
from mamba_qpass.kernels.causal_conv1d.reference import causal_conv1d_ref
from mamba_qpass.kernels.selective_scan.reference import selective_scan_ref


def _rand(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("width", [1, 2, 4])
def test_causal_conv1d_ref_matches_transformers(width):
    x, w, b = _rand(2, 11, 6, seed=0), _rand(6, width, seed=1), _rand(6, seed=2)
    expected = hf.causal_conv1d_fn(x.transpose(1, 2), w, b, activation="silu").transpose(1, 2)
    torch.testing.assert_close(causal_conv1d_ref(x, w, b, silu=True)[0], expected)


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


@pytest.mark.parametrize("split", [1, 2, 8], ids=lambda n: f"first{n}")
@pytest.mark.parametrize("width", [1, 2, 4])
def test_causal_conv1d_state_continues_a_sequence(split, width):
    """The conv continued from the first part's final state gives the whole sequence's outputs and state,
    also when the first part is shorter than the window."""
    x, w, b = _rand(2, 11, 6, seed=0), _rand(6, width, seed=1), _rand(6, seed=2)
    whole, whole_state = causal_conv1d_ref(x, w, b, silu=True)
    first, state = causal_conv1d_ref(x[:, :split], w, b, silu=True)
    second, final = causal_conv1d_ref(x[:, split:], w, b, silu=True, initial_state=state)
    assert state.shape == (2, width - 1, 6)
    torch.testing.assert_close(torch.cat([first, second], 1), whole)
    assert torch.equal(final, whole_state) and torch.equal(whole_state, x[:, 11 - (width - 1) :])


def _codes(*shape, seed):
    return torch.randint(-128, 128, shape, dtype=torch.int8, generator=torch.Generator().manual_seed(seed))


def _f64(*shape, seed):
    return _rand(*shape, seed=seed).double()


def _opcheck_samples() -> dict[str, tuple]:
    """Arguments for every custom op, by ``op-variant`` (CPU tensors; a GPU run moves them): batch 2,
    length 7, width 6."""
    x, A = _rand(2, 7, 6, seed=0), -torch.rand(6, 3, generator=torch.Generator().manual_seed(9))
    inv = torch.tensor(1.7, dtype=torch.float64)
    scales = torch.tensor([0.02, 0.01, 0.03, 0.03, 0.025])
    return {
        "rms_norm": (x, _rand(6, seed=3), 1e-5),
        "causal_conv1d": (x, _rand(6, 4, seed=1), _rand(6, seed=2), True),
        "selective_scan": (
            x, _rand(2, 7, 6, seed=4), A, _rand(2, 7, 3, seed=5), _rand(2, 7, 3, seed=6), _rand(6, seed=7), x,
            _rand(6, seed=8), True,
        ),
        "hadamard_rotate": (_rand(2, 7, 12, seed=10), hadamard_matrix(12)),
        "int8_linear-codes": (_codes(2, 7, 6, seed=11), _codes(5, 6, seed=12), _f64(5, seed=13) * 0.01,
                              _f64(5, seed=14), _f64(5, seed=15).abs(), torch.float32),
        "int8_linear-float": (_codes(2, 7, 6, seed=11), _codes(5, 6, seed=12), _f64(5, seed=13), None, None,
                              torch.float32),  # the one float output the CUDA kernel writes exactly
        "int8_linear-residual": (_codes(2, 7, 6, seed=11), _codes(5, 6, seed=12), _f64(5, seed=13), None, None,
                                 torch.float32, _rand(2, 7, 5, seed=29)),
        "int8_causal_conv1d": (_codes(2, 7, 6, seed=16), _codes(6, 4, seed=17), _f64(6, seed=18).abs() * 0.01,
                               _f64(6, seed=19), inv, True),
        "rms_norm_quant": (x, _rand(6, seed=20), 1e-5, inv),
        "hadamard_quant": (_rand(2, 7, 12, seed=21).half(), hadamard_matrix(12), inv),
        "quantize": (x, inv),
        "code_matmul_chunk": (_codes(2, 7, 6, seed=33).float(), _codes(5, 6, seed=34).half()),
        # with the state to continue from: a one-token step, as generation runs them
        "causal_conv1d-state": (x[:, :1], _rand(6, 4, seed=1), _rand(6, seed=2), True, _rand(2, 3, 6, seed=29)),
        "int8_causal_conv1d-state": (_codes(2, 1, 6, seed=16), _codes(6, 4, seed=17), _f64(6, seed=18).abs() * 0.01,
                                     _f64(6, seed=19), inv, True, _codes(2, 3, 6, seed=30)),
        "selective_scan-state": (
            x[:, :1], _rand(2, 1, 6, seed=4), A, _rand(2, 1, 3, seed=5), _rand(2, 1, 3, seed=6), _rand(6, seed=7),
            x[:, :1], _rand(6, seed=8), True, _rand(2, 6, 3, seed=31),
        ),
        "int8_selective_scan-state": (
            _codes(2, 1, 6, seed=22), _codes(2, 1, 6, seed=23), A, _codes(2, 1, 3, seed=24), _codes(2, 1, 3, seed=25),
            _rand(6, seed=26), _codes(2, 1, 6, seed=27), _rand(6, seed=28), True, scales, torch.float16,
            _rand(2, 6, 3, seed=32),
        ),
        "int8_selective_scan": (
            _codes(2, 7, 6, seed=22), _codes(2, 7, 6, seed=23), A, _codes(2, 7, 3, seed=24), _codes(2, 7, 3, seed=25),
            _rand(6, seed=26), _codes(2, 7, 6, seed=27), _rand(6, seed=28), True, scales, torch.float16,
        ),
    }


def _custom_ops() -> dict[str, object]:
    return {v._name: v for v in vars(ops).values() if isinstance(v, torch._library.custom_ops.CustomOpDef)}


def test_every_custom_op_has_an_opcheck_sample():
    assert _custom_ops().keys() == {sample.split("-")[0] for sample in _opcheck_samples()}


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sample", sorted(_opcheck_samples()))
def test_custom_op_passes_opcheck(sample, device):
    """Schema, fake implementation (shapes, dtypes, strides) and registrations agree with the real op; on
    CUDA that is the Triton kernel."""
    args = tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in _opcheck_samples()[sample])
    torch.library.opcheck(_custom_ops()[sample.split("-")[0]], args)
