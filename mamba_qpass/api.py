"""The public surface: calibrate a model once, build any precision modes from it, compare them."""

import copy
import dataclasses
from collections.abc import Iterable, Iterator, Sequence

import torch
import torch.fx as fx

from mamba_qpass.calibrate import calibration_batches, convert, prepare, run_calibration
from mamba_qpass.capture import capture
from mamba_qpass.comparison import ComparisonReport, check_batches, compare_graphs
from mamba_qpass.hf import QuantizedMambaForCausalLM
from mamba_qpass.modes import Mode, resolve_modes
from mamba_qpass.passes.drop_unused import drop_unused_attributes
from mamba_qpass.passes.inference_buffers import hold_as_buffers
from mamba_qpass.passes.manager import run_passes
from mamba_qpass.provenance import describe_calibration, describe_source
from mamba_qpass.quant_config import QuantConfig


def calibrate(
    model, calibration: Iterable, tokenizer=None, config: QuantConfig | None = None, progress: bool = True
) -> fx.GraphModule:
    """Capture ``model``, observe its activations on ``calibration`` and return the calibrated,
    reference-quantised (q/dq) graph that every mode starts from."""
    config = config or QuantConfig()
    gm = _captured(model)
    device = next(model.parameters()).device
    batches = calibration_batches(calibration, tokenizer, config, device)
    gm = prepare(gm, config)
    run_calibration(gm, batches, progress)
    gm = convert(gm, config)
    gm.meta["calibration"] = describe_calibration(batches)
    return gm


def _captured(model) -> fx.GraphModule:
    """``capture(model)`` recording the model's config and weights' fingerprint, which qpass.save keeps."""
    gm = capture(model)
    gm.meta["source"] = describe_source(model)
    return gm


def _config_differences(asked: QuantConfig, calibrated: QuantConfig) -> str:
    fields = [f.name for f in dataclasses.fields(QuantConfig)]
    return ", ".join(
        f"{name}={getattr(asked, name)!r} (calibrated with {getattr(calibrated, name)!r})"
        for name in fields
        if getattr(asked, name) != getattr(calibrated, name)
    )


def _calibrated_config(calibrated: fx.GraphModule, config: QuantConfig | None) -> QuantConfig:
    """The config ``calibrated`` was built with; ``config``, if given, must be that same config: the
    scales and the graph's dtypes follow from it, so another one would reach kernels it does not fit."""
    own = calibrated.meta.get("quant_config")
    if own is None:
        raise ValueError("this graph was not made by qpass.calibrate(model, ...): calibrate the model first")
    if config is not None and config != own:
        raise ValueError(
            f"config differs from the one the graph was calibrated with: {_config_differences(config, own)}; "
            "leave config out, or calibrate again with this config"
        )
    return own


def _build(mode: Mode, model, calibrated: fx.GraphModule | None, config: QuantConfig) -> fx.GraphModule:
    """The graph of ``mode``: its passes over a copy of the calibrated graph, or over the captured float
    graph for a mode without calibration, its tensors held as buffers that do not require grad (an
    inference graph, which ``torch.compile`` compiles outside ``no_grad`` too). The copy shares the
    calibrated graph's tensors instead of duplicating them: passes add new attributes and never write
    into existing ones (tested), so a mode costs only the tensors it adds, not a second set of float
    weights."""
    if mode.needs_calibration:
        shared = {id(t): t for t in (*calibrated.parameters(), *calibrated.buffers())}
        start = copy.deepcopy(calibrated, shared)
    else:
        start = _captured(model)
    return finish(mode, start, config)


def finish(mode: Mode, start: fx.GraphModule, config: QuantConfig) -> fx.GraphModule:
    """``mode``'s passes over ``start`` (changed in place): the calibrated graph, or the float graph for
    a mode without calibration."""
    gm = run_passes(start, [*mode.passes(config), drop_unused_attributes, hold_as_buffers])
    gm.meta["mode"] = mode.name
    return gm


def apply_mode(calibrated: fx.GraphModule, mode: str, config: QuantConfig | None = None) -> fx.GraphModule:
    """The graph of ``mode`` built from a calibrated graph (which is left unchanged). ``config``, if
    given, must be the one the graph was calibrated with."""
    (entry,) = resolve_modes([mode])
    if not entry.needs_calibration:
        raise ValueError(
            f"mode {mode!r} is built from the model, not from a calibrated graph: use "
            f"qpass.build_modes(model, [{mode!r}]) or qpass.apply(model, {mode!r})"
        )
    return _build(entry, None, calibrated, _calibrated_config(calibrated, config))


def build_modes(
    model,
    modes: Sequence[str],
    calibration: Iterable | None = None,
    tokenizer=None,
    config: QuantConfig | None = None,
    progress: bool = True,
) -> Iterator[tuple[str, fx.GraphModule]]:
    """``(mode, graph)`` for each of ``modes``, every quantised mode built from one calibration of
    ``model`` on ``calibration`` (token-id tensors, or texts with ``tokenizer``).

    The names are checked and the model calibrated (when a mode needs it) before this returns; the
    graphs are built one at a time as the result is iterated, so a caller that keeps only the current
    one holds one mode's graph at a time."""
    entries = resolve_modes(modes)
    calibrated = None
    quantised = [mode.name for mode in entries if mode.needs_calibration]
    if quantised:
        if calibration is None:
            which = f"mode {quantised[0]} needs" if len(quantised) == 1 else f"modes {', '.join(quantised)} need"
            raise ValueError(
                f"{which} calibration data: pass calibration=texts (with tokenizer=) or token tensors"
            )
        calibrated = calibrate(model, calibration, tokenizer, config, progress)
    config = calibrated.meta["quant_config"] if calibrated is not None else QuantConfig()
    return ((mode.name, _build(mode, model, calibrated, config)) for mode in entries)


def apply(
    model,
    mode: str = "w8a8",
    calibration: Iterable | None = None,
    tokenizer=None,
    config: QuantConfig | None = None,
    progress: bool = True,
) -> QuantizedMambaForCausalLM:
    """``model`` (a transformers MambaForCausalLM) in precision ``mode``, as a HF-style causal LM.

    calibration: token-id tensors, or texts with ``tokenizer``; needed by every mode but ``fp``.
    """
    ((name, graph),) = build_modes(model, [mode], calibration, tokenizer, config, progress)
    return QuantizedMambaForCausalLM(graph, model.config, name)


def compare(
    model,
    modes: Sequence[str],
    inputs: Sequence[torch.Tensor],
    calibration: Iterable | None = None,
    tokenizer=None,
    config: QuantConfig | None = None,
    reference: str = "w8a8",
    progress: bool = True,
) -> ComparisonReport:
    """Build ``modes`` (and ``reference``) from one calibration of ``model``, run them all on the token
    batches ``inputs`` (each (batch, seq)) and compare every tapped tensor with ``reference``'s. The
    report prints as a table (``to_table``) and serialises to JSON (``to_json``)."""
    check_batches(inputs, next(model.parameters()).device)
    names = list(dict.fromkeys([*modes, reference]))
    graphs = dict(build_modes(model, names, calibration, tokenizer, config, progress))
    return compare_graphs(graphs, list(inputs), reference, progress)
