"""Deletes the tensors a finished graph no longer reads.

Lowering leaves the float weights and the float32 scales of the calibrated graph in the module; a
w8a8 model would otherwise carry every float weight beside its int8 codes. Kept: every get_attr target
and every buffer a tap names as its scale (the comparison tool reads those).
"""

import torch.fx as fx

from mamba_qpass.taps import TAP_SCALE


def drop_unused_attributes(gm: fx.GraphModule) -> fx.GraphModule:
    used = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    used |= {n.meta[TAP_SCALE] for n in gm.graph.nodes if n.meta.get(TAP_SCALE)}
    names = [name for name, _ in gm.named_parameters(remove_duplicate=False)]
    names += [name for name, _ in gm.named_buffers(remove_duplicate=False)]
    for name in names:
        if name in used:
            continue
        owner_name, _, leaf = name.rpartition(".")
        owner = gm.get_submodule(owner_name)
        owner._parameters.pop(leaf, None)
        owner._buffers.pop(leaf, None)
    return gm
