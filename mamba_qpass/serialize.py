"""Save and load quantised models: safetensors for the tensors, JSON for the rest; nothing pickled.

What is stored is the finished graph's own tensors (int8 codes, scales, the Hadamard matrix and
whatever float weights the mode still reads), not the float model plus its calibration: a saved w8a8
model runs without the float weights, and loading repeats no pass arithmetic, so no later change to
how a pass rounds can alter a saved model's numbers.

The graph's structure is not stored. It is a function of the source model's config, the QuantConfig
and the mode, so ``load`` rebuilds it with this version's capture and passes over a zero-weight model
of that config, with every observer given a placeholder range (ranges change tensor values, never
nodes). The saved tensors then replace the placeholder ones, each checked by name, shape and dtype:
the reloaded graph is the saved one op for op and its logits are the saved model's bit for bit.
Storing the graph itself would mean storing code, or a node format that load executes; rebuilding it
keeps the folder pure data, and a graph this version would build differently is refused by the tensor
check instead of run.

A folder holds ``mamba_qpass.json`` (format version, project version, mode, QuantConfig, the source
model's config, dtype and weight fingerprint, the calibration record, and the size and sha256 of the
tensors file) and ``model.safetensors``, plus the tokenizer's files when one is given. It is written to
a temporary folder beside the target and renamed into place, so an interrupted save leaves no folder
at the target (or leaves the previous save there whole).
"""

import dataclasses
import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import torch
import torch.fx as fx
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mamba_qpass.api import apply_mode, build_modes
from mamba_qpass.calibrate import convert, prepare
from mamba_qpass.capture import capture
from mamba_qpass.hf import QuantizedMambaForCausalLM
from mamba_qpass.loading import SAVED_MODEL_METADATA
from mamba_qpass.modes import MODES
from mamba_qpass.observers import AbsMaxObserver, PercentileObserver
from mamba_qpass.provenance import CalibrationRecord, SourceModel, weights_fingerprint
from mamba_qpass.quant_config import QuantConfig
from mamba_qpass.version import __version__

FORMAT = "mamba-qpass"
FORMAT_VERSION = 1
METADATA_FILE = SAVED_MODEL_METADATA
TENSORS_FILE = "model.safetensors"


class SavedModelError(ValueError):
    """A folder ``qpass.load`` cannot load, or an object ``qpass.save`` cannot save; the message names
    the file and the fix."""


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _dtype(name: str, where: Path) -> torch.dtype:
    value = getattr(torch, name, None) if isinstance(name, str) else None
    if not isinstance(value, torch.dtype):
        raise SavedModelError(f"{where} names dtype {name!r}, which is not a torch dtype: save the model again")
    return value


def _graph_tensors(gm: fx.GraphModule) -> dict[str, torch.Tensor]:
    return {name: t.detach() for name, t in [*gm.named_parameters(), *gm.named_buffers()]}


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _unwrap(model_or_graph) -> tuple[fx.GraphModule, str, str | None]:
    """(graph, kind, mode): kind "model" for the HF-style wrapper, "graph" for a bare graph; mode None
    for the calibrated graph of qpass.calibrate."""
    if isinstance(model_or_graph, QuantizedMambaForCausalLM):
        gm, kind, mode = model_or_graph.gm, "model", model_or_graph.mode
    elif isinstance(model_or_graph, fx.GraphModule):
        gm, kind, mode = model_or_graph, "graph", model_or_graph.meta.get("mode")
    else:
        raise SavedModelError(
            f"qpass.save takes what qpass.apply, qpass.apply_mode or qpass.calibrate return, not "
            f"{type(model_or_graph).__name__}"
        )
    if "source" not in gm.meta or (mode is None and "quant_config" not in gm.meta):
        raise SavedModelError(
            "this graph does not record the model it was built from: save what qpass.apply, "
            "qpass.apply_mode or qpass.calibrate return"
        )
    return gm, kind, mode


def _metadata(gm: fx.GraphModule, kind: str, mode: str | None) -> dict:
    config = gm.meta.get("quant_config")
    calibration = gm.meta.get("calibration")
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "project_version": __version__,
        "kind": kind,
        "mode": mode,  # null: the calibrated graph every quantised mode is built from
        "quant_config": None if config is None else {
            name: _dtype_name(value) if isinstance(value, torch.dtype) else value
            for name, value in dataclasses.asdict(config).items()
        },
        "source": dataclasses.asdict(gm.meta["source"]),
        "calibration": None if calibration is None else dataclasses.asdict(calibration),
    }


