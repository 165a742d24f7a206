"""Times the candidate tilings of the kernels whose GPU tiling is a fixed rule rather than autotuned: the int8
prefill conv (``int8_causal_conv1d.triton.prefill_tiling``), the prefill scan (``selective_scan.triton.
scan_tiling``), the one-token selective state update (``selective_state_update.triton.state_update_tiling``)
and the rotation at decode sizes (``hadamard_quant.triton._hadamard_tiling``), so each rule can follow a
measurement.

Every candidate is checked before it is timed: the conv's and the rotation's codes equal the reference's
(integer outputs, exact), the state update's new state equals the shipped tiling's bit for bit (each
element takes the same instructions whatever the tile) and its output agrees with it to float32 rounding
(the sum over the state may be ordered differently; it is reported whether it is bit-equal). A candidate
that fails its check is printed as such and not timed. Where dt_proj is fused into the state update, the
pair it replaces (dt_proj's GEMM, then the unfused update as shipped) is timed too, its outputs checked
equal to the fused kernel's. A scan tiling composes the recurrence in its own order, so its bits are its
own: its float16 output must be within 2e-3 of the largest output of the int8 reference (of the shipped
tiling's output where the reference would not fit the GPU), and the float variant on the dequantised
values must give the int8 variant's output and final state bit for bit under it, the contract the modes
rest on.

Times: the conv and the scan as ``bench_kernels.py`` times them (median of ``do_bench_cudagraph``); the
state update and the rotation as a decode step runs them, from cold L2 (``tiles.time_from_cold_l2``), at
the 2.8b config's sizes. All without programmatic dependent launch, as ``bench_kernels.py``'s rows.

    python benchmarks/sweep_tilings.py [--only conv,scan,state_update,hadamard] [--json out.json]
"""

import argparse
import json

import torch
from triton.testing import do_bench_cudagraph

from bench_kernels import (
    CONVS, DECODE_HADAMARDS, conv_inputs, dt_proj_codes, dt_proj_then_state_update, hadamard_inputs, scan_inputs,
    state_update, state_update_inputs,
)
from mamba_qpass.kernels.hadamard_quant.reference import hadamard_quant_ref
from mamba_qpass.kernels.hadamard_quant.triton import _hadamard_tiling, hadamard_quant
from mamba_qpass.kernels.dependent_launch import independent_launches
from mamba_qpass.kernels.int8_causal_conv1d.reference import int8_causal_conv1d_ref
from mamba_qpass.kernels.int8_causal_conv1d.triton import int8_causal_conv1d, prefill_tiling
from mamba_qpass.kernels.int8_linear.tiles import time_from_cold_l2
from mamba_qpass.kernels.selective_scan.reference import selective_scan_int8_ref
from mamba_qpass.kernels.selective_scan.triton import scan_tiling, selective_scan
from mamba_qpass.kernels.selective_state_update.triton import state_update_tiling

# The fifteenth session's winners and the tilings before them, then more warps a program with fewer
# registers a thread (sm_90: 40 registers at 128 channels in 4 warps, so 48 warps an SM against 32)
CONV_TILINGS = [(16, 64, 1), (32, 128, 1), (16, 128, 1), (32, 256, 1), (32, 64, 1), (32, 32, 1), (16, 64, 2),
                (16, 128, 4), (32, 128, 4)]
# (BLOCK_D, CHUNK, SEGMENT, num_warps). The rule's one-row tilings split time into segments that a first
# launch summarises, computing every decay of all but the last segment twice; fewer channels a warp make
# programs without segments (static sm_90 census, benchmarks/RESULTS.md, twenty-fifth session: 1.25 MUFU
# an update at every tiling without segments against 2.29 for the rule's two passes at 2.8b), at the cost
# of summing over states across lanes.
NO_SEGMENTS = 1 << 30
SCAN_TILINGS = [(32, 8, 160, 1), (32, 8, 256, 1), (16, 8, 256, 1), (16, 8, 512, 1), (16, 8, 1024, 1), (8, 16, 512, 1),
                (8, 16, 1024, 1), (8, 16, NO_SEGMENTS, 1), (4, 16, 1024, 1), (4, 16, NO_SEGMENTS, 1),
                (4, 32, NO_SEGMENTS, 1), (4, 8, NO_SEGMENTS, 1), (2, 16, NO_SEGMENTS, 1), (8, 16, NO_SEGMENTS, 2),
                (16, 8, 1024, 2), (16, 8, 512, 2)]
