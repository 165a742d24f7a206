"""Kernel tests run on CUDA when there is one, else on CPU through the Triton interpreter.

Triton reads TRITON_INTERPRET when ``@triton.jit`` runs; for triton.language's own jit helpers
(tl.zeros, tl.sum, ...) that is when ``triton`` is first imported. So on a machine without CUDA the
variable must be set before the first ``import triton`` of the test process. pytest imports this file
when it reaches tests/kernels, before the test modules here import the kernels; if an earlier test module
already imported triton (e.g. through mamba_qpass.ops), it is too late, and every kernel test fails at
setup saying so. The robust home for these lines is the root tests/conftest.py, which pytest imports
before any test module.

The variable then stays set for the rest of the session. Without CUDA that changes nothing else: a
compiled Triton kernel cannot run there anyway, and torch.compile's CPU backend does not use Triton.
"""

import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import triton.language as tl  # noqa: E402  (must follow the environment variable)
from triton.runtime.interpreter import InterpretedFunction  # noqa: E402

TRITON_IS_USABLE = HAS_CUDA or isinstance(tl.zeros, InterpretedFunction)


@pytest.fixture(autouse=True)
def _triton_is_usable() -> None:
    if not TRITON_IS_USABLE:
        pytest.fail(
            "no CUDA and triton was imported before TRITON_INTERPRET=1 was set: set it in tests/conftest.py "
            "(when torch.cuda.is_available() is False) or run TRITON_INTERPRET=1 pytest"
        )


@pytest.fixture
def device() -> torch.device:
    """Where the kernels under test run: the GPU if there is one, else the CPU (interpreted)."""
    return torch.device("cuda" if HAS_CUDA else "cpu")
