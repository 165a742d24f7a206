"""Without a GPU, compile every kernel in its GPU launch configuration for sm_90 (H100) with the ptxas
bundled in the triton wheel. This catches what the interpreter cannot see: ops, dtypes or tile shapes
the compiled path rejects (int8 and float64 ``tl.dot``, float64 exp). It also checks that
``EXACT_FP_LAUNCH`` leaves no fused multiply-add in the float64 epilogues (the ones with SiLU keep the
FMAs inside libdevice's exp, the same exp PyTorch uses on CUDA).

The test session's kernels are interpreted, so the compilation runs in a subprocess without
TRITON_INTERPRET. On a CUDA machine the kernel tests run compiled anyway and this is skipped.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

COMPILE_HELPERS = r"""
import inspect, json, os, re, subprocess, tempfile
import torch, triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from mamba_qpass.kernels.quant_math import EXACT_FP_LAUNCH
from mamba_qpass.kernels.fast_math import fast_math
from mamba_qpass.kernels.int8_linear import tiles, triton as linear
from mamba_qpass.kernels.int8_causal_conv1d import triton as int8_conv
from mamba_qpass.kernels.causal_conv1d import triton as float_conv
from mamba_qpass.kernels import conv_window
from mamba_qpass.kernels.rms_norm_quant import triton as rms
from mamba_qpass.kernels.hadamard_quant import triton as hadamard
from mamba_qpass.kernels.quantize import triton as quantize
from mamba_qpass.kernels.selective_scan import triton as scan
from mamba_qpass.kernels.selective_state_update import triton as scan_step
from mamba_qpass.kernels.int8_conv_state_update import triton as conv_step
from mamba_qpass.kernels.int8_linear_conv_step import triton as linear_conv_step

CUDA = torch.device("cuda")  # only a descriptor: picks the GPU branch of the launch-config helpers
USE_GDC = False  # the kernels' dependent-launch flag, set for the decode launches compiled last
ROWS_TILE = dict(BLOCK_D=16, ROWS=16, num_warps=8)


# For each float32 reduction, the reduced axis's [elements a thread, lanes, warps] in its operand's layout:
# what fixes the order in which the reduction adds.
def f32_reduction_layouts(ttgir):
    layouts = dict(re.findall(r"^(#\w+) = #ttg\.blocked<\{(.*)\}>", ttgir, re.M))
    reductions = re.findall(r'"tt\.reduce"\(%\w+\) <\{axis = (\d+) : i32\}>(?:(?!"tt\.reduce").)*?\}\) : '
                            r'\(tensor<[0-9x]*x(\w+), (#\w+)>', ttgir, re.S)
    found = []
    for axis, dtype, operand in reductions:
        if dtype == "f32":
            fields = dict(re.findall(r"(\w+) = \[([0-9, ]*)\]", layouts[operand]))
            found.append([int(fields[k].split(",")[int(axis)]) for k in ("sizePerThread", "threadsPerWarp", "warpsPerCTA")])
    return found


# The stack frame a thread of the kernel needs: above zero, ptxas spilled registers.
def stack_bytes(cubin):
    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        usage = subprocess.run([cuobjdump, "-res-usage", f.name], capture_output=True, text=True, check=True).stdout
    return int(re.search(r"STACK:(\d+)", usage).group(1))


