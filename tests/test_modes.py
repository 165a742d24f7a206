"""The precision modes' contracts (SPEC.md): float_sim reproduces every w8a8 int8 tensor code for code
and stays on the int8 grid; fp32_ssm differs from w8a8 only in the scan; every mode is deterministic;
the graphs of two modes differ exactly where the mode definitions say."""

from collections import Counter

import pytest
import torch

import mamba_qpass as qpass
from mamba_qpass.comparison import compare_graphs
from mamba_qpass.snapshot import graph_to_text
from models import hf_logits, random_mamba
from test_snapshots import check_snapshot
from test_w8a8 import sqnr_db, token_batches

MODES = ["w8a8", "fp32_ssm", "float_sim", "fp32_conv"]
ops = torch.ops.mamba_qpass


@pytest.fixture(scope="module")
def calibrated():
    model = random_mamba(initializer_range=0.02)
    return model, qpass.calibrate(model, token_batches(97), progress=False)


@pytest.fixture(scope="module")
def graphs(calibrated):
    return {mode: qpass.apply_mode(calibrated[1], mode) for mode in MODES}


def _tensors(gm) -> dict[str, torch.Tensor]:
    return dict(gm.state_dict(keep_vars=True))


def test_modes_share_the_calibrated_tensors_and_leave_them_unchanged():
    model = random_mamba(initializer_range=0.02)
    calibrated = qpass.calibrate(model, token_batches(97), progress=False)
    before = {name: t.detach().clone() for name, t in _tensors(calibrated).items()}
    graphs = {mode: qpass.apply_mode(calibrated, mode) for mode in ["qdq", *MODES]}
    after = _tensors(calibrated)
    assert after.keys() == before.keys()
    for name, t in after.items():
        assert torch.equal(t, before[name]), f"a pass wrote into the calibrated graph's {name}"
    for mode, gm in graphs.items():
        kept = {name: t for name, t in _tensors(gm).items() if name in after}
        assert kept, mode
        for name, t in kept.items():
            # a finished graph holds the parameters as detached buffers: the same memory, no grad
            assert t.data_ptr() == after[name].data_ptr() and t.shape == after[name].shape, (
                f"{mode} copied {name} instead of sharing it"
            )


@pytest.fixture(scope="module")
def report(graphs):
    batches = token_batches(97, count=2, batch=2, length=33, seed=11)
    return compare_graphs(graphs, batches, reference="w8a8", progress=False)


def test_float_sim_matches_every_w8a8_code_and_stays_on_grid(report):
    diffs = report.tensors["float_sim"]
    codes = {name: d for name, d in diffs.items() if d.kind == "codes"}
    # per layer: RMSNorm output, conv1d input and output, dt_low, dt, B, C, z, out_proj input
    assert len(codes) == 2 * 9
    for name, d in codes.items():
        assert d.exact_match_pct == 100.0, name
        assert d.off_grid == 0, name
    assert diffs["logits"].exact_match_pct == 100.0


def test_fp32_ssm_differs_from_w8a8_only_downstream_of_the_scan_input(report):
    diffs = report.tensors["fp32_ssm"]
    upstream = [n for n in diffs if n.split(".")[-1] in {"norm_out", "conv_in", "conv_out", "ssm_dt_low", "ssm_dt", "ssm_B", "ssm_C", "ssm_z"}]
    assert upstream and all(diffs[n].exact_match_pct == 100.0 for n in upstream)
    # the int8 scan dequantises exactly as the dequantise nodes do, so here nothing differs at all
    assert all(d.exact_match_pct == 100.0 for d in diffs.values())


def test_fp32_conv_changes_the_conv_output_and_is_an_upper_bound(calibrated, graphs, report):
    assert report.tensors["fp32_conv"]["layer0.conv_out"].kind == "float"
    assert report.tensors["fp32_conv"]["layer0.conv_in"].exact_match_pct == 100.0
    model, _ = calibrated
    ids = token_batches(97, count=1, batch=2, length=40, seed=7)[0]
    fp = hf_logits(model, ids)
    assert sqnr_db(graphs["fp32_conv"](ids), fp) > sqnr_db(graphs["w8a8"](ids), fp)


