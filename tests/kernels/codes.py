"""Helpers the kernel tests share: comparing int8 codes exactly, and float64 scale tensors."""

import torch


def assert_same_codes(out: torch.Tensor, ref: torch.Tensor) -> None:
    assert out.dtype == torch.int8 and out.shape == ref.shape
    assert torch.equal(out, ref), f"{(out != ref).sum().item()} of {out.numel()} codes differ"


def f64(value, device) -> torch.Tensor:
    """A float64 scale (or vector of them): what the int8 kernels take, never a Python float."""
    return torch.tensor(value, dtype=torch.float64, device=device)
