"""The torch.compile backend: the project's passes on Dynamo's graph of a transformers Mamba model.

    torch.compile(model, backend="mamba_qpass", options={"mode": "w8a8", "calibration": texts, "tokenizer": tok})
    torch.compile(model, backend=qpass.backend(mode="w8a8", calibration=texts, tokenizer=tok))

Dynamo traces the model as the canonical ops (dynamo_routing.py); the backend rewrites its graph into
the canonical graph (dynamo_graph.py) and runs what ``qpass.apply`` runs on the captured one: the
observers, calibration, the q/dq conversion, then the mode's passes. Calibration runs at the first
compile; a recompile (another guard, a new dtype) rebuilds the graph from Dynamo's new one and takes
the scales from that first calibration, so it is not repeated. A calibrated graph (``qpass.calibrate``
or ``qpass.load`` of a saved one) can be passed as ``calibration`` instead of data.
"""

import copy
import os
from collections.abc import Iterable

import torch
import torch.fx as fx

from mamba_qpass.api import _calibrated_config, finish
from mamba_qpass.calibrate import calibration_batches, convert, prepare, run_calibration
from mamba_qpass.dynamo_generate import record_compiled, route_mamba_generate
from mamba_qpass.dynamo_graph import CanonicalGraph, canonical_graph
from mamba_qpass.dynamo_routing import route_mamba_forward
from mamba_qpass.exact_inductor import compile_exact
from mamba_qpass.modes import resolve_modes
from mamba_qpass.observers import AbsMaxObserver, PercentileObserver
from mamba_qpass.provenance import describe_calibration
from mamba_qpass.quant_config import QuantConfig

NAME = "mamba_qpass"
OPTIONS = ("mode", "calibration", "tokenizer", "config", "inductor", "progress")
SCALES = "scales."

route_mamba_forward()
route_mamba_generate()


class CalibrationMismatchError(ValueError):
    """A calibrated graph given to the backend was made from other weights or another graph."""


def _transfer_scales(canonical: fx.GraphModule, calibrated: fx.GraphModule, config: QuantConfig) -> fx.GraphModule:
    """``canonical`` prepared and converted with the scales of ``calibrated``, which must hold the same
    weights (every tensor the two graphs share by name is compared)."""
    gm = prepare(canonical, config)
    for module in gm.modules():
        if isinstance(module, (AbsMaxObserver, PercentileObserver)):
            module.assume_range(1.0)  # placeholders: the scales are copied in below
    gm = convert(gm, config)
    own = dict(gm.named_buffers()) | dict(gm.named_parameters())
    given = dict(calibrated.named_buffers()) | dict(calibrated.named_parameters())
    own_scales = {n for n in own if n.startswith(SCALES)}
    given_scales = {n for n in given if n.startswith(SCALES)}
    if own_scales != given_scales:
        raise CalibrationMismatchError(
            f"the calibration holds scales {sorted(given_scales ^ own_scales)[:4]} where this model's graph does "
            "not, or lacks them: calibrate this model (qpass.calibrate(model, ...)) and pass that graph"
        )
    with torch.no_grad():
        for name, tensor in own.items():
            if name in own_scales:
                tensor.copy_(given[name])
            elif name in given and not torch.equal(tensor, given[name].to(tensor.device)):
                raise CalibrationMismatchError(
                    f"the calibration was made from other weights ({name} differs): pass the graph "
                    "qpass.calibrate made from this model, or calibrate with data; one backend serves one model"
                )
    gm.meta.update(quant_config=config, calibration=calibrated.meta.get("calibration"), source=calibrated.meta.get("source"))
    return gm


