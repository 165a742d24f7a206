"""The modes' contract on the GPU with the embedded checkpoint's real weights: w8a8 (Triton int8 kernels),
fp32_ssm (its int8 scan swapped for dequantise + float scan) and float_sim (float ops only) give the same
int8 code in every tapped tensor and the same logits, bit for bit, on identical tokens."""

from pathlib import Path

import pytest
import torch

import mamba_qpass as qpass
from test_float_sim_on_gpu import _outputs_on_gpu

CKPT = Path(__file__).resolve().parent.parent / "checkpoints" / "gutenberg-mamba-25m"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
# (2, 700): several scan chunks, a partial last one; (1, 1300): one row long enough for the scan's segments
# (summarised, then continued), a partial last one
@pytest.mark.parametrize("shape", [(2, 700), (1, 1300)], ids=["chunks", "segments"])
def test_w8a8_fp32_ssm_and_float_sim_agree_bit_for_bit_on_the_checkpoint(shape):
    from transformers import MambaForCausalLM

    model = MambaForCausalLM.from_pretrained(CKPT).cuda().eval()
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    calibration = [torch.randint(0, vocab, (4, 256), generator=g).cuda() for _ in range(2)]
    calibrated = qpass.calibrate(model, calibration, progress=False)
    ids = torch.randint(0, vocab, shape, generator=g).cuda()
    outputs = {
        mode: _outputs_on_gpu(qpass.apply_mode(calibrated, mode), ids) for mode in ("w8a8", "fp32_ssm", "float_sim")
    }
    codes = [name for name, t in outputs["w8a8"].items() if t.dtype == torch.int8]
    assert len(codes) >= 4 * model.config.num_hidden_layers
    for mode in ("fp32_ssm", "float_sim"):
        for name in [*codes, "logits"]:
            ours, theirs = outputs[mode][name], outputs["w8a8"][name]
            different = (ours != theirs.to(ours.dtype)).sum().item()
            assert different == 0, f"{mode} {name}: {different} of {theirs.numel()} values differ from w8a8"
