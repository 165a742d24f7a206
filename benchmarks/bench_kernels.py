"""Times the Triton kernels against the fp16 PyTorch/cuBLAS baseline on the same GPU, in the same run.

Each row first checks the kernel against its reference (bit-exact for integer outputs, tolerance for
float outputs) and refuses to report a ratio when the check fails. Times are medians of
triton.testing.do_bench (CUDA events). Usage (on the GPU machine):

    python benchmarks/bench_kernels.py [--json out.json]
"""

import argparse
import json

import torch
import torch.nn.functional as F
from triton.testing import do_bench

from mamba_qpass.kernels.causal_conv1d.reference import causal_conv1d_ref
from mamba_qpass.kernels.int8_causal_conv1d.reference import int8_causal_conv1d_ref
from mamba_qpass.kernels.int8_causal_conv1d.triton import int8_causal_conv1d
from mamba_qpass.kernels.int8_linear.reference import int8_linear_ref
from mamba_qpass.kernels.int8_linear.triton import int8_linear
from mamba_qpass.kernels.selective_scan.reference import ScanInputScales, selective_scan_int8_ref
from mamba_qpass.kernels.selective_scan.triton import selective_scan

# (name, M = batch * seq, K, N): in_proj and out_proj of mamba-130m and mamba-2.8b at prefill
GEMMS = [
    ("130m in_proj", 2048, 768, 3072),
    ("130m out_proj", 2048, 1536, 768),
    ("2.8b in_proj", 2048, 2560, 10240),
    ("2.8b out_proj", 2048, 5120, 2560),
    ("2.8b in_proj M=4096", 4096, 2560, 10240),
]
# (name, batch, seq, channels)
CONVS = [("130m", 1, 2048, 1536), ("2.8b", 1, 2048, 5120), ("2.8b B8", 8, 2048, 5120)]
SCANS = [("130m B16", 16, 2048, 1536, 16), ("2.8b B1", 1, 2048, 5120, 16)]


def _time(fn) -> float:
    return do_bench(fn, warmup=25, rep=100, return_mode="median")


def bench_gemm(name, m, k, n, g):
    a = torch.randint(-128, 128, (m, k), dtype=torch.int8, device="cuda", generator=g)
    w = torch.randint(-128, 128, (n, k), dtype=torch.int8, device="cuda", generator=g)
    dequant = torch.rand(n, dtype=torch.float64, device="cuda", generator=g) * 1e-5
    inv = torch.full((n,), 30.0, dtype=torch.float64, device="cuda")
    out = int8_linear(a, w, dequant, None, inv)
    ok = torch.equal(out, int8_linear_ref(a, w, dequant, None, inv))
    a16, w16 = torch.randn(m, k, device="cuda", dtype=torch.float16), torch.randn(n, k, device="cuda", dtype=torch.float16)
    ours = _time(lambda: int8_linear(a, w, dequant, None, inv))
    base = _time(lambda: F.linear(a16, w16))
    return {"kernel": f"int8_linear {name}", "shape": [m, k, n], "check": ok, "ours_ms": ours, "baseline_ms": base,
            "baseline": "cuBLAS fp16 F.linear", "tops": 2 * m * k * n / ours / 1e9}


def bench_conv(name, b, l, d, g):
    x = torch.randint(-128, 128, (b, l, d), dtype=torch.int8, device="cuda", generator=g)
    w = torch.randint(-128, 128, (d, 4), dtype=torch.int8, device="cuda", generator=g)
    dequant = torch.rand(d, dtype=torch.float64, device="cuda", generator=g) * 1e-4
    bias = torch.randn(d, dtype=torch.float64, device="cuda", generator=g)
    inv = torch.tensor(40.0, dtype=torch.float64, device="cuda")
    out = int8_causal_conv1d(x, w, dequant, bias, inv, True)
    ok = torch.equal(out, int8_causal_conv1d_ref(x, w, dequant, bias, inv, True))
    x16, w16, b16 = torch.randn(b, l, d, device="cuda", dtype=torch.float16), torch.randn(d, 4, device="cuda", dtype=torch.float16), torch.randn(d, device="cuda", dtype=torch.float16)
    ours = _time(lambda: int8_causal_conv1d(x, w, dequant, bias, inv, True))
    base = _time(lambda: causal_conv1d_ref(x16, w16, b16, True))
    return {"kernel": f"int8_causal_conv1d {name}", "shape": [b, l, d], "check": ok, "ours_ms": ours, "baseline_ms": base,
            "baseline": "PyTorch fp16 depthwise F.conv1d + SiLU (transformers' fallback)"}


def bench_scan(name, b, l, d, n, g):
    def codes(*shape):
        return torch.randint(-128, 128, shape, dtype=torch.int8, device="cuda", generator=g)

    u, dt, z, B, C = codes(b, l, d), codes(b, l, d), codes(b, l, d), codes(b, l, n), codes(b, l, n)
    A = -torch.rand(d, n, device="cuda", generator=g) - 0.5
    D, bias = torch.randn(d, device="cuda", generator=g), torch.randn(d, device="cuda", generator=g) - 3
    scales = ScanInputScales(0.02, 0.01, 0.02, 0.02, 0.03).as_tensor("cuda")
    args = (u, dt, A, B, C, D, z, bias, True, torch.float16)
    out, _ = selective_scan(*args, scales=scales)
    ref, _ = selective_scan_int8_ref(*args, scales=scales)
    err = ((out.float() - ref.float()).abs().max() / ref.float().abs().max()).item()
    ok = err < 2e-3
    f16 = [t.to(torch.float16) * 0.02 for t in (u, dt, B, C, z)]
    ours = _time(lambda: selective_scan(*args, scales=scales))
    base = _time(lambda: selective_scan(f16[0], f16[1], A, f16[2], f16[3], D, f16[4], bias, True, torch.float16))
    return {"kernel": f"int8_selective_scan {name}", "shape": [b, l, d, n], "check": ok, "max_rel_err": err,
            "ours_ms": ours, "baseline_ms": base, "baseline": "our Triton scan on fp16 inputs (mamba-ssm not installed)"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA device")
    g = torch.Generator(device="cuda").manual_seed(0)
    rows = [bench_gemm(*s, g) for s in GEMMS] + [bench_conv(*s, g) for s in CONVS] + [bench_scan(*s, g) for s in SCANS]
    print(f"device: {torch.cuda.get_device_name()}")
    print(f"{'kernel':<34} {'check':>6} {'ours ms':>9} {'base ms':>9} {'speedup':>8}  baseline")
    for r in rows:
        speedup = f"{r['baseline_ms'] / r['ours_ms']:.2f}x" if r["check"] else "REFUSED"
        print(f"{r['kernel']:<34} {str(r['check']):>6} {r['ours_ms']:>9.4f} {r['baseline_ms']:>9.4f} {speedup:>8}  {r['baseline']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
