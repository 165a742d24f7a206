"""Inserts an observer after every activation the int8 datapath quantises (the prepare step).

Per layer: the RMSNorm output (in_proj's input), x and z (in_proj's outputs), u (the conv1d
output, which both x_proj and the scan read; a percentile observer), dt_low, B and C (x_proj's
outputs), dt (dt_proj's output) and out_proj's input (after the Hadamard rotation if present).
"""

import torch.fx as fx

from mamba_qpass.observers import AbsMaxObserver, PercentileObserver
from mamba_qpass.passes.layers import find_layers
from mamba_qpass.quant_config import QuantConfig
from mamba_qpass.taps import TAP

# meta key: the tap name the quantised (int8) form of the observed tensor takes
QUANTIZED_TAP = "quantized_tap"

OBSERVED = ("norm", "x", "z", "conv", "dt_low", "B", "C", "dt_proj", "out_proj_input")
TENSOR_NAMES = {
    "norm": "RMSNorm output (in_proj input)",
    "x": "in_proj output x (conv1d input)",
    "z": "in_proj output z (gate)",
    "conv": "conv1d output u (SSM input)",
    "dt_low": "x_proj output dt_low",
    "B": "x_proj output B",
    "C": "x_proj output C",
    "dt_proj": "dt_proj output dt",
    "out_proj_input": "out_proj input (scan output)",
}


def _observe(gm: fx.GraphModule, node: fx.Node, target: str, quantized_tap: str) -> None:
    with gm.graph.inserting_after(node):
        observed = gm.graph.call_module(target, (node,))
    observed.meta[QUANTIZED_TAP] = quantized_tap
    node.replace_all_uses_with(observed, delete_user_cb=lambda user: user is not observed)


def insert_observers(config: QuantConfig):
    def insert(gm: fx.GraphModule) -> fx.GraphModule:
        device = next(gm.parameters()).device
        for layer in find_layers(gm):
            for field in OBSERVED:
                name = f"layer {layer.index} {TENSOR_NAMES[field]}"
                observer = (
                    PercentileObserver(name, config.percentile_alpha) if field == "conv" else AbsMaxObserver(name)
                )
                target = f"observers.l{layer.index}_{field}"
                gm.add_submodule(target, observer.to(device))
                source = getattr(layer, field)
                # out_proj's input is the scan output rotated: its quantised form gets a name of its own
                tap = f"layer{layer.index}.out_proj_in" if field == "out_proj_input" else source.meta[TAP]
                _observe(gm, source, target, tap)
        return gm

    return insert