def compile_sm90(kernel, pointer_types, constexprs, options, sizes_of_16=False):
    constexprs = constexprs | dict(USE_GDC=USE_GDC)
    names = list(inspect.signature(kernel.fn).parameters)
    signature = {
        n: "constexpr" if n in constexprs else pointer_types.get(n, "*fp64") if n.endswith("_ptr") else "i32"
        for n in names
    }
    # Pointers 16-byte aligned, as the JIT specialises them for the tensors the launches pass; with sizes_of_16
    # every int too, as for the 2.8b config's sizes and strides (register use depends on it: without it a
    # 16-row tile loads its bytes one at a time)
    specialised = {(names.index(n),): [["tt.divisibility", 16]] for n, t in signature.items()
                   if t.startswith("*") or sizes_of_16 and t == "i32"}
    src = ASTSource(fn=kernel, signature=signature, constexprs={(names.index(k),): v for k, v in constexprs.items()},
                    attrs=specialised)
    asm = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=options).asm
    ptx = asm["ptx"]
    return {
        "f32_reductions": f32_reduction_layouts(asm["ttgir"]),
        "fma_f64": ptx.count("fma.rn.f64"),
        "mul_f64": ptx.count("mul.rn.f64"),
        # float32 FMAs of registers only: the softplus series' explicit FMAs take immediate coefficients
        "fma_f32": sum("0f" not in fma for fma in re.findall(r"fma\.rn\.f32[^\n]*", ptx)),
        "mma_s8": len(re.findall(r"mma[^\n]*s8", ptx)),
        "wgmma_s8": len(re.findall(r"wgmma[^\n]*s8", ptx)),
        "lg2_approx": ptx.count("lg2.approx"),
        "rcp_approx": ptx.count("rcp.approx"),
        "gdc_wait": ptx.count("griddepcontrol.wait"),
        "gdc_launch": ptx.count("griddepcontrol.launch_dependents"),
        "stack": stack_bytes(asm["cubin"]),
    }


