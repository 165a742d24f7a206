import os

import pytest
import torch

# Without CUDA the Triton kernel tests run in Triton's interpreter. Triton reads the variable when it
# is first imported, so it is set here, before any test module imports mamba_qpass (and triton).
# Ops dispatched on CPU tensors still run their PyTorch references; only the kernel tests call Triton.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_addoption(parser):
    parser.addoption(
        "--update-snapshots",
        action="store_true",
        help="rewrite the golden graph files in tests/snapshots/ instead of comparing against them",
    )


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA: run scripts/gpu_tests.sh on a CUDA machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def update_snapshots(request) -> bool:
    return request.config.getoption("--update-snapshots")


@pytest.fixture(scope="session")
def data_dir():
    from mamba_qpass.data import find_data_dir

    try:
        return find_data_dir()
    except FileNotFoundError as err:
        pytest.skip(f"shared data not available: {err}")
