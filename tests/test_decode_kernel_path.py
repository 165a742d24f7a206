"""Without a GPU, decode through the kernels CUDA would run: in a subprocess, every op's CUDA implementation
(cuda_kernels.py: the Triton kernels, and for a one-token call with a state the step kernels) is registered
as its CPU implementation and run in Triton's interpreter. The decode steps must reach the step kernels,
give the references' tokens, and keep w8a8, fp32_ssm and float_sim equal bit for bit, states included.
This checks the dispatch (which kernel, which argument order) that the GPU tests otherwise check alone."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).resolve().parent

SCRIPT = r"""
import json, sys, torch
import mamba_qpass as qpass
from mamba_qpass import ops
import mamba_qpass.cuda_kernels  # noqa: F401  (registers the CUDA implementations)
from mamba_qpass.capture import with_state
from models import random_mamba
from test_w8a8 import token_batches

model = random_mamba(tie_word_embeddings=False)
calibrated = qpass.calibrate(model, token_batches(97), progress=False)
graphs = {mode: qpass.apply_mode(calibrated, mode) for mode in ("w8a8", "fp32_ssm", "float_sim")}
ids = torch.randint(1, 97, (3, 9), generator=torch.Generator().manual_seed(0))

@torch.no_grad()
def decode(mode):
    step = with_state(graphs[mode], last_logits_only=True)
    logits, states = step(ids[:, :5])
    pieces = [logits]
    for t in range(5, 9):
        logits, states = step(ids[:, t : t + 1], *states)
        pieces.append(logits)
    return torch.cat(pieces, 1), states

reference = {mode: decode(mode) for mode in graphs}
calls = {}
STATE_POSITION = {"causal_conv1d": 4, "selective_scan": 9, "int8_causal_conv1d": 6, "int8_selective_scan": 11}
for name in ("causal_conv1d", "selective_scan", "int8_selective_scan", "int8_causal_conv1d", "int8_linear",
             "rms_norm_quant", "hadamard_quant", "quantize"):
    op = getattr(ops, name)
    def counted(*args, _kernel=op._backend_fns["cuda"], _name=name, **kwargs):
        position = STATE_POSITION.get(_name, len(args))
        state = kwargs.get("initial_state", args[position] if position < len(args) else None)
        step = state is not None and args[0].shape[1] == 1
        calls[_name + ("-step" if step else "")] = calls.get(_name + ("-step" if step else ""), 0) + 1
        return _kernel(*args, **kwargs)
    op.register_kernel("cpu")(counted)
kernels = {mode: decode(mode) for mode in graphs}
w8a8_logits, w8a8_states = kernels["w8a8"]
print(json.dumps({
    "calls": calls,
    "same_tokens_as_references": {m: torch.equal(kernels[m][0].argmax(-1), reference[m][0].argmax(-1)) for m in graphs},
    "max_logit_difference": {m: (kernels[m][0] - reference[m][0]).abs().max().item() for m in graphs},
    "equal_to_w8a8": {
        m: torch.equal(kernels[m][0], w8a8_logits)
        and all(torch.equal(a.float(), b.float()) for a, b in zip(kernels[m][1], w8a8_states))
        for m in ("fp32_ssm", "float_sim")
    },
}))
"""


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the GPU tests decode through the kernels")
def test_decode_through_the_cuda_kernels_in_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)])}
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    calls = result["calls"]
    # 2 layers x 4 one-token steps x 3 modes (the float scan serves fp32_ssm and float_sim; float_sim's conv is
    # the float conv over codes)
    assert calls["int8_selective_scan-step"] == 2 * 4 and calls["selective_scan-step"] == 2 * 4 * 2
    assert calls["int8_causal_conv1d-step"] == 2 * 4 * 2 and calls["causal_conv1d-step"] == 2 * 4
    assert all(result["same_tokens_as_references"].values())
    assert all(d < 1e-3 for d in result["max_logit_difference"].values())
    assert result["equal_to_w8a8"] == {"fp32_ssm": True, "float_sim": True}