def gpu_config(block_m, block_n, block_k, split_k, swap_ab=False):
    return next(
        c for c in tiles.GPU_CONFIGS
        if (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"], c.kwargs["SPLIT_K"], c.kwargs["SWAP_AB"])
        == (block_m, block_n, block_k, split_k, swap_ab)
    )


def gemm(block_m, block_n, block_k, quantize_out, even_k, split_k=1, swap_ab=False):
    return linear_tile(gpu_config(block_m, block_n, block_k, split_k, swap_ab), quantize_out, even_k)


def linear_tile(config, quantize_out, even_k, k=2560, sizes_of_16=False):
    out = "*i8" if quantize_out else "*fp32"
    return compile_sm90(
        linear._int8_linear_kernel, {"a_ptr": "*i8", "w_ptr": "*i8", "out_ptr": out, "ws_ptr": "*i32", "count_ptr": "*i32"},
        dict(HAS_BIAS=True, QUANTIZE_OUT=quantize_out, HAS_RESIDUAL=not quantize_out, EVEN_K=even_k,
             K_STEPS=tiles.one_row_k_steps(dict(K=k, **config.kwargs)), **config.kwargs),
        dict(num_warps=config.num_warps, num_stages=config.num_stages) | EXACT_FP_LAUNCH, sizes_of_16,
    )


def int8_causal_conv1d(silu):
    tiling = int8_conv.prefill_tiling(1, 2048, 5120, CUDA)
    options = dict(num_warps=tiling.pop("num_warps"))
    return compile_sm90(
        int8_conv._int8_causal_conv1d_kernel,
        {"x_ptr": "*i8", "w_ptr": "*i8", "state_ptr": "*i8", "out_ptr": "*i8", "final_ptr": "*i8"},
        dict(WIDTH=4, HAS_BIAS=True, SILU=silu, HAS_STATE=True, WRITE_FINAL=True, FIX_NEAR=True, **tiling),
        options | EXACT_FP_LAUNCH,
    )


def rms_norm_quant(hidden):
    tiling = rms._tiling(2048, hidden, CUDA)
    options = dict(num_warps=tiling.pop("num_warps"))
    return compile_sm90(
        rms._rms_norm_quant_kernel, {"x_ptr": "*fp16", "w_ptr": "*fp16", "out_ptr": "*i8"}, tiling,
        options | EXACT_FP_LAUNCH,
    )


def hadamard_quant(order):
    left, right, config = hadamard._hadamard_tiling(2048, order, CUDA)
    blocks = {key: config.pop(key) for key in ("BLOCK_T", "ROWS")} | dict(R=left, C=right, LOG2_C=right.bit_length() - 1)
    counts = compile_sm90(
        hadamard._hadamard_quant_kernel, {"y_ptr": "*fp16", "h_ptr": "*i8", "out_ptr": "*i8"}, blocks,
        config | EXACT_FP_LAUNCH,
    )
    # the row mixing's explicit FMAs: R of them for each value a thread holds
    held = blocks["BLOCK_T"] * blocks["ROWS"] * right // (32 * config["num_warps"])
    return counts | {"mixing_fma_f64": left * held}


def selective_scan(int8_inputs, shape, summary):
    tiling = scan.scan_tiling(*shape, 16, CUDA)
    options = dict(num_warps=tiling.pop("num_warps")) | EXACT_FP_LAUNCH
    del tiling["SEGMENT"]  # a runtime argument
    seq = "*i8" if int8_inputs else "*fp16"
    pointers = {n: seq for n in ("u_ptr", "delta_ptr", "B_ptr", "C_ptr", "z_ptr")}
    pointers.update({n: "*fp32" for n in ("A_ptr", "D_ptr", "delta_bias_ptr", "init_ptr", "scales_ptr", "state_ptr",
                                          "seg_state_ptr", "seg_delta_ptr")})
    pointers["out_ptr"] = "*fp16"
    flags = dict(HAS_D=True, HAS_Z=True, HAS_DELTA_BIAS=True, DELTA_SOFTPLUS=True, HAS_INIT=True, SUMMARY=summary,
                 **fast_math(CUDA))
    return compile_sm90(
        scan._selective_scan_kernel, pointers,
        dict(**flags, INT8_INPUTS=int8_inputs, **tiling), options,
    )


def selective_state_update(int8_inputs, dt_proj=False, tiling=None):
    tiling = dict(tiling or scan_step.state_update_tiling(1, CUDA))
    options = dict(num_warps=tiling.pop("num_warps"))
    seq = "*i8" if int8_inputs else "*fp32"
    pointers = {n: seq for n in ("u_ptr", "delta_ptr", "B_ptr", "C_ptr", "z_ptr")}
    pointers.update({n: "*fp32" for n in ("A_ptr", "D_ptr", "delta_bias_ptr", "state_ptr", "scales_ptr", "state_out_ptr")})
    pointers.update(out_ptr="*fp16", dt_w_ptr="*i8")  # dt_dequant_ptr, dt_inv_ptr: float64 by default
    flags = dict(HAS_D=True, HAS_Z=True, HAS_DELTA_BIAS=True, DELTA_SOFTPLUS=True, INT8_INPUTS=int8_inputs, DT_PROJ=dt_proj,
                 **fast_math(CUDA))
    chunk = scan_step.DT_CHUNK  # the 2.8b config's dt_rank of 160, in whole chunks as the launcher takes it
    dt_blocks = dict(BLOCK_R=triton.cdiv(160, chunk) * chunk, DT_CHUNK=chunk)
    return compile_sm90(
        scan_step._selective_state_update_kernel, pointers, dict(**flags, BLOCK_N=16, **dt_blocks, **tiling),
        options | EXACT_FP_LAUNCH,
    )


def int8_linear_conv_step(block_n, split_k):
    # candidates for the 2.8b config's in_proj
    return linear_conv_step_tile(gpu_config(16, block_n, 256, split_k))


def linear_conv_step_tile(config, sizes_of_16=False):
    pointers = {n: "*i8" for n in ("a_ptr", "w_ptr", "codes_ptr", "conv_w_ptr", "state_ptr", "state_out_ptr", "conv_out_ptr")}
    pointers.update(ws_ptr="*i32", count_ptr="*i32")
    return compile_sm90(
        linear_conv_step._int8_linear_conv_step_kernel, pointers,
        dict(WIDTH=4, CONV_HAS_BIAS=True, SILU=False, EVEN_K=2560 % config.kwargs["BLOCK_K"] == 0,
             K_STEPS=tiles.one_row_k_steps(dict(K=2560, **config.kwargs)), **config.kwargs),
        dict(num_warps=config.num_warps, num_stages=config.num_stages) | EXACT_FP_LAUNCH, sizes_of_16,
    )


def int8_conv_state_update():
    return compile_sm90(
        conv_step._int8_conv_state_update_kernel,
        {n: "*i8" for n in ("x_ptr", "w_ptr", "state_ptr", "out_ptr", "state_out_ptr")},
        dict(WIDTH=4, HAS_BIAS=True, SILU=False, BLOCK_D=1024), dict(EXACT_FP_LAUNCH),
    )


def quantize_rows():
    return compile_sm90(
        quantize._quantize_kernel, {"x_ptr": "*fp16", "out_ptr": "*i8"}, dict(BLOCK_M=4, BLOCK_D=1024),
        dict(EXACT_FP_LAUNCH),
    )


def causal_conv1d():
    block_l, block_d = conv_window.conv_blocks(2048, 5120, CUDA)
    return compile_sm90(
        float_conv._causal_conv1d_kernel, {n: "*bf16" for n in ("x_ptr", "w_ptr", "bias_ptr", "state_ptr", "out_ptr")},
        dict(WIDTH=4, HAS_BIAS=True, SILU=True, HAS_STATE=True, BLOCK_L=block_l, BLOCK_D=block_d), {},
    )
"""

COMPILE_SCRIPT = COMPILE_HELPERS + r"""
results = {
    "int8_linear-codes-128x256": gemm(128, 256, 128, True, True),
    "int8_linear-codes-64x64-k_masked": gemm(64, 64, 128, True, False),
    "int8_linear-f32-128x128": gemm(128, 128, 128, False, True),
    "int8_linear-codes-16x16-split_k4": gemm(16, 16, 256, True, False, split_k=4),
    "int8_linear-codes-1x4-gemv-unrolled": gemm(1, 4, 512, True, False),
    "int8_linear-codes-16x64-swap_ab": gemm(16, 64, 256, True, True, swap_ab=True),
    "int8_linear-f32-16x64-swap_ab-split_k4": gemm(16, 64, 256, False, True, split_k=4, swap_ab=True),
    "int8_linear-f32-1x16-gemv-split_k8": gemm(1, 16, 256, False, True, split_k=8),
    "int8_causal_conv1d-linear": int8_causal_conv1d(False),
    "int8_causal_conv1d-silu": int8_causal_conv1d(True),
    "rms_norm_quant-768": rms_norm_quant(768),
    "rms_norm_quant-2560": rms_norm_quant(2560),
    "hadamard_quant-1536": hadamard_quant(1536),
    "hadamard_quant-5120": hadamard_quant(5120),
    "quantize": quantize_rows(),
    "selective_scan-int8": selective_scan(True, (1, 2048, 5120), False),
    "selective_scan-int8-summary": selective_scan(True, (1, 2048, 5120), True),
    "selective_scan-fp16": selective_scan(False, (1, 2048, 5120), False),
    "selective_scan-int8-rows": selective_scan(True, (16, 2048, 1536), False),
    "selective_scan-int8-short": selective_scan(True, (1, 512, 5120), False),
    "selective_state_update-int8": selective_state_update(True),
    "selective_state_update-fp32": selective_state_update(False),
    "selective_state_update-int8-dt_proj": selective_state_update(True, dt_proj=True),
    # sixteen batch rows a program as one tile, the most the fused dt_proj takes
    "selective_state_update-int8-dt_proj-rows": selective_state_update(True, True, ROWS_TILE),
    "selective_state_update-fp32-rows": selective_state_update(False, False, ROWS_TILE),
    "selective_state_update-int8-batch16": selective_state_update(True, False, scan_step.state_update_tiling(16, CUDA)),
    "selective_state_update-int8-dt_proj-batch16": selective_state_update(
        True, True, scan_step.state_update_tiling(16, CUDA, dt_proj=True)),
    "int8_conv_state_update-linear": int8_conv_state_update(),
    "int8_linear_conv_step-linear": int8_linear_conv_step(128, 1),
    "int8_linear_conv_step-linear-split_k4": int8_linear_conv_step(64, 4),
    "causal_conv1d-bf16": causal_conv1d(),
}
# the kernels of a decode step, and one of each other kind, as launched with programmatic dependent launch
USE_GDC = True
results["dependent"] = {
    "int8_linear-codes-1x4-gemv-unrolled": gemm(1, 4, 512, True, False),
    "int8_linear-f32-1x16-gemv-split_k8": gemm(1, 16, 256, False, True, split_k=8),
    "int8_linear-codes-16x64-swap_ab": gemm(16, 64, 256, True, True, swap_ab=True),
    "int8_linear_conv_step-linear-split_k4": int8_linear_conv_step(64, 4),
    "int8_conv_state_update-linear": int8_conv_state_update(),
    "selective_state_update-int8-dt_proj": selective_state_update(True, dt_proj=True),
    "hadamard_quant-5120": hadamard_quant(5120),
    "rms_norm_quant-2560": rms_norm_quant(2560),
    "quantize": quantize_rows(),
    "selective_scan-int8-short": selective_scan(True, (1, 512, 5120), False),
    "int8_causal_conv1d-silu": int8_causal_conv1d(True),
    "causal_conv1d-bf16": causal_conv1d(),
}
print(json.dumps(results))
"""

# Every tile the autotuner may time at the 2.8b config's decode projections, at one and sixteen batch rows
# (in_proj as the fused in_proj + conv step), compiled as those launches specialise it: the stack a thread
# of each distinct compilation.
DECODE_TILES_SCRIPT = COMPILE_HELPERS + r"""
USE_GDC = True
stacks = {}


def record(name, compiled, config, k):
    kw = config.kwargs
    tile = f"{kw['BLOCK_M']}x{kw['BLOCK_N']}x{kw['BLOCK_K']}-split_k{kw['SPLIT_K']}{'-swap_ab' if kw['SWAP_AB'] else ''}"
    key = (f"{name} {tile} {config.num_warps} warps{'' if k % kw['BLOCK_K'] == 0 else ', K masked'}, "
           f"K steps unrolled {tiles.one_row_k_steps(dict(K=k, **kw))}")
    if key not in stacks:
        stacks[key] = compiled()["stack"]


for rows in (1, 16):
    for name, (n, k) in {"x_proj": (192, 5120), "dt_proj": (5120, 160), "out_proj": (2560, 5120)}.items():
        for config in tiles.fitting_configs(tiles.GPU_CONFIGS, dict(M_BUCKET=rows, N=n, K=k)):
            quantize_out = name == "x_proj"
            even_k = k % config.kwargs["BLOCK_K"] == 0  # as the launch's heuristic sets EVEN_K
            record(name, lambda: linear_tile(config, quantize_out, even_k, k, sizes_of_16=True), config, k)
    for config in tiles.fitting_configs(tiles.GPU_CONFIGS, dict(M_BUCKET=rows, N=10240, K=2560)):
        record("in_proj+conv", lambda: linear_conv_step_tile(config, sizes_of_16=True), config, 2560)
print(json.dumps(stacks))
"""

# Kernels whose float64 arithmetic must contain no fused multiply-add at all.
NO_FMA = (
    "int8_linear-codes-128x256",
    "int8_linear-codes-64x64-k_masked",
    "int8_linear-f32-128x128",
    "int8_linear-codes-16x16-split_k4",
    "int8_linear-codes-1x4-gemv-unrolled",
    "int8_linear-codes-16x64-swap_ab",
    "int8_linear-f32-16x64-swap_ab-split_k4",
    "int8_linear-f32-1x16-gemv-split_k8",
    "int8_causal_conv1d-linear",
    "rms_norm_quant-768",
    "rms_norm_quant-2560",
    "quantize",
    "int8_conv_state_update-linear",
    "selective_state_update-int8-dt_proj",  # dt_proj's float64 epilogue, as int8_linear's
    "selective_state_update-int8-dt_proj-rows",
    "selective_state_update-int8-dt_proj-batch16",
    "int8_linear_conv_step-linear",
    "int8_linear_conv_step-linear-split_k4",
)


def compiled_for_sm90(script: str) -> dict:
    """What ``script`` prints last (JSON), run without TRITON_INTERPRET so that it can compile."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"  # the documented default; silences Triton 3.9's notice
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the kernel tests run compiled")
def test_every_decode_tile_the_autotuner_may_time_fits_its_registers():
    """A tile that spills is slow and slow to compile (the 1 x 16 x 128 GEMV tile at K = 5120: 6.6 KB of
    stack a thread, 28 s of ptxas), and the autotuner compiles every candidate on a machine's first call."""
    stacks = compiled_for_sm90(DECODE_TILES_SCRIPT)
    assert len(stacks) > 40 and any(key.startswith("in_proj+conv") for key in stacks)
    assert any(key.endswith("K steps unrolled 10") for key in stacks), "the GEMV tiles at K = 5120 were not compiled"
    spilled = {key: stack for key, stack in stacks.items() if stack > 0}
    assert not spilled, f"decode tiles that spill registers (stack bytes a thread): {spilled}"


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the kernel tests run compiled")
def test_gpu_launch_configurations_compile_for_sm90():
    results = compiled_for_sm90(COMPILE_SCRIPT)
    dependent = results.pop("dependent")
    for name, counts in results.items():
        assert counts["gdc_wait"] == counts["gdc_launch"] == 0, f"{name} waits on a kernel it was not told to"
    for name, counts in dependent.items():
        assert counts["gdc_wait"] > 0 and counts["gdc_launch"] > 0, f"{name} with USE_GDC does not wait and signal"
        # waiting changes when a kernel runs, never its arithmetic (its register allocation may move)
        def arithmetic(counts):
            return {k: v for k, v in counts.items() if not k.startswith("gdc") and k != "stack"}

        assert arithmetic(counts) == arithmetic(results[name]), name
    for name in NO_FMA:
        assert results[name]["fma_f64"] == 0, f"{name} contracts float64 a * b + c into an FMA"
    for name in ("hadamard_quant-1536", "hadamard_quant-5120"):
        # its row mixing adds +-y with explicit FMAs (exact); the epilogue's multiply must stay unfused
        assert results[name]["fma_f64"] == results[name]["mixing_fma_f64"] > 0, (
            f"{name}: float64 FMAs beyond the row mixing's ({results[name]})"
        )
    for name in ("int8_causal_conv1d-linear", "int8_causal_conv1d-silu"):
        # its float64 epilogue is a fallback in a branch: compiled in, so the FMA check above sees it
        assert results[name]["mul_f64"] > 0, f"{name} has no float64 epilogue"
    for name in ("int8_linear-codes-128x256", "int8_linear-codes-64x64-k_masked", "int8_linear-f32-128x128",
                 "int8_linear-codes-16x64-swap_ab", "int8_linear-f32-16x64-swap_ab-split_k4"):  # 64 weight rows on wgmma's M side, 16 tokens on its N side
        assert results[name]["wgmma_s8"] > 0, f"{name} does not use Hopper's int8 wgmma"
    # other 16-row decode tiles are too small for wgmma: int8 mma.sync
    for name in ("int8_linear_conv_step-linear", "int8_linear_conv_step-linear-split_k4"):
        assert results[name]["mma_s8"] > 0, f"{name}: the fused in_proj + conv step does not use int8 mma"
    for name in ("selective_state_update-int8-dt_proj", "selective_state_update-int8-dt_proj-rows",
                 "selective_state_update-int8-dt_proj-batch16"):
        assert results[name]["mma_s8"] > 0, f"{name}: the state update's dt_proj is not on int8 mma"
    # The state update's output sums over the state's columns: in every tiling one element a lane, 16 lanes,
    # one warp, so the same butterfly adds them and the output is the same bit for bit whatever the tile
    state_updates = [name for name in results if name.startswith("selective_state_update")]
    assert len(state_updates) == 7
    for name in state_updates:
        assert results[name]["f32_reductions"] == [[1, 16, 1]], f"{name}: {results[name]['f32_reductions']}"
    # softplus's log and the SiLU gate's division on the special-function unit (fast_math), as launched on a GPU
    for name in [n for n in results if n.startswith(("selective_scan", "selective_state_update"))]:
        assert results[name]["lg2_approx"] > 0, f"{name}: softplus does not take lg2.approx"
        if not name.endswith("summary"):  # the summary pass has no output gate
            assert results[name]["rcp_approx"] > 0, f"{name}: the SiLU gate does not take rcp.approx"
    for int8, float_variant in (("selective_state_update-int8", "selective_state_update-fp32"),
                                ("selective_state_update-int8-dt_proj", "selective_state_update-fp32"),
                                ("selective_state_update-int8-dt_proj-rows", "selective_state_update-fp32-rows"),
                                ("selective_scan-int8", "selective_scan-fp16")):
        # The int8 variant's in-kernel code * scale must round as fp32_ssm's dequantised input does: its
        # only FMAs are the recurrence's explicit ones (advance_state), which the float variant has too.
        assert results[int8]["fma_f32"] == results[float_variant]["fma_f32"] > 0, (
            f"{int8} fuses float32 a * b + c that {float_variant} does not: w8a8 and fp32_ssm could differ"
        )
