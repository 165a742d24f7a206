"""Runs passes in order, linting and recompiling the graph after each."""

from collections.abc import Callable, Sequence

import torch.fx as fx

Pass = Callable[[fx.GraphModule], fx.GraphModule]


def run_passes(gm: fx.GraphModule, passes: Sequence[Pass]) -> fx.GraphModule:
    for graph_pass in passes:
        gm = graph_pass(gm)
        gm.graph.eliminate_dead_code()
        gm.graph.lint()
        gm.recompile()
    return gm
