"""Runs precision modes on identical token batches and reports, tensor by tensor, how they differ.

Every mode is built from one calibrated graph and fed the same batches. For each tapped tensor (per
layer: RMSNorm output, conv1d input and output, the SSM inputs dt/B/C/z, the scan output, out_proj's
quantised input, the block output; and the logits) it reports against a reference mode:

- exact-match %: int8 codes equal when both modes hold codes there, else values equal;
- max / mean |difference| of the values (codes times scale);
- off-grid count: values of a code tensor that are not integers in [-128, 127] (checked on the codes
  themselves, never on value / scale);
- saturation %: codes at -128 or 127;
and for the logits, top-1 agreement and the next-token NLL gap.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
import torch.fx as fx
from tqdm.auto import tqdm

from mamba_qpass.numerics import INT8_MAX, INT8_MIN
from mamba_qpass.taps import tap_scale, tapped_nodes, with_tap_outputs


@dataclass
class TensorDiff:
    kind: str  # "codes" or "float" (of the compared mode's tensor)
    exact_match_pct: float
    max_abs_diff: float
    mean_abs_diff: float
    off_grid: int | None
    saturation_pct: float | None


@dataclass
class ModeSummary:
    nll: float
    top1_agreement_pct: float  # with the reference mode's argmax
    nll_gap: float  # this mode's NLL minus the reference's


@dataclass
class ComparisonReport:
    reference: str
    modes: list[str]
    tokens: int
    tensors: dict[str, dict[str, TensorDiff]] = field(default_factory=dict)  # mode -> tap -> diff
    summary: dict[str, ModeSummary] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "reference": self.reference,
                "modes": self.modes,
                "tokens": self.tokens,
                "summary": {m: vars(s) for m, s in self.summary.items()},
                "tensors": {m: {t: vars(d) for t, d in taps.items()} for m, taps in self.tensors.items()},
            },
            indent=2,
        )

    def to_table(self) -> str:
        lines = [f"reference mode: {self.reference}; {self.tokens} tokens, identical batches for every mode", ""]
        for mode, taps in self.tensors.items():
            lines.append(f"{mode} vs {self.reference}")
            lines.append(f"  {'tensor':<22} {'kind':<6} {'exact %':>8} {'max|d|':>10} {'mean|d|':>10} {'off-grid':>8} {'sat %':>6}")
            for name, d in taps.items():
                off = "-" if d.off_grid is None else str(d.off_grid)
                sat = "-" if d.saturation_pct is None else f"{d.saturation_pct:.2f}"
                lines.append(
                    f"  {name:<22} {d.kind:<6} {d.exact_match_pct:>8.2f} {d.max_abs_diff:>10.3g} "
                    f"{d.mean_abs_diff:>10.3g} {off:>8} {sat:>6}"
                )
            lines.append("")
        lines.append(f"{'mode':<10} {'NLL':>8} {'NLL gap':>9} {'top-1 agree %':>14}")
        for mode, s in self.summary.items():
            lines.append(f"{mode:<10} {s.nll:>8.4f} {s.nll_gap:>+9.4f} {s.top1_agreement_pct:>14.2f}")
        return "\n".join(lines)


def _tap_order(name: str) -> tuple:
    layer, _, tensor = name.partition(".")
    return (int(layer.removeprefix("layer")), tensor) if tensor else (1 << 30, name)


@torch.no_grad()
def _run_taps(gm: fx.GraphModule, batches: list[torch.Tensor], progress: bool, mode: str):
    """logits (concatenated over batches) and {tap: (tensor, scale or None)}."""
    tapped, names = with_tap_outputs(gm)
    scales = {name: tap_scale(gm, node) for name, node in tapped_nodes(gm).items()}
    outputs = [tapped(batch) for batch in tqdm(batches, desc=f"running {mode}", disable=not progress)]
    logits = torch.cat([o[0].float() for o in outputs])
    taps = {name: (torch.cat([o[1 + i] for o in outputs]), scales[name]) for i, name in enumerate(names)}
    return logits, taps


def _percent(mask: torch.Tensor) -> float:
    """Share of True in percent, from integer counts: a CUDA mean multiplies by 1/N, which can turn
    all-true into 99.99999999999999."""
    return 100.0 * int(mask.sum()) / mask.numel()


def _values(tensor: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    return tensor.double() if scale is None else tensor.double() * scale.double()


def _diff(mode_tap, reference_tap) -> TensorDiff:
    tensor, scale = mode_tap
    ref_tensor, ref_scale = reference_tap
    values, ref_values = _values(tensor, scale), _values(ref_tensor, ref_scale)
    both_codes = scale is not None and ref_scale is not None
    same = tensor.double() == ref_tensor.double() if both_codes else values == ref_values
    delta = (values - ref_values).abs()
    off_grid = saturation = None
    if scale is not None:
        codes = tensor.double()
        off_grid = int(((codes != codes.round()) | (codes < INT8_MIN) | (codes > INT8_MAX)).sum())
        saturation = _percent((codes == INT8_MIN) | (codes == INT8_MAX))
    return TensorDiff(
        kind="codes" if scale is not None else "float",
        exact_match_pct=_percent(same),
        max_abs_diff=delta.max().item(),
        mean_abs_diff=delta.mean().item(),
        off_grid=off_grid,
        saturation_pct=saturation,
    )


def _nll(logits: torch.Tensor, batches: list[torch.Tensor]) -> float:
    ids = torch.cat(batches).to(logits.device)
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten()).item()


def check_batches(batches: Sequence[torch.Tensor], device: torch.device) -> None:
    for i, batch in enumerate(batches):
        if batch.device != device or batch.dim() != 2:
            raise ValueError(
                f"input batch {i} must be a (batch, seq) token tensor on {device}, got {tuple(batch.shape)} on "
                f"{batch.device}"
            )


def compare_graphs(
    graphs: dict[str, fx.GraphModule], batches: list[torch.Tensor], reference: str, progress: bool = True
) -> ComparisonReport:
    if reference not in graphs:
        raise ValueError(f"reference mode {reference!r} is not among the compared modes {list(graphs)}")
    runs = {mode: _run_taps(gm, batches, progress, mode) for mode, gm in graphs.items()}
    ref_logits, ref_taps = runs[reference]
    ref_top1 = ref_logits.argmax(-1)
    ref_nll = _nll(ref_logits, batches)
    report = ComparisonReport(reference, list(graphs), sum(b.numel() for b in batches))
    for mode, (logits, taps) in runs.items():
        nll = _nll(logits, batches)
        report.summary[mode] = ModeSummary(
            nll=nll,
            top1_agreement_pct=_percent(logits.argmax(-1) == ref_top1),
            nll_gap=nll - ref_nll,
        )
        if mode != reference:
            shared = sorted(set(taps) & set(ref_taps), key=_tap_order)
            report.tensors[mode] = {name: _diff(taps[name], ref_taps[name]) for name in shared}
    return report
