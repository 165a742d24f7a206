"""How much of each int8 tensor a quantised graph clips to -128 or 127 on some input, and a warning when
a tensor clips more than calibration should allow.

On the calibration data itself the abs-max scales clip nothing and the SSM input u, scaled from the
``percentile_alpha`` percentile (0.9995 by default), clips about 0.05% of its values by design. More
than ``SATURATION_WARNING_PCT`` percent (1%, twenty times that designed clipping) on some input means
that input's activations reach well beyond the calibrated ranges: the calibration data does not cover
it (another domain, or too few samples), and the clipped values cost accuracy.
"""

import warnings

import torch
import torch.fx as fx

from mamba_qpass.numerics import INT8_MAX, INT8_MIN
from mamba_qpass.taps import tap_scale, tapped_nodes, with_tap_outputs

SATURATION_WARNING_PCT = 1.0


class SaturationWarning(UserWarning):
    """An int8 tensor clipped more than ``SATURATION_WARNING_PCT`` percent of its values."""


@torch.no_grad()
def saturation(gm: fx.GraphModule, input_ids: torch.Tensor) -> dict[str, float]:
    """Percent of codes at -128 or 127, per int8 tensor of ``gm`` (those its taps hold as codes), on
    the (batch, seq) token ids ``input_ids``. Empty for a graph without int8 tensors (fp)."""
    tapped, names = with_tap_outputs(gm)
    coded = {name for name, node in tapped_nodes(gm).items() if tap_scale(gm, node) is not None}
    outputs = tapped(input_ids)
    shares = {}
    for name, tensor in zip(names, outputs[1:]):
        if name in coded:
            clipped = (tensor == INT8_MIN) | (tensor == INT8_MAX)
            shares[name] = 100.0 * int(clipped.sum()) / max(clipped.numel(), 1)
    return shares


def warn_on_saturation(shares: dict[str, float], where: str, threshold: float = SATURATION_WARNING_PCT) -> None:
    """A SaturationWarning naming every tensor of ``shares`` (``saturation``'s result) above ``threshold``."""
    over = {name: share for name, share in shares.items() if share > threshold}
    if over:
        listed = ", ".join(f"{name} {share:.2f}%" for name, share in sorted(over.items(), key=lambda kv: -kv[1]))
        warnings.warn(
            f"{where}: int8 saturation above {threshold}% of the values ({listed}): this input reaches beyond the "
            "calibrated ranges; calibrate on data like it (or on more data)",
            SaturationWarning,
            stacklevel=2,
        )
