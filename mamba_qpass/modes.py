"""The precision modes, each a list of passes over the same calibrated (reference-quantised) graph.

Adding a mode means adding its passes and one entry here; no forward reads a mode flag.
"""

from collections.abc import Callable



from mamba_qpass.passes.float_sim import float_sim
from mamba_qpass.passes.fp32_conv import fp32_conv
from mamba_qpass.passes.fp32_ssm import fp32_ssm
from mamba_qpass.passes.lower_int8 import lower_int8
from mamba_qpass.passes.manager import Pass
from mamba_qpass.quant_config import QuantConfig

# mode name -> (config -> passes applied to the calibrated q/dq graph)
MODE_PASSES: dict[str, Callable[[QuantConfig], list[Pass]]] = {
    "qdq": lambda config: [],
    "w8a8": lambda config: [lower_int8(config)],
    "fp32_ssm": lambda config: [lower_int8(config), fp32_ssm],
    "float_sim": lambda config: [lower_int8(config), float_sim],
    "fp32_conv": lambda config: [lower_int8(config), fp32_conv],
}
FLOAT_MODE = "fp"


def mode_names() -> list[str]:
    return [FLOAT_MODE, *MODE_PASSES]


def check_mode(mode: str) -> None:
    if mode not in mode_names():
        raise ValueError(f"unknown mode {mode!r}: valid modes are {', '.join(mode_names())}")


def mode_passes(mode: str, config: QuantConfig) -> list[Pass]:
    check_mode(mode)
    return MODE_PASSES[mode](config)



