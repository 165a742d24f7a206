"""Times each Triton kernel against what users run today on the same GPU, in the same run: cuBLAS fp16 for
the GEMMs, causal-conv1d's ``causal_conv1d_fn`` for conv1d + SiLU and mamba-ssm's ``selective_scan_fn``
for the scan (both fp16, built for the GPU, e.g. with ``build-mamba-ssm-sm90.sh``).

Each row first checks the kernel: integer outputs bit-exact against the reference, the scan within float
tolerance of the reference and of mamba-ssm's scan on the same (dequantised) values. A row whose check
fails, or whose baseline is not installed, prints no ratio. Times are medians of
``triton.testing.do_bench_cudagraph``: each function replayed in a CUDA graph, so the host's launch cost
does not count for either side (timed with CUDA events around launches from Python, a host slower than a
small kernel showed instead: on a slow host the 130m conv read 55 us that way, 9 us in a graph in the
lease before);
achieved TOP/s and GB/s are computed from them.

Decode rows (one token a batch row) last microseconds, less than a launch from the host, so they are timed
as a CUDA decode step runs them: in a CUDA graph, each call after a write of twice the L2 whose time is
taken off (``tiles.time_from_cold_l2``, the int8 GEMM autotuner's timer), since in a model each layer's
weights come from memory, not from L2; the baselines are timed the same way. That write leaves the L2 full
of dirty lines, which the timed call's reads must write back: on an H200 a 2.8b decode GEMV timed this way
took 15 to 25 % longer than after a read-only flush (twenty-third session; no tile choice changed), so these
rows overstate each kernel's time inside a step by about as much (the baselines, timed the same way, pay the
same write-backs). The fused decode kernels are timed against the two kernels each replaces, run one after
the other. Every row is timed without programmatic dependent launch (``kernels/dependent_launch.py``): what
it saves between a model's kernels, ``bench_decode.py --rewrites`` shows.

    python benchmarks/bench_kernels.py [--only gemm,conv,scan,hadamard,decode] [--json out.json]
"""

import argparse
import json

import torch
import torch.nn.functional as F
from triton.testing import do_bench_cudagraph

from mamba_qpass.kernels.dependent_launch import independent_launches
from mamba_qpass.kernels.hadamard_quant.reference import hadamard_quant_ref
from mamba_qpass.kernels.hadamard_quant.triton import hadamard_quant
from mamba_qpass.kernels.int8_causal_conv1d.reference import int8_causal_conv1d_ref
from mamba_qpass.kernels.int8_causal_conv1d.triton import int8_causal_conv1d
from mamba_qpass.kernels.int8_linear.reference import int8_linear_ref
from mamba_qpass.kernels.int8_linear.tiles import time_from_cold_l2
from mamba_qpass.kernels.int8_conv_state_update.triton import int8_conv_state_update
from mamba_qpass.kernels.int8_linear.triton import int8_linear
from mamba_qpass.kernels.int8_linear_conv_step.reference import int8_linear_conv_step_ref
from mamba_qpass.kernels.int8_linear_conv_step.triton import int8_linear_conv_step
from mamba_qpass.kernels.selective_scan.reference import ScanInputScales, selective_scan_int8_ref
from mamba_qpass.kernels.selective_scan.triton import selective_scan
from mamba_qpass.kernels.selective_state_update.triton import DtProjection, selective_state_update
from mamba_qpass.numerics import hadamard_matrix

