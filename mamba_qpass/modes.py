"""The one registry of precision modes: each mode is a list of passes over a starting graph.

A mode that needs calibration starts from the calibrated (reference-quantised) graph; one that does
not starts from the captured float graph. Adding a mode means adding its passes and one entry here;
no forward reads a mode flag.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mamba_qpass.passes.float_sim import float_sim
from mamba_qpass.passes.fp32_conv import fp32_conv
from mamba_qpass.passes.fp32_ssm import fp32_ssm
from mamba_qpass.passes.fuse_residual import fuse_residual_add
from mamba_qpass.passes.lower_int8 import lower_int8
from mamba_qpass.passes.manager import Pass
from mamba_qpass.quant_config import QuantConfig


@dataclass(frozen=True)
class Mode:
    name: str
    passes: Callable[[QuantConfig], list[Pass]]
    needs_calibration: bool


MODES: dict[str, Mode] = {
    mode.name: mode
    for mode in (
        Mode("fp", lambda config: [], needs_calibration=False),
        Mode("qdq", lambda config: [], needs_calibration=True),
        Mode("w8a8", lambda config: [lower_int8(config), fuse_residual_add], needs_calibration=True),
        Mode("fp32_ssm", lambda config: [lower_int8(config), fuse_residual_add, fp32_ssm], needs_calibration=True),
        Mode("float_sim", lambda config: [lower_int8(config), fuse_residual_add, float_sim], needs_calibration=True),
        Mode("fp32_conv", lambda config: [lower_int8(config), fuse_residual_add, fp32_conv], needs_calibration=True),
    )
}


def mode_names() -> list[str]:
    return list(MODES)


def resolve_modes(names: Sequence[str]) -> list[Mode]:
    """The registry entries of ``names``, in order; the one place a mode name is checked."""
    if isinstance(names, str):
        raise TypeError(f"modes must be a list of mode names, not the string {names!r}: write [{names!r}]")
    if not names:
        raise ValueError(f"no mode given: name at least one of {', '.join(MODES)}")
    unknown = [name for name in names if name not in MODES]
    if unknown:
        raise ValueError(f"unknown mode {', '.join(map(repr, unknown))}: valid modes are {', '.join(MODES)}")
    repeated = sorted({name for name in names if list(names).count(name) > 1})
    if repeated:
        raise ValueError(f"modes must not repeat, got {repeated} more than once in {list(names)}")
    return [MODES[name] for name in names]
