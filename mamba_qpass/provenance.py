"""What a quantised graph records about where it came from: the float model and the calibration data.

A saved model carries both (see serialize.py): the source model's config rebuilds the graph's
structure, the fingerprint of its weights tells whether a float model at hand is the one it came from,
and the calibration record says what it was calibrated on without storing the data.
"""

import hashlib
import json
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SourceModel:
    """config: the transformers config as its JSON dict; dtype: the parameters' dtype, e.g. "float32";
    fingerprint: ``weights_fingerprint`` of the model."""

    config: dict
    dtype: str
    fingerprint: str


@dataclass(frozen=True)
class CalibrationRecord:
    """sequences, tokens, seq_len: how much was calibrated on and how long the longest sequence was;
    token_sha256: a hash of the token ids in order, which identifies the data without storing it."""

    sequences: int
    tokens: int
    seq_len: int
    token_sha256: str


def _hash_tensor(digest, tensor: torch.Tensor) -> None:
    # The bytes as stored, viewed as uint8 so that dtypes numpy lacks (bfloat16) hash too.
    digest.update(tensor.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy())


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer: its name, dtype, shape and bytes, in name order. A tied
    weight counts once; another dtype of the same model is another fingerprint (it quantises differently)."""
    digest = hashlib.sha256()
    named = sorted([*model.named_parameters(), *model.named_buffers()], key=lambda item: item[0])
    for name, tensor in named:
        digest.update(f"{name}:{str(tensor.dtype).removeprefix('torch.')}:{list(tensor.shape)};".encode())
        _hash_tensor(digest, tensor)
    return f"sha256:{digest.hexdigest()}"


def describe_source(model) -> SourceModel:
    dtype = next(model.parameters()).dtype
    return SourceModel(
        config=json.loads(model.config.to_json_string(use_diff=False)),
        dtype=str(dtype).removeprefix("torch."),
        fingerprint=weights_fingerprint(model),
    )


def describe_calibration(batches: list[torch.Tensor]) -> CalibrationRecord:
    digest = hashlib.sha256()
    for batch in batches:
        _hash_tensor(digest, batch.long())
    return CalibrationRecord(
        sequences=sum(batch.shape[0] for batch in batches),
        tokens=sum(batch.numel() for batch in batches),
        seq_len=max(batch.shape[1] for batch in batches),
        token_sha256=digest.hexdigest(),
    )
