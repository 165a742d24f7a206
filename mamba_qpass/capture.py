"""Capture a transformers ``MambaForCausalLM`` as a canonical ``torch.fx.GraphModule``.

The graph is built from the model's parameters and config, not traced from its forward: transformers
rewrites its Mamba forward often, and tracing it unrolls the scan per time step at a fixed length.
Here each layer is a fixed sequence of single nodes (RMSNorm, the four linears, the causal conv1d,
the selective scan, the residual add) over activations of any batch size and sequence length.

Activations are token-major, (batch, seq, channels), throughout. Parameters are referenced, not
copied, except two derived tensors per layer: ``A = -exp(A_log)`` (float32) and the conv weight as
(channels, width); both are taken at capture time.
"""

from dataclasses import dataclass

import torch
import torch.fx as fx

from mamba_qpass import ops  # noqa: F401  (registers torch.ops.mamba_qpass)
from mamba_qpass.errors import UnsupportedModelError
from mamba_qpass.taps import set_tap

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_CONV_WIDTH = 4

aten = torch.ops.aten
qops = torch.ops.mamba_qpass


@dataclass(frozen=True)
class MambaDims:
    """The config values the graph depends on, validated."""

    hidden_size: int
    intermediate_size: int
    state_size: int
    conv_width: int
    dt_rank: int
    num_layers: int
    vocab_size: int
    eps: float
    residual_in_fp32: bool
    use_bias: bool
    use_conv_bias: bool


def _config_dims(config) -> MambaDims:
    model_type = getattr(config, "model_type", None)
    if model_type == "mamba2":
        raise UnsupportedModelError(
            "Mamba-2 models are not supported yet: mamba-qpass captures Mamba-1 "
            "(transformers MambaForCausalLM, model_type 'mamba')."
        )
    if model_type != "mamba":
        raise UnsupportedModelError(
            f"model_type {model_type!r} is not supported: mamba-qpass captures Mamba-1 "
            "(transformers MambaForCausalLM, model_type 'mamba')."
        )
    if config.hidden_act != "silu":
        raise UnsupportedModelError(
            f"hidden_act {config.hidden_act!r} is not supported: the conv1d and gate use 'silu'."
        )
    if not 1 <= config.conv_kernel <= MAX_CONV_WIDTH:
        raise UnsupportedModelError(
            f"conv_kernel {config.conv_kernel} is not supported: widths 1 to {MAX_CONV_WIDTH} are."
        )
    return MambaDims(
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        state_size=config.state_size,
        conv_width=config.conv_kernel,
        dt_rank=int(config.time_step_rank),
        num_layers=config.num_hidden_layers,
        vocab_size=config.vocab_size,
        eps=float(config.layer_norm_epsilon),
        residual_in_fp32=bool(config.residual_in_fp32),
        use_bias=bool(config.use_bias),
        use_conv_bias=bool(config.use_conv_bias),
    )


def _check_model(model) -> tuple[torch.dtype, MambaDims]:
    from transformers import MambaForCausalLM

    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) == "mamba2":
        _config_dims(config)  # raises the Mamba-2 message
    if not isinstance(model, MambaForCausalLM):
        raise UnsupportedModelError(
            f"{type(model).__name__} is not supported: capture takes a transformers "
            "MambaForCausalLM (Mamba-1, e.g. state-spaces/mamba-130m-hf)."
        )
    dtypes = {p.dtype for p in model.parameters()}
    if len(dtypes) != 1 or next(iter(dtypes)) not in SUPPORTED_DTYPES:
        raise UnsupportedModelError(
            f"parameter dtypes {sorted(map(str, dtypes))} are not supported: the model must be "
            f"entirely one of {[str(d) for d in SUPPORTED_DTYPES]} (e.g. model.float())."
        )
    return next(iter(dtypes)), _config_dims(model.config)


class _GraphBuilder:
    """Appends named nodes to an fx.Graph and collects the tensors its get_attr nodes refer to.

    The layer code below speaks only to this interface (attr, call, tap), so another builder can run
    the same code: dynamo_routing.py runs it on tensors while Dynamo traces, which records the same
    ops as Dynamo's graph."""

    def __init__(self):
        self.graph = fx.Graph()
        self.tensors: dict[str, torch.Tensor] = {}

    def attr(self, qualname: str, tensor: torch.Tensor) -> fx.Node:
        self.tensors[qualname] = tensor
        node = self.graph.get_attr(qualname)
        node.name = qualname.replace(".", "_")
        return node

    def call(self, name: str, target, *args, **kwargs) -> fx.Node:
        node = self.graph.call_function(target, args, kwargs)
        node.name = name
        return node

    def tap(self, node: fx.Node, name: str) -> None:
        set_tap(node, name)


def _optional(builder: _GraphBuilder, qualname: str, tensor: torch.Tensor | None):
    return None if tensor is None else builder.attr(qualname, tensor)


