"""Generation through a model compiled with the backend.

``cmodel = torch.compile(model, backend="mamba_qpass", ...)`` compiles ``cmodel(input_ids)``; but
``cmodel.generate`` is transformers' ``generate`` of the model inside, whose steps call the model's own
forward with a cache: transformers' float forward, run eagerly, and the compiled graph is never used. So
that a compiled model does not silently generate in float, the backend records, for each model it
compiles, its finished graph (keyed by the memory of the model's embedding weight, which the graph holds:
the backend's graph may hold the weight as a parameter or as a buffer sharing its memory, e.g. after
scales are transferred from a calibrated graph), and
``MambaForCausalLM.generate`` of a recorded model generates with that graph: the decode path of the model
``qpass.apply`` returns (prefill, then one-token steps from the layers' states; CUDA graphs on CUDA), whose
tokens equal re-running the compiled forward on the whole prefix. Models never compiled with the backend
generate as before.

The record is the model's, not the compiled wrapper's: after ``torch.compile(model, backend="mamba_qpass")``
the model itself generates quantized too (``model(input_ids)`` called eagerly stays float).
"""

import functools
import logging
from dataclasses import dataclass

import torch
import torch.fx as fx

from mamba_qpass.graph_utils import get_attr_value
from mamba_qpass.hf import QuantizedMambaForCausalLM

LOG = logging.getLogger("mamba_qpass")
EMBEDDING = "backbone.embeddings.weight"


@dataclass
class CompiledGeneration:
    graph: fx.GraphModule  # the backend's finished graph of the model (the latest, if it compiled several)
    mode: str
    quantized: QuantizedMambaForCausalLM | None = None

    def model(self, config) -> QuantizedMambaForCausalLM:
        """The quantized model holding ``graph``, made once (it keeps its CUDA graphs between calls)."""
        if self.quantized is None:
            self.quantized = QuantizedMambaForCausalLM(self.graph, config, self.mode)
        return self.quantized


# The finished graph holds the embedding's memory, so while a record lives no other tensor can take that
# address: the key cannot come to name another model.
_COMPILED: dict[tuple, CompiledGeneration] = {}


def _memory_key(weight: torch.Tensor) -> tuple:
    return weight.device, weight.data_ptr(), tuple(weight.shape), weight.dtype


def record_compiled(canonical: fx.GraphModule, finished: fx.GraphModule, mode: str) -> None:
    """Called by the backend for each graph it finishes: ``canonical`` holds the model's own weights (as
    parameters, or as buffers sharing their memory)."""
    _COMPILED[_memory_key(get_attr_value(canonical, EMBEDDING))] = CompiledGeneration(finished, mode)


def compiled_generation(model) -> CompiledGeneration | None:
    """What the backend recorded for ``model`` (a transformers MambaForCausalLM), or None."""
    return _COMPILED.get(_memory_key(model.get_input_embeddings().weight))


def route_mamba_generate() -> None:
    """Installs the routing on ``MambaForCausalLM.generate`` (once; models the backend never compiled
    generate as before)."""
    from transformers import MambaForCausalLM

    original = MambaForCausalLM.generate
    if getattr(original, "routes_to_mamba_qpass", False):
        return

    @functools.wraps(original)
    def generate(self, *args, **kwargs):
        compiled = compiled_generation(self)
        if compiled is None:
            return original(self, *args, **kwargs)
        LOG.info("generating with the mamba_qpass backend's %s graph of this model (it was compiled with it)", compiled.mode)
        return compiled.model(self.config).generate(*args, **kwargs)

    generate.routes_to_mamba_qpass = True
    MambaForCausalLM.generate = generate