def _check_target(target: Path) -> None:
    """A save may replace an earlier save or fill an empty folder, never a folder of other files."""
    if target.exists() and not target.is_dir():
        raise SavedModelError(f"{target} is a file: save into a folder (a new or empty one)")
    if target.is_dir() and any(target.iterdir()) and not (target / METADATA_FILE).is_file():
        raise SavedModelError(
            f"{target} holds files and no {METADATA_FILE}, so it is not an earlier save to replace: "
            "save into a new or empty folder"
        )


def _move_into_place(written: Path, target: Path) -> None:
    """Renames ``written`` to ``target``; an earlier save there is moved aside first and removed only
    once the new one is in place."""
    if not target.exists():
        written.rename(target)
        return
    previous = written.with_name(f"{written.name}.previous")  # unique, as ``written`` is
    target.rename(previous)
    try:
        written.rename(target)
    except BaseException:
        previous.rename(target)
        raise
    shutil.rmtree(previous)


def save(model_or_graph, directory, tokenizer=None) -> Path:
    """Writes ``model_or_graph`` (what qpass.apply, qpass.apply_mode or qpass.calibrate return) to the
    folder ``directory``, with ``tokenizer``'s files if given; returns the folder's path. Loading it
    needs neither the float model nor calibration data (``qpass.load``)."""
    gm, kind, mode = _unwrap(model_or_graph)
    record = _metadata(gm, kind, mode)
    target = Path(directory)
    _check_target(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Beside the target, so the final rename stays on one file system and is atomic.
    written = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        tensors_path = written / TENSORS_FILE
        save_file({name: t.contiguous() for name, t in _graph_tensors(gm).items()}, tensors_path)
        record["tensors"] = {
            "file": TENSORS_FILE, "bytes": tensors_path.stat().st_size, "sha256": _file_sha256(tensors_path),
        }
        if tokenizer is not None:
            tokenizer.save_pretrained(written)
        (written / METADATA_FILE).write_text(json.dumps(record, indent=2, allow_nan=False))
        _move_into_place(written, target)
    except BaseException:
        shutil.rmtree(written, ignore_errors=True)
        raise
    return target


def _read_metadata(folder: Path) -> dict:
    path = folder / METADATA_FILE
    if not folder.is_dir():
        raise SavedModelError(f"{folder} does not exist or is not a folder: pass the folder qpass.save wrote")
    if not path.is_file():
        raise SavedModelError(
            f"{path} is missing: {folder} is not a folder written by qpass.save, or it was copied incompletely; "
            "copy it again, or save the model again with qpass.save(model, folder)"
        )
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SavedModelError(
            f"{path} is truncated or not JSON ({err}): copy the folder again, or save the model again"
        ) from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise SavedModelError(f"{path} is not mamba-qpass metadata: pass a folder written by qpass.save")
    version = record.get("format_version")
    if version != FORMAT_VERSION:
        raise SavedModelError(
            f"{path} has format version {version!r} (written by mamba-qpass {record.get('project_version')}), "
            f"and this mamba-qpass {__version__} reads format version {FORMAT_VERSION}: load it with the "
            "version that wrote it, or quantise the model again with this one"
        )
    mode = record.get("mode")
    if mode is not None and mode not in MODES:
        raise SavedModelError(
            f"{path} holds mode {mode!r}, which mamba-qpass {__version__} does not know (it knows "
            f"{', '.join(MODES)}): load it with mamba-qpass {record.get('project_version')}, which wrote it"
        )
    return record


def _quant_config(fields: dict | None, path: Path) -> QuantConfig | None:
    if fields is None:
        return None
    known = {f.name for f in dataclasses.fields(QuantConfig)}
    if set(fields) != known:
        raise SavedModelError(
            f"{path} has QuantConfig fields {sorted(fields)}, this version has {sorted(known)}: "
            "quantise the model again with this version"
        )
    defaults = QuantConfig()
    return QuantConfig(**{
        name: _dtype(value, path) if isinstance(getattr(defaults, name), torch.dtype) else value
        for name, value in fields.items()
    })


def _read_tensors(folder: Path, expected: dict, device: torch.device) -> dict[str, torch.Tensor]:
    path = folder / TENSORS_FILE
    fix = "copy the folder again, or save the model again"
    if not path.is_file():
        raise SavedModelError(f"{path} is missing: {fix}")
    size = path.stat().st_size
    if size != expected["bytes"]:
        raise SavedModelError(f"{path} has {size} bytes, {folder / METADATA_FILE} says {expected['bytes']} (truncated?): {fix}")
    if _file_sha256(path) != expected["sha256"]:
        raise SavedModelError(f"{path} does not match the sha256 in {folder / METADATA_FILE} (corrupted?): {fix}")
    try:
        return load_file(path, device=str(device))
    except SafetensorError as err:
        raise SavedModelError(f"{path} is not a readable safetensors file ({err}): {fix}") from None


def _zero_model(source: SourceModel, device: torch.device, path: Path):
    """A MambaForCausalLM of the source's config and dtype with every weight zero: built on the meta
    device and then allocated, so no initialiser runs over weights that are replaced anyway."""
    from transformers import MambaConfig, MambaForCausalLM

    if source.config.get("model_type") != "mamba":
        raise SavedModelError(
            f"{path} records a source model of type {source.config.get('model_type')!r}; mamba-qpass "
            "loads Mamba-1 ('mamba') models only: save the model again"
        )
    with torch.device("meta"):
        model = MambaForCausalLM(MambaConfig.from_dict(source.config))
    model = model.to(_dtype(source.dtype, path)).to_empty(device=device)
    model.tie_weights()  # to_empty gives each module a tensor of its own, which unties a tied head
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
    return model.eval()


def _rebuild(source: SourceModel, config: QuantConfig | None, mode: str | None, device, path: Path) -> fx.GraphModule:
    """The graph qpass builds for this source config, QuantConfig and mode, with placeholder values."""
    model = _zero_model(source, device, path)
    if config is None:
        ((_, gm),) = build_modes(model, [mode], progress=False)
        return gm
    gm = prepare(capture(model), config)
    for module in gm.modules():
        if isinstance(module, (AbsMaxObserver, PercentileObserver)):
            module.assume_range(1.0)
    gm = convert(gm, config)
    return gm if mode is None else apply_mode(gm, mode)


def _fill(gm: fx.GraphModule, saved: dict[str, torch.Tensor], path: Path, version: str) -> None:
    own = _graph_tensors(gm)
    fix = f"it was written by mamba-qpass {version}: load it with that version, or quantise the model again"
    missing, unexpected = sorted(own.keys() - saved.keys()), sorted(saved.keys() - own.keys())
    if missing or unexpected:
        raise SavedModelError(
            f"{path} does not hold the tensors this version's graph reads (missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}): {fix}"
        )
    for name, tensor in own.items():
        if (saved[name].shape, saved[name].dtype) != (tensor.shape, tensor.dtype):
            raise SavedModelError(
                f"{path} holds {name} as {saved[name].dtype} {tuple(saved[name].shape)}, this version's graph "
                f"reads {tensor.dtype} {tuple(tensor.shape)}: {fix}"
            )
    with torch.no_grad():
        for name, tensor in own.items():
            tensor.copy_(saved[name])


def load(directory, model=None, device=None):
    """The model or graph ``qpass.save`` wrote to ``directory``: a QuantizedMambaForCausalLM where a
    model was saved (what qpass.apply returns), a graph where a graph was (what qpass.apply_mode or
    qpass.calibrate return). Its logits equal those of what was saved, bit for bit.

    model: the float model it was quantised from, optional; if given, its weights must have the saved
        fingerprint (a different model raises SavedModelError) and it sets the default device.
    device: where to load it; default the given model's device, else CPU.
    """
    folder = Path(directory)
    record = _read_metadata(folder)
    path = folder / METADATA_FILE
    try:
        source = SourceModel(**record["source"])
        calibration = None if record["calibration"] is None else CalibrationRecord(**record["calibration"])
        config = _quant_config(record["quant_config"], path)
        mode, kind, expected_tensors = record["mode"], record["kind"], record["tensors"]
    except (KeyError, TypeError) as err:
        raise SavedModelError(f"{path} lacks or misspells an entry ({err!r}): save the model again") from None
    needs_config = mode is None or MODES[mode].needs_calibration
    if kind not in ("model", "graph") or needs_config != (config is not None) or (kind == "model" and mode is None):
        raise SavedModelError(
            f"{path} is inconsistent (kind {kind!r}, mode {mode!r}, quant_config {record['quant_config']!r}): "
            "save the model again"
        )
    if model is not None and (actual := weights_fingerprint(model)) != source.fingerprint:
        raise SavedModelError(
            f"{path} was quantised from weights with fingerprint {source.fingerprint}, the model given has "
            f"{actual}: pass the float model it was quantised from, or load without model="
        )
    if device is None:
        device = next(model.parameters()).device if model is not None else "cpu"
    device = torch.device(device)
    saved = _read_tensors(folder, expected_tensors, device)
    gm = _rebuild(source, config, mode, device, path)
    _fill(gm, saved, folder / TENSORS_FILE, record["project_version"])
    gm.meta.update(source=source, calibration=calibration)
    if kind == "model":
        from transformers import MambaConfig

        return QuantizedMambaForCausalLM(gm, MambaConfig.from_dict(source.config), mode)
    return gm