SCANS = [("2.8b", 1, 2048, 5120), ("1.4b", 1, 2048, 4096), ("130m", 1, 2048, 1536), ("2.8b L512", 1, 512, 5120),
         ("2.8b L8192", 1, 8192, 5120), ("2.8b B4", 4, 2048, 5120)]  # batch, seq, channels; 16 states
# (BLOCK_D, ROWS, num_warps); several batch rows a program, loaded as one tile, where there are several
STATE_UPDATE_TILINGS = [(16, 1, 1), (32, 1, 1), (32, 1, 2), (64, 1, 2), (64, 1, 4), (128, 1, 4)]
ROWS_TILINGS = [(16, 16, 4), (16, 16, 2), (16, 16, 8), (32, 16, 4), (32, 16, 8), (16, 8, 2), (16, 8, 4), (32, 8, 4),
                (16, 4, 1), (16, 4, 2), (32, 4, 2), (64, 4, 4), (16, 2, 1), (32, 2, 2)]
HADAMARD_TILINGS = [(1, 1, 4), (1, 1, 2), (1, 1, 8), (2, 1, 4), (4, 1, 4), (1, 2, 4), (1, 4, 4), (2, 2, 4),
                    (1, 16, 8)]  # (ROWS, BLOCK_T, num_warps)
# (name, batch rows, dt_proj fused) at the 2.8b config: d_inner 5120, d_state 16, dt_rank 160
STATE_UPDATES = [("2.8b B1 + dt_proj", 1, True), ("2.8b B1", 1, False), ("2.8b B16 + dt_proj", 16, True),
                 ("2.8b B16", 16, False), ("2.8b B64", 64, False)]
D_INNER, D_STATE, DT_RANK = 5120, 16, 160


def sweep_conv(g: torch.Generator) -> list[dict]:
    rows = []
    for name, b, l, d in CONVS:
        x, w, dequant, bias, inv = conv_inputs(b, l, d, g)
        expected = int8_causal_conv1d_ref(x, w, dequant, bias, inv, True)[0]
        shipped = prefill_tiling(b, l, d, x.device)
        for block_l, block_d, warps in CONV_TILINGS:  # (BLOCK_L, BLOCK_D, num_warps)
            tiling = dict(BLOCK_L=block_l, BLOCK_D=block_d, num_warps=warps)

            def conv():
                return int8_causal_conv1d(x, w, dequant, bias, inv, True, tiling=tiling)

            ok = torch.equal(conv()[0], expected)
            rows.append({"kernel": f"int8_causal_conv1d {name}", "tiling": tiling, "shipped": tiling == shipped,
                         "check": ok, "ms": do_bench_cudagraph(conv, rep=100, return_mode="median") if ok else None})
            _print(rows[-1])
    return rows


def sweep_scan(g: torch.Generator) -> list[dict]:
    rows = []
    for name, b, l, d in SCANS:
        args, scales = scan_inputs(b, l, d, 16, g)
        # the float variant's inputs: the codes' values, code * scale in float32
        as_float = [t.float() * s for t, s in zip((args[0], args[1], args[3], args[4], args[6]), scales.unbind())]
        float_args = (as_float[0], as_float[1], args[2], as_float[2], as_float[3], args[5], as_float[4], *args[7:])
        shipped = scan_tiling(b, l, d, 16, args[0].device)
        candidates = [shipped] + [dict(BLOCK_D=bd, BLOCK_N=16, CHUNK=chunk, SEGMENT=segment, num_warps=warps)
                                  for bd, chunk, segment, warps in SCAN_TILINGS]
        fits = b * l * d <= 2048 * 5120  # the reference's float32 (B, D, N) steps, one Python step a time
        expected = (selective_scan_int8_ref(*args, scales=scales) if fits else selective_scan(*args, scales=scales))[0]
        scale = expected.float().abs().max().item()
        for tiling in [c for i, c in enumerate(candidates) if c not in candidates[:i]]:
            def scan():
                return selective_scan(*args, scales=scales, tiling=tiling)

            out, state = scan()
            float_out, float_state = selective_scan(*float_args, tiling=tiling)
            err = (out.float() - expected.float()).abs().max().item() / scale
            ok = err <= 2e-3 and torch.equal(out, float_out) and torch.equal(state, float_state)
            shown = tiling | {"SEGMENT": "none"} if tiling["SEGMENT"] >= l else tiling
            rows.append({"kernel": f"selective_scan {name}", "tiling": shown, "shipped": tiling == shipped,
                         "check": ok, "max_rel_err": err,
                         "ms": do_bench_cudagraph(scan, rep=50, return_mode="median") if ok else None})
            _print(rows[-1])
    return rows