@pytest.mark.parametrize("mode", MODES)
def test_running_a_mode_twice_gives_identical_logits(graphs, mode):
    ids = torch.randint(0, 97, (3, 29), generator=torch.Generator().manual_seed(3))
    assert torch.equal(graphs[mode](ids), graphs[mode](ids))


def _op_counts(gm) -> Counter:
    return Counter(str(n.target) for n in gm.graph.nodes if n.op == "call_function")


def test_fp32_ssm_graph_differs_from_w8a8_only_in_the_scan_and_its_dequantisation(graphs):
    w8a8, fp32_ssm = _op_counts(graphs["w8a8"]), _op_counts(graphs["fp32_ssm"])
    layers = 2
    assert w8a8 - fp32_ssm == Counter({"mamba_qpass.int8_selective_scan.default": layers})
    assert fp32_ssm - w8a8 == Counter(
        {
            "mamba_qpass.selective_scan.default": layers,
            "quantized_decomposed.dequantize_per_tensor.tensor": 5 * layers,
            "aten.select.int": 5 * layers,
        }
    )
    int8_dtypes = [n.args[10] for n in graphs["w8a8"].graph.nodes if str(n.target) == "mamba_qpass.int8_selective_scan.default"]
    float_dtypes = [n.kwargs["out_dtype"] for n in graphs["fp32_ssm"].graph.nodes
                    if str(n.target) == "mamba_qpass.selective_scan.default"]
    assert float_dtypes == int8_dtypes, "the float scan stores its output in the int8 scan's dtype, no cast after"


def test_float_sim_graph_has_no_integer_kernel_and_explicit_rounding(graphs):
    counts = _op_counts(graphs["float_sim"])
    assert not [op for op in counts if op.startswith("mamba_qpass.") and ("int8" in op or "quant" in op)]
    # one clamp + round per requantisation: RMSNorm, in_proj, conv1d, x_proj, dt_proj, out_proj input
    assert counts["aten.round.default"] == counts["aten.clamp.default"] == 2 * 6


def test_fp32_conv_graph_replaces_only_conv_and_scan(graphs):
    w8a8, fp32_conv = _op_counts(graphs["w8a8"]), _op_counts(graphs["fp32_conv"])
    assert w8a8 - fp32_conv == Counter(
        {"mamba_qpass.int8_selective_scan.default": 2, "mamba_qpass.int8_causal_conv1d.default": 2}
    )
    added = fp32_conv - w8a8
    assert added["mamba_qpass.causal_conv1d.default"] == 2 and added["mamba_qpass.quantize.default"] == 2


@pytest.mark.parametrize("mode", ["fp32_ssm", "float_sim", "fp32_conv"])
def test_mode_snapshot(graphs, mode, update_snapshots):
    check_snapshot(f"{mode}_tiny", graph_to_text(graphs[mode]), update_snapshots)


def test_compare_reports_json_and_table(report):
    import json

    payload = json.loads(report.to_json())
    assert payload["reference"] == "w8a8" and set(payload["tensors"]) == {"fp32_ssm", "float_sim", "fp32_conv"}
    table = report.to_table()
    assert "float_sim vs w8a8" in table and "layer1.conv_out" in table


# --- the registry: one function builds every mode from one calibration ----------------------------


def test_every_mode_is_in_the_registry_with_whether_it_needs_calibration():
    from mamba_qpass.modes import MODES as REGISTRY

    assert list(REGISTRY) == qpass.mode_names() == ["fp", "qdq", "w8a8", "fp32_ssm", "float_sim", "fp32_conv"]
    assert [name for name, mode in REGISTRY.items() if not mode.needs_calibration] == ["fp"]


