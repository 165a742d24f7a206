"""The default checkpoint outside an editable install: a wheel does not carry it, so it is found in the
checkout the command runs from, or the error says how to name a model."""

from pathlib import Path

import pytest

from mamba_qpass import data

CHECKOUT = Path(__file__).resolve().parent.parent


@pytest.fixture
def installed_package(tmp_path, monkeypatch):
    """The package as a non-editable install sees itself: in a site-packages folder, no checkout above it."""
    site = tmp_path / "venv" / "lib" / "site-packages" / "mamba_qpass"
    site.mkdir(parents=True)
    monkeypatch.setattr(data, "_PACKAGE_DIR", site)
    return site


def test_installed_package_finds_the_checkpoint_of_the_checkout_it_runs_in(installed_package, monkeypatch):
    monkeypatch.chdir(CHECKOUT / "tests")  # anywhere inside the checkout
    assert Path(data.default_model()) == CHECKOUT / data.CHECKPOINT


def test_installed_package_outside_a_checkout_says_how_to_name_a_model(installed_package, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with pytest.raises(FileNotFoundError, match="--model"):
        data.default_model()