class Backend:
    """A torch.compile backend for one model: ``torch.compile(model, backend=Backend(...))``.

    mode: a mode name (``qpass.mode_names()``).
    calibration: texts (with ``tokenizer``) or token-id tensors, calibrated on at the first compile; or
        a calibrated graph (``qpass.calibrate``, ``qpass.load``) or the folder of a saved one, whose
        scales are used. Every mode but ``fp`` needs one.
    config: the QuantConfig to calibrate with (a calibrated graph brings its own; another is refused).
    inductor: False runs the finished graph as it is; True (or an inductor mode such as
        "reduce-overhead" or "max-autotune") hands it to inductor, the custom ops kept as they are and
        every rounding of the graph kept (``exact_inductor.py``): float_sim so compiled still gives
        w8a8's logits bit for bit, in a fraction of its eager time.
    """

    def __init__(self, mode: str = "w8a8", calibration=None, tokenizer=None, config: QuantConfig | None = None,
                 inductor: bool | str = False, progress: bool = False):
        (self.mode,) = resolve_modes([mode])
        if self.mode.needs_calibration and calibration is None:
            raise ValueError(
                f"mode {mode!r} needs calibration: pass calibration=texts (with tokenizer=), token tensors, "
                "or a calibrated graph (qpass.calibrate / qpass.load)"
            )
        if isinstance(calibration, (str, os.PathLike)):
            from mamba_qpass.serialize import load

            calibration = load(calibration)
        self.calibrated: fx.GraphModule | None = None
        if isinstance(calibration, fx.GraphModule):
            self.config = _calibrated_config(calibration, config)
            self.calibrated = calibration
        else:
            self.config = config or QuantConfig()
        self.calibration = calibration
        self.tokenizer = tokenizer
        self.inductor = inductor
        self.progress = progress
        self.graphs: list[fx.GraphModule] = []  # the finished graph of each graph Dynamo handed over

    def _calibrated_graph(self, canonical: fx.GraphModule) -> fx.GraphModule:
        if self.calibrated is not None:
            return _transfer_scales(canonical, self.calibrated, self.config)
        device = next(canonical.parameters()).device
        batches = calibration_batches(self.calibration, self.tokenizer, self.config, device)
        gm = prepare(canonical, self.config)
        run_calibration(gm, batches, self.progress)
        gm = convert(gm, self.config)
        gm.meta["calibration"] = describe_calibration(batches)
        self.calibrated = gm
        return gm

    def finished_graph(self, canonical: CanonicalGraph) -> fx.GraphModule:
        """The mode's graph built from Dynamo's graph (already rewritten as ``canonical``)."""
        if not self.mode.needs_calibration:
            return finish(self.mode, canonical.graph, self.config)
        calibrated = self._calibrated_graph(canonical.graph)
        if calibrated is self.calibrated:  # the first compile's graph: later compiles read its scales
            shared = {id(t): t for t in (*calibrated.parameters(), *calibrated.buffers())}
            calibrated = copy.deepcopy(calibrated, shared)
        return finish(self.mode, calibrated, self.config)

    def __call__(self, gm: fx.GraphModule, example_inputs: list, mode: str | None = None, options: dict | None = None):
        if options:
            raise ValueError(f"pass the backend's settings to qpass.backend(...), not options={options!r}")
        if mode is not None and not self.inductor:
            raise ValueError(
                f"torch.compile(mode={mode!r}) applies to the inductor hand-off: make the backend with inductor=True"
            )
        canonical = canonical_graph(gm, example_inputs)
        finished = self.finished_graph(canonical)
        self.graphs.append(finished)
        record_compiled(canonical.graph, finished, self.mode.name)
        token_input, extra = canonical.token_input, (None,) * (canonical.output_arity - 1)
        if self.inductor:
            # A compile of its own, not compile_fx inside this one: Dynamo's tracing context here
            # describes Dynamo's graph (the parameters as inputs), not the finished one, which holds
            # them. Its guards and dynamic sizes are its own; it compiles at the first call.
            inductor_mode = self.inductor if isinstance(self.inductor, str) else mode
            compiled = compile_exact(finished, mode=inductor_mode, dynamic=True)

            def run(*args):
                return (compiled(args[token_input]), *extra)
        else:
            def run(*args):
                return (finished(args[token_input]), *extra)

        return run


def backend(mode: str = "w8a8", calibration: Iterable | fx.GraphModule | str | os.PathLike | None = None,
            tokenizer=None, config: QuantConfig | None = None, inductor: bool | str = False,
            progress: bool = False) -> Backend:
    """A torch.compile backend that quantises a transformers MambaForCausalLM into ``mode`` (see
    ``Backend``): ``torch.compile(model, backend=qpass.backend(mode="w8a8", calibration=texts, tokenizer=tok))``."""
    return Backend(mode, calibration, tokenizer, config, inductor, progress)


# torch.compile(model, backend="mamba_qpass", options={...}) calls this (registered under the name
# through the torch_dynamo_backends entry point). One Backend per options dict: torch.compile passes
# the same dict on every recompile of a model, so calibration runs once per compiled model.
_BY_OPTIONS: dict[int, tuple[dict, Backend]] = {}


def mamba_qpass_backend(gm: fx.GraphModule, example_inputs: list, mode: str | None = None, options: dict | None = None):
    options = options or {}
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"unknown option {', '.join(map(repr, unknown))} of the {NAME} backend: it takes {', '.join(OPTIONS)}")
    if id(options) not in _BY_OPTIONS:
        _BY_OPTIONS[id(options)] = (options, Backend(**options))
    return _BY_OPTIONS[id(options)][1](gm, example_inputs, mode=mode)
