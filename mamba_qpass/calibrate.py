"""Calibration data, the calibration loop, and the prepare and convert steps around it.

Calibration takes an iterable of token-id tensors, or texts plus a tokenizer. Texts are tokenised in
the order given, joined with the end-of-text token and cut into ``num_samples`` sequences of
``seq_len`` tokens (fewer when the text is shorter): the same data always gives the same batches.
"""

from collections.abc import Iterable

import torch
import torch.fx as fx
from tqdm.auto import tqdm

from mamba_qpass.passes.manager import run_passes
from mamba_qpass.passes.observe import insert_observers
from mamba_qpass.passes.quantize import quantize_to_qdq
from mamba_qpass.passes.rotate_out_proj import rotate_out_proj
from mamba_qpass.quant_config import QuantConfig


class CalibrationDataError(ValueError):
    """The calibration data is empty, malformed, or on another device than the model."""


def _token_sequences(calibration, tokenizer, config: QuantConfig, device: torch.device) -> list[torch.Tensor]:
    """Texts are tokenised straight onto ``device``; token tensors are taken as given."""
    items = list(calibration)
    if not items:
        raise CalibrationDataError("calibration data is empty: pass token-id tensors, or texts and a tokenizer")
    if all(isinstance(item, str) for item in items):
        if tokenizer is None:
            raise CalibrationDataError("calibration texts need a tokenizer: pass tokenizer=...")
        separator = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        stream: list[int] = []
        text_tokens = 0
        needed = config.num_samples * config.seq_len
        for text in items:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            text_tokens += len(ids)
            stream += ids + separator
            if len(stream) >= needed:
                break
        if not text_tokens:
            # Separators alone would calibrate on end-of-text tokens and nothing else.
            raise CalibrationDataError(
                f"calibration texts hold no tokens ({len(items)} texts, all empty or whitespace the tokenizer drops): "
                "pass the texts the model will see"
            )
        tokens = torch.tensor(stream[:needed], dtype=torch.long, device=device)
        return list(tokens.split(config.seq_len))
    sequences = []
    for i, item in enumerate(items):
        if not isinstance(item, torch.Tensor) or item.dtype not in (torch.int64, torch.int32) or item.dim() not in (1, 2):
            raise CalibrationDataError(
                f"calibration item {i} must be a 1-D or 2-D integer tensor of token ids (or every item a str), "
                f"got {type(item).__name__}{'' if not isinstance(item, torch.Tensor) else f' {item.dtype} {tuple(item.shape)}'}"
            )
        rows = item.reshape(-1, item.shape[-1]) if item.dim() == 2 else item[None]
        sequences += [row[: config.seq_len] for row in rows if row.numel() > 0]
    if not sequences:
        raise CalibrationDataError("calibration tensors hold no tokens")
    return sequences[: config.num_samples]


def calibration_batches(
    calibration: Iterable, tokenizer, config: QuantConfig, device: torch.device
) -> list[torch.Tensor]:
    """Batches of (batch, seq) token ids, consecutive sequences of equal length grouped together."""
    sequences = _token_sequences(calibration, tokenizer, config, device)
    for i, seq in enumerate(sequences):
        if seq.device != device:
            raise CalibrationDataError(
                f"the model is on {device} but calibration sequence {i} is on {seq.device}: "
                f"move the data with .to('{device}') or the model with .to('{seq.device}')"
            )
    batches: list[list[torch.Tensor]] = []
    for seq in sequences:
        if batches and len(batches[-1]) < config.batch_size and batches[-1][0].shape == seq.shape:
            batches[-1].append(seq)
        else:
            batches.append([seq])
    return [torch.stack(batch).long() for batch in batches]


@torch.no_grad()
def run_calibration(gm: fx.GraphModule, batches: list[torch.Tensor], progress: bool = True) -> None:
    tokens = sum(b.numel() for b in batches)
    with tqdm(total=tokens, desc="calibrating", unit="tok", disable=not progress) as bar:
        for batch in batches:
            gm(batch)
            bar.update(batch.numel())


def prepare(gm: fx.GraphModule, config: QuantConfig) -> fx.GraphModule:
    """The captured graph with the Hadamard rotation (if configured) and an observer on every
    activation the int8 datapath quantises, ready to observe calibration batches."""
    return run_passes(gm, ([rotate_out_proj] if config.hadamard else []) + [insert_observers(config)])


def convert(gm: fx.GraphModule, config: QuantConfig) -> fx.GraphModule:
    """The observed graph as the reference-quantised (q/dq) graph every quantised mode starts from."""
    gm = run_passes(gm, [quantize_to_qdq])
    gm.meta["quant_config"] = config
    return gm
