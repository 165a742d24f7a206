import pytest
import torch


def pytest_addoption(parser):
    parser.addoption(
        "--update-snapshots",
        action="store_true",
        help="rewrite the golden graph files in tests/snapshots/ instead of comparing against them",
    )


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA: run scripts/gpu_tests.sh on the GPU machine")
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