# (name, M = batch * seq, K, N): the projections of mamba-130m, -1.4b and -2.8b at prefill, 2048 tokens
GEMMS = [
    ("130m in_proj", 2048, 768, 3072), ("130m out_proj", 2048, 1536, 768), ("130m x_proj", 2048, 1536, 80),
    ("1.4b in_proj", 2048, 2048, 8192), ("1.4b out_proj", 2048, 4096, 2048),
    ("2.8b in_proj", 2048, 2560, 10240), ("2.8b out_proj", 2048, 5120, 2560), ("2.8b x_proj", 2048, 5120, 192),
    ("2.8b dt_proj", 2048, 160, 5120), ("2.8b in_proj B16", 32768, 2560, 10240),
]
CONVS = [("130m", 1, 2048, 1536), ("2.8b", 1, 2048, 5120), ("2.8b B16", 16, 2048, 5120)]  # batch, seq, channels
SCANS = [  # batch, seq, channels, state
    ("130m B16", 16, 2048, 1536, 16), ("2.8b L512", 1, 512, 5120, 16), ("2.8b", 1, 2048, 5120, 16),
    ("2.8b L8192", 1, 8192, 5120, 16), ("2.8b B16", 16, 2048, 5120, 16),
]
HADAMARDS = [("130m", 2048, 1536), ("1.4b", 2048, 4096), ("2.8b", 2048, 5120)]  # tokens, inner size
# decode: (name, batch rows, K, N), and the fused steps' (name, batch, d_model, d_inner, dt_rank)
DECODE_GEMMS = [
    ("2.8b in_proj B1", 1, 2560, 10240), ("2.8b x_proj B1", 1, 5120, 192), ("2.8b dt_proj B1", 1, 160, 5120),
    ("2.8b out_proj B1", 1, 5120, 2560), ("2.8b in_proj B16", 16, 2560, 10240), ("2.8b out_proj B16", 16, 5120, 2560),
    ("2.8b in_proj B64", 64, 2560, 10240), ("130m in_proj B1", 1, 768, 3072),
]
DECODE_HADAMARDS = [("2.8b B1", 1, 5120), ("2.8b B16", 16, 5120), ("2.8b B64", 64, 5120), ("130m B1", 1, 1536)]
DECODE_STEPS = [("2.8b B1", 1, 2560, 5120, 160), ("2.8b B16", 16, 2560, 5120, 160), ("130m B1", 1, 768, 1536, 48)]


def _time(fn) -> float:
    return do_bench_cudagraph(fn, rep=100, return_mode="median")


def _codes(*shape, g):
    return torch.randint(-128, 128, shape, dtype=torch.int8, device="cuda", generator=g)


def bench_gemm(name, m, k, n, g, timer=_time):
    a, w = _codes(m, k, g=g), _codes(n, k, g=g)
    dequant = torch.rand(n, dtype=torch.float64, device="cuda", generator=g) * 1e-5
    inv = torch.full((n,), 30.0, dtype=torch.float64, device="cuda")
    ok = torch.equal(int8_linear(a, w, dequant, None, inv), int8_linear_ref(a, w, dequant, None, inv))
    a16 = torch.randn(m, k, device="cuda", dtype=torch.float16, generator=g)
    w16 = torch.randn(n, k, device="cuda", dtype=torch.float16, generator=g)
    ours = timer(lambda: int8_linear(a, w, dequant, None, inv))
    base = timer(lambda: F.linear(a16, w16))
    rate = f"{2 * m * k * n / ours / 1e9:.0f} TOP/s" if m > 64 else f"{n * k / ours / 1e6:.0f} GB/s of weights"
    return {"kernel": f"int8_linear {name}", "shape": [m, k, n], "check": ok, "ours_ms": ours, "baseline_ms": base,
            "baseline": "cuBLAS fp16 F.linear", "rate": rate}


