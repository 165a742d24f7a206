"""Configuration of a quantisation recipe, as a frozen dataclass."""

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class QuantConfig:
    """How a model is calibrated and quantised.

    percentile_alpha: the SSM input ``u`` (conv1d output) is scaled from this percentile of |u|
        (averaged over calibration batches) rather than its maximum, so rare outliers do not
        waste the int8 range; every other activation uses its running abs-max.
    hadamard: rotate out_proj's input by an orthonormal Hadamard matrix before quantising it (and
        out_proj's weight by the same matrix), which spreads outlier channels over all channels.
    num_samples, seq_len: the default calibration recipe, 512 sequences of 512 tokens (fewer when
        the data holds fewer).
    batch_size: sequences per calibration forward.
    scan_out_dtype: dtype of the int8 scan's output, which out_proj's quantiser reads.
    """

    percentile_alpha: float = 0.9995
    hadamard: bool = True
    num_samples: int = 512
    seq_len: int = 512
    batch_size: int = 8
    scan_out_dtype: torch.dtype = torch.float16

    def __post_init__(self):
        if not 0.0 < self.percentile_alpha <= 1.0:
            raise ValueError(f"percentile_alpha must be in (0, 1], got {self.percentile_alpha}")
        for name in ("num_samples", "seq_len", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.scan_out_dtype not in (torch.float16, torch.float32):
            raise ValueError(f"scan_out_dtype must be torch.float16 or torch.float32, got {self.scan_out_dtype}")
        if self.hadamard and self.scan_out_dtype != torch.float16:
            raise ValueError(
                "hadamard=True needs scan_out_dtype=torch.float16: the fused rotate-and-quantise kernel is "
                "exact only on float16 inputs; set hadamard=False to keep a float32 scan output"
            )
