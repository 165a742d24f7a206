"""Capture a transformers ``MambaForCausalLM`` as a canonical ``torch.fx.GraphModule``.

The graph is built from the model's parameters and config, not traced from its forward: transformers
rewrites its Mamba forward often, and tracing it unrolls the scan per time step at a fixed length.
Here each layer is a fixed sequence of single nodes (RMSNorm, the four linears, the causal conv1d,
the selective scan, the residual add) over activations of any batch size and sequence length.

Activations are token-major, (batch, seq, channels), throughout. Parameters are referenced, not
copied, except two derived tensors per layer: ``A = -exp(A_log)`` (float32) and the conv weight as
(channels, width); both are taken at capture time.
"""

import operator
from dataclasses import dataclass

import torch
import torch.fx as fx
# Imported here, not inside _check_model: under torch 2.11 Dynamo cannot trace an import from transformers'
# lazy module inside the routed forward (seen on the GPU machine as "Bad import result").
from transformers import MambaForCausalLM

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
    _check_one_device(model)
    if not torch.compiler.is_compiling():  # a host read, which Dynamo cannot trace; there calibration's
        _check_finite_weights(model)       # observers stop at the first non-finite activation instead
    return next(iter(dtypes)), _config_dims(model.config)


def _check_one_device(model) -> None:
    """Every op of the graph runs where its inputs are: a model split over devices would fail inside a
    kernel (or copy silently in a fallback) instead of here."""
    devices = {t.device for t in (*model.parameters(), *model.buffers())}
    if len(devices) > 1:
        raise UnsupportedModelError(
            f"the model's weights are on several devices ({', '.join(sorted(map(str, devices)))}): mamba-qpass runs "
            "a model on one device; move it there first, e.g. model.to('cuda') (no device_map)"
        )


def _check_finite_weights(model) -> None:
    """NaN or inf in a weight would reach calibration as a NaN activation far from its cause; name the
    weight instead. One reduction per tensor."""
    for name, tensor in model.named_parameters():
        bad = int((~torch.isfinite(tensor)).sum())
        if bad:
            nan = int(torch.isnan(tensor).sum())
            raise ValueError(
                f"weight {name} holds {nan} NaN and {bad - nan} infinite values (of {tensor.numel()}): the checkpoint "
                "is damaged or its training diverged; load an intact checkpoint"
            )


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
    conv = b.call(
        f"{n}_conv1d_op",
        qops.causal_conv1d.default,
        x,
        b.attr(f"{m}.conv1d.weight_2d", conv_weight),
        _optional(b, f"{m}.conv1d.bias", mixer.conv1d.bias),
        True,
    )
    u = b.call(f"{n}_conv1d", operator.getitem, conv, 0)
    x_dbl = b.call(f"{n}_x_proj", aten.linear.default, u, b.attr(f"{m}.x_proj.weight", mixer.x_proj.weight), None)
    dt_low = b.call(f"{n}_dt_low", aten.slice.Tensor, x_dbl, -1, 0, R)
    B = b.call(f"{n}_B", aten.slice.Tensor, x_dbl, -1, R, R + N)
    C = b.call(f"{n}_C", aten.slice.Tensor, x_dbl, -1, R + N, R + 2 * N)
    dt = b.call(f"{n}_dt_proj", aten.linear.default, dt_low, b.attr(f"{m}.dt_proj.weight", mixer.dt_proj.weight), None)
    A = -torch.exp(mixer.A_log.detach().float())
    scan = b.call(
        f"{n}_scan_op",
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
    y = b.call(f"{n}_scan", operator.getitem, scan, 0)
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


CONV_OPS = (qops.causal_conv1d.default, qops.int8_causal_conv1d.default)
SCAN_OPS = (qops.selective_scan.default, qops.int8_selective_scan.default)


def with_state(gm: fx.GraphModule, last_logits_only: bool = False) -> fx.GraphModule:
    """The step form of a finished graph of any mode (captured, calibrated or a mode's): a copy sharing its
    tensors that continues from given per-layer states and returns the new ones,

        step(input_ids, conv_state_0, ssm_state_0, conv_state_1, ...) -> (logits, (conv_state_0', ssm_state_0', ...))

    States left out (None) are zeros: ``step(prompt)`` is a prefill that also returns every layer's state;
    ``step(next_token, *states)`` is one decode step. The nodes are the graph's own, so a step computes
    exactly what the mode's passes made of it: each layer's conv and scan op gets its state as
    ``initial_state`` and its final state is read from its output. A conv state is the last width-1 conv
    inputs in the dtype the mode's conv reads (int8 codes in w8a8, codes held in float32 in float_sim,
    floats in fp); an SSM state is float32 (batch, d_inner, d_state).

    ``last_logits_only``: the head reads only the last position, so a prefill returns (batch, 1, vocab)
    logits instead of (batch, seq, vocab): what generation needs, without a (seq x vocab) tensor per prompt.
    """
    graph = fx.Graph()
    mapping: dict[fx.Node, fx.Node] = {}
    logits = graph.graph_copy(gm.graph, mapping)
    convs = [mapping[n] for n in gm.graph.nodes if n.op == "call_function" and n.target in CONV_OPS]
    scans = [mapping[n] for n in gm.graph.nodes if n.op == "call_function" and n.target in SCAN_OPS]
    if not scans or len(convs) != len(scans):
        raise ValueError(
            f"with_state takes a Mamba graph with one conv and one scan per layer, found {len(convs)} convs "
            f"and {len(scans)} scans"
        )
    if isinstance(logits, tuple):
        raise ValueError("the graph already takes and returns states: with_state applies to a logits graph once")
    if last_logits_only:
        head_input = logits.args[0]
        with graph.inserting_before(logits):
            last = graph.call_function(aten.slice.Tensor, (head_input, 1, -1, None))
        logits.replace_input_with(head_input, last)
    last_input = [n for n in graph.nodes if n.op == "placeholder"][-1]
    states = []
    for i, (conv, scan) in enumerate(zip(convs, scans)):
        for kind, op in (("conv", conv), ("ssm", scan)):
            with graph.inserting_after(last_input):
                last_input = graph.placeholder(f"{kind}_state_{i}", default_value=None)
            op.update_kwarg("initial_state", last_input)
            with graph.inserting_after(op):
                states.append(graph.call_function(operator.getitem, (op, 1)))
    graph.output((logits, tuple(states)))
    graph.lint()
    step = fx.GraphModule(gm, graph, class_name="MambaStepGraph")
    step.meta.update(gm.meta)
    return step


def ssm_state_positions(step_graph: fx.GraphModule) -> tuple[int, ...]:
    """Which of a ``with_state`` graph's states (its inputs after the token ids) are SSM states: each layer
    adds its conv state, then its SSM state."""
    states = len(step_graph.graph.find_nodes(op="placeholder")) - 1
    return tuple(range(1, states, 2))