def _add_layer(b: _GraphBuilder, h: fx.Node, i: int, block, dims: MambaDims) -> fx.Node:
    mixer = block.mixer
    p = f"backbone.layers.{i}"
    m = f"{p}.mixer"
    n = f"l{i}"
    D, N, R = dims.intermediate_size, dims.state_size, dims.dt_rank

    normed = b.call(f"{n}_norm", qops.rms_norm.default, h, b.attr(f"{p}.norm.weight", block.norm.weight), dims.eps)
    xz = b.call(
        f"{n}_in_proj",
        aten.linear.default,
        normed,
        b.attr(f"{m}.in_proj.weight", mixer.in_proj.weight),
        _optional(b, f"{m}.in_proj.bias", mixer.in_proj.bias),
    )
    x = b.call(f"{n}_x", aten.slice.Tensor, xz, -1, 0, D)
    z = b.call(f"{n}_z", aten.slice.Tensor, xz, -1, D, 2 * D)
    conv_weight = mixer.conv1d.weight.detach().squeeze(1)
    u = b.call(
        f"{n}_conv1d",
        qops.causal_conv1d.default,
        x,
        b.attr(f"{m}.conv1d.weight_2d", conv_weight),
        _optional(b, f"{m}.conv1d.bias", mixer.conv1d.bias),
        True,
    )
    x_dbl = b.call(f"{n}_x_proj", aten.linear.default, u, b.attr(f"{m}.x_proj.weight", mixer.x_proj.weight), None)
    dt_low = b.call(f"{n}_dt_low", aten.slice.Tensor, x_dbl, -1, 0, R)
    B = b.call(f"{n}_B", aten.slice.Tensor, x_dbl, -1, R, R + N)
    C = b.call(f"{n}_C", aten.slice.Tensor, x_dbl, -1, R + N, R + 2 * N)
    dt = b.call(f"{n}_dt_proj", aten.linear.default, dt_low, b.attr(f"{m}.dt_proj.weight", mixer.dt_proj.weight), None)
    A = -torch.exp(mixer.A_log.detach().float())
    y = b.call(
        f"{n}_scan",
        qops.selective_scan.default,
        u,
        dt,
        b.attr(f"{m}.A", A),
        B,
        C,
        b.attr(f"{m}.D", mixer.D),
        z,
        b.attr(f"{m}.dt_proj.bias", mixer.dt_proj.bias),
        True,
    )
    out = b.call(
        f"{n}_out_proj",
        aten.linear.default,
        y,
        b.attr(f"{m}.out_proj.weight", mixer.out_proj.weight),
        _optional(b, f"{m}.out_proj.bias", mixer.out_proj.bias),
    )
    residual = b.call(f"{n}_residual", aten.add.Tensor, h, out)
    tapped = {
        "norm_out": normed, "conv_in": x, "ssm_z": z, "conv_out": u, "ssm_dt_low": dt_low, "ssm_B": B, "ssm_C": C,
        "ssm_dt": dt, "scan_out": y, "block_out": residual,
    }
    for name, node in tapped.items():
        b.tap(node, f"layer{i}.{name}")
    return residual


def build_forward(b, model, input_ids):
    """The logits of ``model`` on ``input_ids`` built through ``b`` (see ``_GraphBuilder``)."""
    dtype, dims = _check_model(model)
    backbone = model.backbone
    emb_weight = backbone.embeddings.weight
    embeddings = b.attr("backbone.embeddings.weight", emb_weight)
    h = b.call("embed", aten.embedding.default, embeddings, input_ids)
    if dims.residual_in_fp32 and dtype != torch.float32:
        h = b.call("residual_fp32", aten._to_copy.default, h, dtype=torch.float32)
    for i, block in enumerate(backbone.layers):
        h = _add_layer(b, h, i, block, dims)
    final = b.call("norm_f", qops.rms_norm.default, h, b.attr("backbone.norm_f.weight", backbone.norm_f.weight), dims.eps)
    head_weight = model.lm_head.weight
    head = embeddings if head_weight is emb_weight else b.attr("lm_head.weight", head_weight)
    logits = b.call("lm_head", aten.linear.default, final, head, None)
    b.tap(logits, "logits")
    return logits


def capture(model) -> fx.GraphModule:
    """The canonical graph of a transformers ``MambaForCausalLM``: ``gm(input_ids) -> logits``.

    input_ids: (batch, seq) int64, any batch and length. Logits: (batch, seq, vocab) in the model's
    dtype. Raises ``UnsupportedModelError`` (a ValueError) naming what is supported.
    """
    dtype, _ = _check_model(model)
    b = _GraphBuilder()
    input_ids = b.graph.placeholder("input_ids")
    b.graph.output(build_forward(b, model, input_ids))
    b.graph.lint()

    gm = fx.GraphModule(b.tensors, b.graph, class_name="MambaGraph")
    gm.meta["dtype"] = dtype
    return gm