def bench_decode_step(name, b, d_model, d_inner, dt_rank, g):
    """The two fused decode kernels against the pairs they replace: in_proj + the conv's step, and dt_proj +
    the state update (int8 codes throughout; outputs compared exactly)."""
    n = 2 * d_inner
    a, w = _codes(b, 1, d_model, g=g), _codes(n, d_model, g=g)
    dequant = torch.rand(n, dtype=torch.float64, device="cuda", generator=g) * 4e-3 / d_model**0.5
    inv = torch.full((n,), 30.0, dtype=torch.float64, device="cuda")
    conv_w, state = _codes(d_inner, 4, g=g), _codes(b, 3, d_inner, g=g)
    conv_dq = torch.rand(d_inner, dtype=torch.float64, device="cuda", generator=g) * 1e-4
    conv_bias = torch.randn(d_inner, dtype=torch.float64, device="cuda", generator=g)
    conv_inv = torch.tensor(30.0, dtype=torch.float64, device="cuda")
    conv_args = (conv_w, conv_dq, conv_bias, conv_inv, True, state)

    def pair():
        codes = int8_linear(a, w, dequant, None, inv)
        return (codes, *int8_conv_state_update(codes[..., :d_inner], *conv_args))

    fused = int8_linear_conv_step(a, w, dequant, inv, *conv_args)
    ok = all(torch.equal(x, y) for x, y in zip(fused, int8_linear_conv_step_ref(a, w, dequant, inv, *conv_args)))
    ok = ok and all(torch.equal(x, y) for x, y in zip(fused, pair()))
    rows = [{"kernel": f"in_proj + conv step {name}", "shape": [b, d_model, n], "check": ok,
             "ours_ms": time_from_cold_l2(lambda: int8_linear_conv_step(a, w, dequant, inv, *conv_args)),
             "baseline_ms": time_from_cold_l2(pair), "baseline": "int8_linear, then int8_conv_state_update",
             "rate": f"{n * d_model / 1e6:.1f} MB of weights"}]

    i = state_update_inputs(b, d_inner, dt_rank, g)
    fused = state_update(i, i["low"], dt_proj=i["dt"])
    ok = all(torch.equal(x, y) for x, y in zip(fused, dt_proj_then_state_update(i)))
    rows.append({"kernel": f"state update + dt_proj {name}", "shape": [b, d_inner, dt_rank], "check": ok,
                 "ours_ms": time_from_cold_l2(lambda: state_update(i, i["low"], dt_proj=i["dt"])),
                 "baseline_ms": time_from_cold_l2(lambda: dt_proj_then_state_update(i)),
                 "baseline": "int8_linear (dt_proj), then selective_state_update",
                 "rate": f"{b * d_inner * 16 * 8 / 1e6:.1f} MB of state"})
    return rows


def state_update_inputs(b, d_inner, dt_rank, g) -> dict:
    """Random int8 inputs of a decode state update of ``b`` rows, with dt_proj's low-rank codes and its
    projection (d_state 16)."""
    u, z, low = _codes(b, 1, d_inner, g=g), _codes(b, 1, d_inner, g=g), _codes(b, 1, dt_rank, g=g)
    B, C = _codes(b, 1, 16, g=g), _codes(b, 1, 16, g=g)
    A = -torch.rand(d_inner, 16, device="cuda", generator=g) - 0.5
    D, bias = torch.randn(d_inner, device="cuda", generator=g), torch.randn(d_inner, device="cuda", generator=g) - 3
    ssm_state = torch.randn(b, d_inner, 16, device="cuda", generator=g)
    dt = DtProjection(_codes(d_inner, dt_rank, g=g), torch.rand(d_inner, dtype=torch.float64, device="cuda", generator=g) * 1e-3,
                      torch.full((d_inner,), 30.0, dtype=torch.float64, device="cuda"))
    return dict(u=u, z=z, low=low, B=B, C=C, A=A, D=D, bias=bias, state=ssm_state, dt=dt,
                scales=ScanInputScales(0.02, 0.01, 0.02, 0.02, 0.03).as_tensor("cuda"))


def state_update(i: dict, delta: torch.Tensor, **kwargs):
    """``selective_state_update`` on ``state_update_inputs`` with the given delta codes (dt_proj's input
    when ``dt_proj`` is passed), float16 out."""
    return selective_state_update(i["u"], delta, i["A"], i["B"], i["C"], i["D"], i["z"], i["bias"], True, torch.float16,
                                  i["state"], scales=i["scales"], **kwargs)


def dt_proj_codes(i: dict) -> torch.Tensor:
    """The delta codes of dt_proj's GEMM on ``state_update_inputs``' low-rank codes."""
    dt = i["dt"]
    return int8_linear(i["low"], dt.weight, dt.dequant_scale, None, dt.out_inv_scale)


