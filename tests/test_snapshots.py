"""Golden graph files. Rewrite them all with:
    python -m pytest -q tests/test_snapshots.py tests/test_w8a8.py tests/test_modes.py --update-snapshots
"""

from pathlib import Path

import pytest

import mamba_qpass as qpass
from mamba_qpass.snapshot import graph_to_text
from models import random_mamba

SNAPSHOTS = Path(__file__).parent / "snapshots"

GRAPHS = {
    "fp_tiny": lambda: qpass.capture(random_mamba()),
    "fp_tiny_untied_biased": lambda: qpass.capture(
        random_mamba(tie_word_embeddings=False, use_bias=True, use_conv_bias=False, num_hidden_layers=1)
    ),
}


def check_snapshot(name: str, text: str, update: bool) -> None:
    path = SNAPSHOTS / f"{name}.txt"
    if update:
        path.write_text(text)
        return
    assert path.exists(), f"{path} is missing: run pytest {__file__} --update-snapshots"
    assert text == path.read_text(), f"graph {name} changed; if intended, rerun with --update-snapshots"


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_graph_matches_snapshot(name, update_snapshots):
    check_snapshot(name, graph_to_text(GRAPHS[name]()), update_snapshots)


def test_snapshot_detects_a_changed_graph():
    gm = GRAPHS["fp_tiny"]()
    scan = next(n for n in gm.graph.nodes if "scan" in n.name)
    scan.args = scan.args[:-1] + (False,)
    with pytest.raises(AssertionError, match="changed"):
        check_snapshot("fp_tiny", graph_to_text(gm), update=False)


def test_serialiser_ignores_node_names():
    gm = GRAPHS["fp_tiny"]()
    before = graph_to_text(gm)
    for i, node in enumerate(gm.graph.nodes):
        node.name = f"renamed_{i}"
    assert graph_to_text(gm) == before
