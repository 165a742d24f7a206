"""Kernel tests run on CUDA when there is one, else on CPU through the Triton interpreter.

Triton reads TRITON_INTERPRET when ``@triton.jit`` runs; for triton.language's own jit helpers
(tl.zeros, tl.sum, ...) that is when ``triton`` is first imported. So without CUDA the variable must be
set before the first ``import triton`` of the test process: the root tests/conftest.py does that, since
pytest imports it before any test module. If triton got imported earlier anyway (a plugin, or a caller
running pytest.main after importing triton), every kernel test here fails at setup saying so, instead
of failing inside Triton with a driver error.
"""

import pytest
import torch
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

HAS_CUDA = torch.cuda.is_available()
TRITON_IS_USABLE = HAS_CUDA or isinstance(tl.zeros, InterpretedFunction)


@pytest.fixture(autouse=True)
def _triton_is_usable() -> None:
    if not TRITON_IS_USABLE:
        pytest.fail(
            "no CUDA and triton was imported before TRITON_INTERPRET=1 was set "
            "(tests/conftest.py sets it; or run TRITON_INTERPRET=1 pytest)"
        )


@pytest.fixture
def device() -> torch.device:
    """Where the kernels under test run: the GPU if there is one, else the CPU (interpreted)."""
    return torch.device("cuda" if HAS_CUDA else "cpu")
