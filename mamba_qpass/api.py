"""The public surface: calibrate a model once, then apply any precision mode to it."""

import copy
from collections.abc import Iterable

import torch.fx as fx

from mamba_qpass.calibrate import calibration_batches, run_calibration
from mamba_qpass.capture import capture
from mamba_qpass.hf import QuantizedMambaForCausalLM
from mamba_qpass.modes import FLOAT_MODE, check_mode, mode_passes
from mamba_qpass.passes.drop_unused import drop_unused_attributes
from mamba_qpass.passes.manager import run_passes
from mamba_qpass.passes.observe import insert_observers
from mamba_qpass.passes.quantize import quantize_to_qdq
from mamba_qpass.passes.rotate_out_proj import rotate_out_proj
from mamba_qpass.quant_config import QuantConfig


def calibrate(
    model, calibration: Iterable, tokenizer=None, config: QuantConfig | None = None, progress: bool = True
) -> fx.GraphModule:
    """Capture ``model``, observe its activations on ``calibration`` and return the calibrated,
    reference-quantised (q/dq) graph that every mode starts from."""
    config = config or QuantConfig()
    gm = capture(model)
    device = next(model.parameters()).device
    batches = calibration_batches(calibration, tokenizer, config, device)
    prepare = ([rotate_out_proj] if config.hadamard else []) + [insert_observers(config)]
    gm = run_passes(gm, prepare)
    run_calibration(gm, batches, progress)
    gm = run_passes(gm, [quantize_to_qdq])
    gm.meta["quant_config"] = config
    return gm


def apply_mode(calibrated: fx.GraphModule, mode: str, config: QuantConfig | None = None) -> fx.GraphModule:
    """The graph of ``mode`` built from a copy of a calibrated graph (which is left unchanged).

    The copy shares the calibrated graph's tensors instead of duplicating them: passes add new
    attributes and never write into existing ones (tested), so a mode costs only the tensors it adds,
    not a second set of float weights."""
    config = config or calibrated.meta.get("quant_config") or QuantConfig()
    shared = {id(t): t for t in (*calibrated.parameters(), *calibrated.buffers())}
    gm = copy.deepcopy(calibrated, shared)
    return run_passes(gm, [*mode_passes(mode, config), drop_unused_attributes])


def mode_graph(model, mode: str, calibrated: fx.GraphModule | None, config: QuantConfig | None = None) -> fx.GraphModule:
    """The graph of ``mode``: ``fp`` is captured from ``model``, every other mode is built from the
    calibrated graph of that model."""
    check_mode(mode)
    if mode == FLOAT_MODE:
        return capture(model)
    if calibrated is None:
        raise ValueError(f"mode {mode!r} needs a calibrated graph: run qpass.calibrate(model, ...) first")
    return apply_mode(calibrated, mode, config)


def mode_model(
    model, mode: str, calibrated: fx.GraphModule | None, config: QuantConfig | None = None
) -> QuantizedMambaForCausalLM:
    """``mode_graph`` wrapped as a HF-style causal LM."""
    return QuantizedMambaForCausalLM(mode_graph(model, mode, calibrated, config), model.config, mode)


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
    check_mode(mode)
    calibrated = None
    if mode != FLOAT_MODE:
        if calibration is None:
            raise ValueError(
                f"mode {mode!r} needs calibration data: pass calibration=texts (with tokenizer=) or token tensors"
            )
        calibrated = calibrate(model, calibration, tokenizer, config, progress)
    return mode_model(model, mode, calibrated, config)