def test_build_modes_calibrates_once_and_builds_what_apply_mode_and_capture_build(monkeypatch):
    import mamba_qpass.api as api

    calls = []
    real_calibrate = api.calibrate

    def counting_calibrate(*args, **kwargs):
        calls.append(args)
        return real_calibrate(*args, **kwargs)

    monkeypatch.setattr(api, "calibrate", counting_calibrate)
    model = random_mamba(initializer_range=0.02)
    built = qpass.build_modes(model, ["fp", "w8a8", "float_sim"], token_batches(97), progress=False)
    assert len(calls) == 1  # before any graph is asked for
    graphs = dict(built)
    assert list(graphs) == ["fp", "w8a8", "float_sim"] and len(calls) == 1
    assert graph_to_text(graphs["fp"]) == graph_to_text(qpass.capture(model))
    calibrated = real_calibrate(model, token_batches(97), progress=False)
    for mode in ("w8a8", "float_sim"):
        assert graph_to_text(graphs[mode]) == graph_to_text(qpass.apply_mode(calibrated, mode))


def test_mode_names_are_checked_at_the_entry_point():
    model = random_mamba(initializer_range=0.02)
    with pytest.raises(ValueError, match="unknown mode 'int4', 'w4a4': valid modes are fp, qdq, w8a8"):
        qpass.build_modes(model, ["w8a8", "int4", "w4a4"], token_batches(97))
    with pytest.raises(ValueError, match=r"must not repeat, got \['fp'\]"):
        qpass.build_modes(model, ["fp", "w8a8", "fp"], token_batches(97))
    with pytest.raises(ValueError, match="no mode given"):
        qpass.build_modes(model, [])
    with pytest.raises(TypeError, match=r"write \['w8a8'\]"):
        qpass.build_modes(model, "w8a8", token_batches(97))


def test_apply_mode_refuses_a_config_other_than_the_calibrated_one(calibrated):
    _, graph = calibrated
    same = qpass.QuantConfig()
    assert graph.meta["quant_config"] == same
    assert graph_to_text(qpass.apply_mode(graph, "w8a8", same)) == graph_to_text(qpass.apply_mode(graph, "w8a8"))
    # a float32 scan output would reach the float16-only Hadamard kernel of a graph calibrated for float16
    other = qpass.QuantConfig(hadamard=False, scan_out_dtype=torch.float32)
    expected = r"hadamard=False \(calibrated with True\), scan_out_dtype=torch.float32 \(calibrated with torch.float16\)"
    with pytest.raises(ValueError, match=f"differs from the one the graph was calibrated with: {expected}; leave"):
        qpass.apply_mode(graph, "w8a8", other)


def test_apply_mode_refuses_graphs_and_modes_that_are_not_built_from_a_calibration(calibrated):
    model, graph = calibrated
    with pytest.raises(ValueError, match=r"'fp' is built from the model.*qpass.apply\(model, 'fp'\)"):
        qpass.apply_mode(graph, "fp")
    with pytest.raises(ValueError, match="not made by qpass.calibrate"):
        qpass.apply_mode(qpass.capture(model), "w8a8")


def test_compare_is_a_package_function_whose_report_serialises_to_json(calibrated):
    import json

    model, _ = calibrated
    inputs = token_batches(97, count=2, batch=2, length=17, seed=5)
    report = qpass.compare(model, ["fp", "float_sim"], inputs, token_batches(97), progress=False)
    assert isinstance(report, qpass.ComparisonReport)
    payload = json.loads(report.to_json())
    assert payload["reference"] == "w8a8" and payload["modes"] == ["fp", "float_sim", "w8a8"]
    assert payload["tokens"] == 2 * 2 * 17
    assert set(payload["tensors"]) == {"fp", "float_sim"}
    assert payload["tensors"]["float_sim"]["layer1.conv_out"]["exact_match_pct"] == 100.0
    assert payload["tensors"]["fp"]["layer1.conv_out"]["kind"] == "float"
    assert payload["summary"]["w8a8"]["nll_gap"] == 0.0


def test_compare_of_float_modes_needs_no_calibration_and_checks_its_inputs(calibrated):
    model, _ = calibrated
    inputs = token_batches(97, count=1, batch=2, length=9)
    report = qpass.compare(model, ["fp"], inputs, reference="fp", progress=False)
    assert report.summary["fp"].top1_agreement_pct == 100.0 and report.tensors == {}
    with pytest.raises(ValueError, match=r"input batch 0 must be a \(batch, seq\) token tensor"):
        qpass.compare(model, ["fp"], [inputs[0][0]], reference="fp", progress=False)
