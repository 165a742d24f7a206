"""Holds every tensor of a finished graph as a buffer that does not require grad.

A finished graph computes logits for inference; the float parameters it still reads (the embedding,
norm weights, the scan's D and dt bias) are the source model's, which require grad. Outside
``torch.no_grad`` their logits would then carry autograd history through ops that have no gradient,
and ``torch.compile`` would trace a backward graph it cannot build. As detached buffers they share
the parameters' storage (nothing is copied) and leave the source model untouched.
"""

import torch.fx as fx


def hold_as_buffers(gm: fx.GraphModule) -> fx.GraphModule:
    for module in gm.modules():
        for name, parameter in list(module._parameters.items()):
            del module._parameters[name]
            if parameter is not None:
                module.register_buffer(name, parameter.detach())
    return gm
