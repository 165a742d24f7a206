"""What Dynamo traces when it compiles a transformers ``MambaForCausalLM``: the canonical graph's ops.

transformers' Mamba forward, without its CUDA packages, runs the selective scan as a Python loop over
time steps, which Dynamo unrolls at one fixed length. While Dynamo traces (and only then: eager calls
run transformers' own forward), ``MambaForCausalLM.forward(input_ids)`` runs capture.py's layer code
instead, with a builder that calls each op on the traced tensors. Dynamo's graph then holds exactly the
canonical graph's nodes (``mamba_qpass.rms_norm``, ``aten.linear``, ``mamba_qpass.causal_conv1d``,
``mamba_qpass.selective_scan``, ...) for any batch and length, and each node carries the canonical
name, tensor name or tap in its ``meta["custom"]`` (``torch.fx.traceback.annotate``), which
dynamo_graph.py reads back. Calls with other arguments (a cache, an attention mask, labels,
inputs_embeds) run transformers' forward as before.
"""

import functools
import operator

import torch
import torch.fx.traceback as fx_traceback

from mamba_qpass.capture import build_forward

aten = torch.ops.aten

# keys of a traced node's meta["custom"]
NODE_NAME = "mamba_qpass_node"  # the canonical node this op call is
ATTR_NAME = "mamba_qpass_attr"  # an alias marking its input as the canonical graph's tensor of this name
TAP_NAME = "mamba_qpass_tap"  # an alias marking its input as the tapped tensor of this name

# forward arguments the canonical graph serves when they are left at these values
_SERVED = {"attention_mask": None, "inputs_embeds": None, "labels": None, "cache": None, "cache_params": None,
           "cache_position": None, "output_hidden_states": None, "logits_to_keep": 0}


class TracedBuilder:
    """capture.py's builder interface over tensors: under Dynamo each call becomes one graph node."""

    def attr(self, qualname: str, tensor: torch.Tensor) -> torch.Tensor:
        with fx_traceback.annotate({ATTR_NAME: qualname}):
            return aten.alias.default(tensor)

    def call(self, name: str, target, *args, **kwargs) -> torch.Tensor:
        if target is operator.getitem:
            # Dynamo makes no node for indexing a tuple it already holds: an alias carries the part's name
            with fx_traceback.annotate({NODE_NAME: name}):
                return aten.alias.default(target(*args, **kwargs))
        with fx_traceback.annotate({NODE_NAME: name}):
            return target(*args, **kwargs)

    def tap(self, value: torch.Tensor, name: str) -> None:
        with fx_traceback.annotate({TAP_NAME: name}):
            aten.alias.default(value)


def _served(args: tuple, kwargs: dict) -> bool:
    """Whether the canonical graph computes what transformers would for these arguments (logits
    only: a cache is neither read nor returned, whatever use_cache says)."""
    if args:
        return False
    for key, value in kwargs.items():
        if key in ("use_cache", "return_dict"):
            continue
        if key not in _SERVED or not (value is _SERVED[key] or (isinstance(value, int) and value == _SERVED[key])):
            return False
    return True


def route_mamba_forward() -> None:
    """Installs the routing on ``MambaForCausalLM.forward`` (once; eager calls are unchanged)."""
    from transformers import MambaForCausalLM
    from transformers.models.mamba.modeling_mamba import MambaCausalLMOutput

    original = MambaForCausalLM.forward
    if getattr(original, "routes_to_mamba_qpass", False):
        return

    @functools.wraps(original)
    def forward(self, input_ids=None, *args, **kwargs):
        if torch.compiler.is_compiling() and input_ids is not None and _served(args, kwargs):
            return MambaCausalLMOutput(logits=build_forward(TracedBuilder(), self, input_ids))
        return original(self, input_ids, *args, **kwargs)

    forward.routes_to_mamba_qpass = True
    MambaForCausalLM.forward = forward