def dt_proj_then_state_update(i: dict):
    """What the fused state update replaces: dt_proj's GEMM, then the unfused update."""
    return state_update(i, dt_proj_codes(i))


def conv_inputs(b, l, d, g) -> tuple:
    """Random (x, weight, dequant_scale, bias, out_inv_scale) of an int8 conv of width 4."""
    x, w = _codes(b, l, d, g=g), _codes(d, 4, g=g)
    dequant = torch.rand(d, dtype=torch.float64, device="cuda", generator=g) * 1e-4
    bias = torch.randn(d, dtype=torch.float64, device="cuda", generator=g)
    return x, w, dequant, bias, torch.tensor(40.0, dtype=torch.float64, device="cuda")


def bench_conv(name, b, l, d, g, causal_conv1d_fn):
    x, w, dequant, bias, inv = conv_inputs(b, l, d, g)
    ok = torch.equal(int8_causal_conv1d(x, w, dequant, bias, inv, True)[0], int8_causal_conv1d_ref(x, w, dequant, bias, inv, True)[0])
    ours = _time(lambda: int8_causal_conv1d(x, w, dequant, bias, inv, True))
    row = {"kernel": f"int8_causal_conv1d {name}", "shape": [b, l, d], "check": ok, "ours_ms": ours,
           "baseline": "causal_conv1d_fn fp16 + SiLU", "rate": f"{2 * x.numel() / ours / 1e6:.0f} GB/s"}
    if causal_conv1d_fn is not None:
        x16 = torch.randn(b, d, l, device="cuda", dtype=torch.float16, generator=g)
        w16 = torch.randn(d, 4, device="cuda", dtype=torch.float16, generator=g)
        b16 = torch.randn(d, device="cuda", dtype=torch.float16, generator=g)
        row["baseline_ms"] = _time(lambda: causal_conv1d_fn(x16, w16, b16, activation="silu"))
    return row


def scan_inputs(b, l, d, n, g) -> tuple:
    """``(args, scales)`` of an int8 scan with float16 output: random codes, A in [-1.5, -0.5)."""
    u, dt, z, B, C = _codes(b, l, d, g=g), _codes(b, l, d, g=g), _codes(b, l, d, g=g), _codes(b, l, n, g=g), _codes(b, l, n, g=g)
    A = -torch.rand(d, n, device="cuda", generator=g) - 0.5
    D, bias = torch.randn(d, device="cuda", generator=g), torch.randn(d, device="cuda", generator=g) - 3
    scales = ScanInputScales(0.02, 0.01, 0.02, 0.02, 0.03).as_tensor("cuda")
    return (u, dt, A, B, C, D, z, bias, True, torch.float16), scales


def bench_scan(name, b, l, d, n, g, selective_scan_fn):
    args, scales = scan_inputs(b, l, d, n, g)
    u, dt, A, B, C, D, z, bias = args[:8]
    out, _ = selective_scan(*args, scales=scales)
    ref = selective_scan_int8_ref(*args, scales=scales)[0] if b * l * d <= 2048 * 5120 else None
    err = None if ref is None else ((out.float() - ref.float()).abs().max() / ref.float().abs().max()).item()
    row = {"kernel": f"int8_selective_scan {name}", "shape": [b, l, d, n], "max_rel_err_vs_ref": err,
           "baseline": "mamba-ssm selective_scan_fn fp16 (z, D, dt bias, softplus)",
           "ours_ms": _time(lambda: selective_scan(*args, scales=scales))}
    ok = err is None or err < 2e-3
    if selective_scan_fn is not None:
        # mamba-ssm's layout is channel-major: (B, D, L) sequences, (B, N, L) for B and C.
        f16 = [(t.float() * s).half().transpose(1, 2).contiguous() for t, s in zip((u, dt, B, C, z), scales.unbind())]
        theirs = selective_scan_fn(f16[0], f16[1], A, f16[2], f16[3], D, f16[4], bias, delta_softplus=True)
        err_theirs = ((out.float() - theirs.transpose(1, 2).float()).abs().max() / theirs.float().abs().max()).item()
        row["max_rel_err_vs_mamba_ssm"] = err_theirs
        ok = ok and err_theirs < 2e-2  # they read fp16 values, we read the int8 codes' exact float32 values
        row["baseline_ms"] = _time(lambda: selective_scan_fn(f16[0], f16[1], A, f16[2], f16[3], D, f16[4], bias, delta_softplus=True))
    row["check"] = ok
    row["rate"] = f"{b * l * d * n / row['ours_ms'] / 1e6:.0f} G state updates/s"  # per ms, so 1e6 to a G per second
    return row