def sweep_state_update(g: torch.Generator) -> list[dict]:
    rows = []
    for name, b, fused in STATE_UPDATES:
        i = state_update_inputs(b, D_INNER, DT_RANK, g)
        shipped = state_update_tiling(b, torch.device("cuda"))
        # fused: dt_proj's input and the projection; else the delta codes dt_proj would give
        delta, dt_proj = (i["low"], i["dt"]) if fused else (dt_proj_codes(i), None)

        def step(tiling):
            return state_update(i, delta, dt_proj=dt_proj, tiling=tiling)

        out0, state0 = step(shipped)
        if fused:  # what the fused kernel replaces: dt_proj's GEMM, then the state update as shipped
            ok = all(torch.equal(x, y) for x, y in zip(dt_proj_then_state_update(i), (out0, state0)))
            rows.append({"kernel": f"selective_state_update {name}", "tiling": "int8_linear, then unfused",
                         "shipped": False, "check": ok,
                         "ms": time_from_cold_l2(lambda: dt_proj_then_state_update(i)) if ok else None})
            _print(rows[-1])
        candidates = STATE_UPDATE_TILINGS + (ROWS_TILINGS if b > 1 else [])
        for block_d, row_count, warps in candidates:
            tiling = dict(BLOCK_D=block_d, ROWS=row_count, num_warps=warps)
            out, state = step(tiling)
            close = (out.float() - out0.float()).abs().max().item() <= 1e-3 * out0.float().abs().max().item()
            ok = torch.equal(state, state0) and close
            rows.append({"kernel": f"selective_state_update {name}", "tiling": tiling, "shipped": tiling == shipped,
                         "check": ok, "out_bit_equal": torch.equal(out, out0),
                         "ms": time_from_cold_l2(lambda: step(tiling)) if ok else None})
            _print(rows[-1])
    return rows


def sweep_hadamard(g: torch.Generator) -> list[dict]:
    rows = []
    for name, m, d in DECODE_HADAMARDS:
        y, h, inv = hadamard_inputs(m, d, g)
        expected = hadamard_quant_ref(y, h, inv)
        shipped = _hadamard_tiling(m, d, y.device)[2]
        for row_count, block_t, warps in HADAMARD_TILINGS:
            tiling = dict(ROWS=row_count, BLOCK_T=block_t, num_warps=warps)
            ok = torch.equal(hadamard_quant(y, h, inv, tiling=tiling), expected)
            rows.append({"kernel": f"hadamard_quant {name}", "tiling": tiling, "shipped": tiling == shipped,
                         "check": ok,
                         "ms": time_from_cold_l2(lambda: hadamard_quant(y, h, inv, tiling=tiling)) if ok else None})
            _print(rows[-1])
    return rows


def _print(row: dict) -> None:
    time = f"{row['ms'] * 1e3:8.1f} us" if row["ms"] is not None else "  not timed"
    extra = f" out bit-equal {row['out_bit_equal']}" if "out_bit_equal" in row else ""
    extra += f" max rel err {row['max_rel_err']:.1e}" if "max_rel_err" in row else ""
    print(f"{row['kernel']:42s} {str(row['tiling']):50s} {'shipped' if row['shipped'] else '':8s}"
          f" check {row['check']}{extra} {time}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="conv,scan,state_update,hadamard",
                        help="comma-separated: conv, scan, state_update, hadamard")
    parser.add_argument("--json", help="also write every row here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("sweep_tilings.py times GPU kernels: it needs a CUDA device")
    print(f"device: {torch.cuda.get_device_name()}")
    g = torch.Generator(device="cuda").manual_seed(0)
    sweeps = {"conv": sweep_conv, "scan": sweep_scan, "state_update": sweep_state_update, "hadamard": sweep_hadamard}
    unknown = set(args.only.split(",")) - set(sweeps)
    if unknown:
        raise SystemExit(f"--only: unknown {sorted(unknown)}; choose from {sorted(sweeps)}")
    rows = []
    with independent_launches():
        for name in args.only.split(","):
            rows += sweeps[name](g)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
