"""apply() on the mamba-130m config (random weights) on the GPU: every mode runs through the CUDA
kernels; the same calibrated graph (calibrated on the CPU) runs on the GPU and on the CPU (the
references) on identical tokens, and prefill latency is timed on the GPU.

    python benchmarks/gpu_apply_130m.py
"""

import copy
import time

import torch
from transformers import MambaConfig, MambaForCausalLM
from triton.testing import do_bench

import mamba_qpass as qpass

MAMBA_130M = dict(vocab_size=50280, hidden_size=768, state_size=16, num_hidden_layers=24, expand=2, conv_kernel=4,
                  time_step_rank=48, initializer_range=0.02)
MODES = ["w8a8", "fp32_ssm", "float_sim", "fp32_conv"]


def sqnr(a, b):
    return (10 * torch.log10(b.double().pow(2).sum() / (a.double() - b.double()).pow(2).sum())).item()


def main():
    torch.manual_seed(0)
    cpu_model = MambaForCausalLM(MambaConfig(**MAMBA_130M)).eval()
    gpu_model = copy.deepcopy(cpu_model).cuda()
    g = torch.Generator().manual_seed(1)
    calib = [torch.randint(0, 50280, (4, 256), generator=g) for _ in range(4)]
    ids = torch.randint(0, 50280, (2, 512), generator=g)
    start = time.time()
    cal_gpu = qpass.calibrate(gpu_model, [c.cuda() for c in calib], progress=False)
    print(f"calibration on GPU (4 x 4 x 256 tokens): {time.time() - start:.1f} s")
    cal_cpu = qpass.calibrate(cpu_model, calib, progress=False)
    fp_gpu = qpass.capture(gpu_model)
    with torch.no_grad():
        fp_logits = fp_gpu(ids.cuda()).float().cpu()
        hf_logits = cpu_model(ids, use_cache=False).logits
    print(f"fp graph on GPU (Triton float conv + scan) vs transformers eager on CPU: SQNR {sqnr(fp_logits, hf_logits):.1f} dB")
    cpu_scales = dict(cal_cpu.named_buffers())
    worst = max(
        ((a.cpu().double() - cpu_scales[n].double()).abs() / cpu_scales[n].double().abs()).max().item()
        for n, a in cal_gpu.named_buffers() if n.startswith("scales.") and a.is_floating_point()
    )
    print(f"calibration scales, GPU vs CPU calibration: max relative difference {worst:.2e}")
    prefill = torch.randint(0, 50280, (1, 2048), generator=g).cuda()
    fp_ms = do_bench(lambda: fp_gpu(prefill), warmup=5, rep=30, return_mode="median")
    print(f"{'mode':<10} {'SQNR vs fp':>10} {'GPU vs CPU ref':>15} {'top-1 GPU=CPU':>14} {'prefill ms':>11} {'vs fp graph':>11}")
    print(f"{'fp':<10} {'-':>10} {'-':>15} {'-':>14} {fp_ms:>11.2f} {1.0:>10.2f}x")
    for mode in MODES:
        gm_cpu = qpass.apply_mode(cal_cpu, mode)
        gm_gpu = copy.deepcopy(gm_cpu).cuda()
        with torch.no_grad():
            out_gpu = gm_gpu(ids.cuda()).float().cpu()
            out_cpu = gm_cpu(ids).float()
        ms = do_bench(lambda: gm_gpu(prefill), warmup=5, rep=30, return_mode="median")
        agree = (out_gpu.argmax(-1) == out_cpu.argmax(-1)).double().mean().item() * 100
        print(f"{mode:<10} {sqnr(out_gpu, fp_logits):>10.1f} {sqnr(out_gpu, out_cpu):>15.1f} {agree:>13.2f}% {ms:>11.2f} {fp_ms / ms:>10.2f}x")


if __name__ == "__main__":
    main()