def hadamard_inputs(m, d, g) -> tuple:
    """Random float16 y (m, d), ``hadamard_matrix(d)`` and an inverse output scale."""
    y = (torch.randn(m, d, device="cuda", generator=g) * 4).half()
    return y, hadamard_matrix(d).cuda(), torch.tensor(127 / 16, dtype=torch.float64, device="cuda")


def bench_hadamard(name, m, d, g, timer=_time):
    y, h, inv = hadamard_inputs(m, d, g)
    ok = torch.equal(hadamard_quant(y, h, inv), hadamard_quant_ref(y, h, inv))
    ours = timer(lambda: hadamard_quant(y, h, inv))
    return {"kernel": f"hadamard_quant {name}", "shape": [m, d], "check": ok, "ours_ms": ours,
            "baseline": "none (mamba-ssm has no rotation)", "rate": f"{3 * m * d / ours / 1e6:.0f} GB/s"}


def _baselines():
    try:
        from causal_conv1d import causal_conv1d_fn
    except ImportError:
        causal_conv1d_fn = None
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except ImportError:
        selective_scan_fn = None
    return causal_conv1d_fn, selective_scan_fn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", default=None, help="also write every row here")
    parser.add_argument("--only", default=None, help="comma-separated groups of rows: gemm, conv, scan, hadamard, decode (default: all)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA device")
    causal_conv1d_fn, selective_scan_fn = _baselines()
    g = torch.Generator(device="cuda").manual_seed(0)
    groups = {
        "gemm": lambda: [bench_gemm(*s, g) for s in GEMMS],
        "conv": lambda: [bench_conv(*s, g, causal_conv1d_fn) for s in CONVS],
        "scan": lambda: [bench_scan(*s, g, selective_scan_fn) for s in SCANS],
        "hadamard": lambda: [bench_hadamard(*s, g) for s in HADAMARDS],
        "decode": lambda: ([bench_gemm(*s, g, timer=time_from_cold_l2) for s in DECODE_GEMMS]
                           + [bench_hadamard(*s, g, timer=time_from_cold_l2) for s in DECODE_HADAMARDS]
                           + [row for s in DECODE_STEPS for row in bench_decode_step(*s, g)]),
    }
    chosen = args.only.split(",") if args.only else list(groups)
    unknown = sorted(set(chosen) - set(groups))
    if unknown:
        raise SystemExit(f"--only: unknown group(s) {', '.join(unknown)}; choose from {', '.join(groups)}")
    # each kernel on its own: launched the usual way, as the baselines are (a decode-sized launch would
    # otherwise start during the timer's L2 flush, kernels/dependent_launch.py)
    with independent_launches():
        rows = [row for name in chosen for row in groups[name]()]
    print(f"device: {torch.cuda.get_device_name()}")
    print(f"{'kernel':<38} {'check':>6} {'ours ms':>9} {'base ms':>9} {'speedup':>8} {'achieved':>22}  baseline")
    for r in rows:
        base = r.get("baseline_ms")
        if not r["check"]:
            speedup = "REFUSED"
        elif base is None:
            speedup = "-"
        else:
            speedup = f"{base / r['ours_ms']:.2f}x"
        base_text = f"{base:>9.4f}" if base is not None else f"{'-':>9}"
        print(f"{r['kernel']:<38} {str(r['check']):>6} {r['ours_ms']:>9.4f} {base_text} {speedup:>8} {r['rate']:>22}  {r['baseline']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
