"""QuantizedMambaForCausalLM.generate: prefill-then-decode gives the tokens that re-running the whole prefix
gives, in every mode and for batched prompts of different lengths; transformers' arguments (eos, pad,
max_length, sampling with a seeded generator, streamer, stopping criteria) behave as there; on CUDA the
captured decode step replays exactly what the eager step computes."""

import warnings

import pytest
import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

import mamba_qpass as qpass
from mamba_qpass.hf import QuantizedMambaForCausalLM
from mamba_qpass.runtime.decode_step import CudaGraphDecodeStep, EagerDecodeStep
from mamba_qpass.runtime.generate import prefill
from mamba_qpass.runtime.sampling import Sampling, _filtered
from models import random_mamba
from test_w8a8 import token_batches

MODES = ["fp", "qdq", "w8a8", "fp32_ssm", "float_sim", "fp32_conv"]
NEW = 8
# Untied head: with the head tied to the embedding a random model's greedy choice is its input token,
# over and over, which would not show a lost state.
UNTIED = dict(tie_word_embeddings=False)


@pytest.fixture(scope="module")
def models():
    model = random_mamba(**UNTIED)
    calibrated = qpass.calibrate(model, token_batches(97), progress=False)
    graphs = {mode: qpass.capture(model) if mode == "fp" else qpass.apply_mode(calibrated, mode) for mode in MODES}
    return {mode: QuantizedMambaForCausalLM(gm, model.config, mode) for mode, gm in graphs.items()}


def _prompts():
    g = torch.Generator().manual_seed(3)
    return [torch.randint(1, 97, (n,), generator=g) for n in (5, 9, 1, 9)]


def _padded(prompts, side: str):
    width = max(p.shape[0] for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        span = slice(width - p.shape[0], width) if side == "left" else slice(0, p.shape[0])
        ids[i, span], mask[i, span] = p, 1
    return ids, mask


@torch.no_grad()
def _greedy_by_full_prefix(model, prompt, new):
    """The reference: the whole sequence through the logits graph again for every new token."""
    ids = prompt[None]
    for _ in range(new):
        ids = torch.cat([ids, model(ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids[0, prompt.shape[0] :]


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("mode", MODES)
def test_greedy_decode_equals_rerunning_the_prefix(mode, side, models):
    model = models[mode]
    prompts = _prompts()
    ids, mask = _padded(prompts, side)
    out = model.generate(ids, attention_mask=mask, max_new_tokens=NEW, eos_token_id=[])
    assert out.shape == (len(prompts), ids.shape[1] + NEW) and torch.equal(out[:, : ids.shape[1]], ids)
    for i, prompt in enumerate(prompts):
        expected = _greedy_by_full_prefix(model, prompt, NEW)
        assert torch.equal(out[i, ids.shape[1] :], expected), f"prompt {i}: {out[i, ids.shape[1]:]} vs {expected}"
    assert len(set(out[:, -NEW:].flatten().tolist())) > NEW, "the test model should not repeat one token"


def test_prefill_gives_each_prompt_its_own_state(models):
    """A prompt prefilled inside a batch of other lengths ends in the state it ends in alone (exactly: int8
    datapath); its logits agree to float32 rounding (the float head's GEMM over another number of rows)."""
    step = models["w8a8"]._generation_runtime()["step_graph"]
    prompts = _prompts()
    logits, states = prefill(step, prompts)
    for i, prompt in enumerate(prompts):
        alone_logits, alone_states = prefill(step, [prompt])
        torch.testing.assert_close(logits[i], alone_logits[0], rtol=1e-5, atol=1e-6)
        for together, alone in zip(states, alone_states):
            assert torch.equal(together[i], alone[0])


def test_eos_stops_a_row_and_pads_it(models):
    model = models["w8a8"]
    ids, mask = _padded(_prompts(), "left")
    free = model.generate(ids, attention_mask=mask, max_new_tokens=NEW, eos_token_id=[])
    eos = int(free[0, ids.shape[1] + 2])  # row 0's third new token
    out = model.generate(ids, attention_mask=mask, max_new_tokens=NEW, eos_token_id=eos, pad_token_id=-1 % 97)
    for row in range(len(ids)):
        new = free[row, ids.shape[1] :].tolist()
        got = out[row, ids.shape[1] :].tolist()
        stop = new.index(eos) + 1 if eos in new else len(got)
        assert got[:stop] == new[:stop] and all(t == 96 for t in got[stop:])
    everyone = model.generate(ids[:1], attention_mask=mask[:1], max_new_tokens=NEW, eos_token_id=eos)
    assert everyone.shape[1] == ids.shape[1] + 3, "generation ends when every row has ended"


def test_max_length_counts_the_prompt(models):
    ids, mask = _padded(_prompts(), "left")
    out = models["w8a8"].generate(ids, attention_mask=mask, max_length=ids.shape[1] + 3, eos_token_id=[])
    assert out.shape[1] == ids.shape[1] + 3
    with pytest.raises(ValueError, match="max_new_tokens >= 1"):
        models["w8a8"].generate(ids, max_length=ids.shape[1])


def test_sampling_is_reproducible_with_a_seeded_generator(models):
    model = models["w8a8"]
    ids, mask = _padded(_prompts(), "left")

    def sample(seed, **kw):
        gen = torch.Generator().manual_seed(seed)
        return model.generate(ids, attention_mask=mask, max_new_tokens=NEW, do_sample=True, generator=gen, eos_token_id=[], **kw)

    assert torch.equal(sample(1), sample(1))
    assert not torch.equal(sample(1), sample(2))
    greedy = model.generate(ids, attention_mask=mask, max_new_tokens=NEW, eos_token_id=[])
    assert torch.equal(sample(1, top_k=1), greedy)
    assert torch.equal(sample(2, top_p=1e-6), greedy)
    assert torch.equal(sample(3, temperature=1e-4), greedy)


@pytest.mark.parametrize("top_k,top_p", [(5, None), (None, 0.3), (None, 0.9), (7, 0.5)])
def test_filters_match_transformers(top_k, top_p):
    scores = torch.randn(4, 97, generator=torch.Generator().manual_seed(0)) * 3
    expected = scores
    if top_k is not None:
        expected = TopKLogitsWarper(top_k)(None, expected)
    if top_p is not None:
        expected = TopPLogitsWarper(top_p)(None, expected)
    got = _filtered(scores, top_k, top_p)
    assert torch.equal(got.isinf(), expected.isinf())
    assert (~got.isinf()).sum() < scores.numel()


def test_streamer_gets_the_prompt_then_each_token(models):
    class Recorder:
        def __init__(self):
            self.puts, self.ended = [], False

        def put(self, value):
            self.puts.append(value.tolist())

        def end(self):
            self.ended = True

    ids = _prompts()[0][None]
    recorder = Recorder()
    out = models["w8a8"].generate(ids, max_new_tokens=4, eos_token_id=[], streamer=recorder)
    assert recorder.puts == [ids.tolist(), *[[t] for t in out[0, -4:].tolist()]] and recorder.ended
    with pytest.raises(ValueError, match="a streamer takes one sequence"):
        models["w8a8"].generate(torch.ones(2, 3, dtype=torch.long), max_new_tokens=2, streamer=recorder)


def test_stopping_criteria_stop_rows(models):
    class AfterTwo(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), input_ids.shape[1] >= prompt_length + 2)

    ids, mask = _padded(_prompts(), "left")
    prompt_length = ids.shape[1]
    out = models["w8a8"].generate(ids, attention_mask=mask, max_new_tokens=NEW, stopping_criteria=StoppingCriteriaList([AfterTwo()]))
    assert out.shape[1] == prompt_length + 2


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(attention_mask=torch.tensor([[1, 0, 1]])), "zeros between its tokens"),
        (dict(attention_mask=torch.tensor([[0, 0, 0]])), "has no tokens"),
        (dict(attention_mask=torch.tensor([[1, 1]])), "attention_mask has shape"),
        (dict(num_beams=4), "does not take"),
        (dict(do_sample=True, temperature=0.0), "temperature must be > 0"),
        (dict(do_sample=True, top_p=1.5), "top_p must be in"),
        (dict(use_cuda_graph=True), "needs the model on CUDA"),
        (dict(ssm_state_dtype=torch.bfloat16), "ssm_state_dtype must be one of"),
    ],
)
def test_bad_arguments_are_refused(kwargs, match, models):
    with pytest.raises(ValueError, match=match):
        models["w8a8"].generate(torch.tensor([[5, 6, 7]]), max_new_tokens=2, **kwargs)


def test_float16_ssm_states_keep_the_modes_alike(models):
    """SSM states kept in float16 between steps: w8a8, fp32_ssm and float_sim still decode the same tokens
    (they round the same values); the stored states are float16, the conv states unchanged; the first
    step's logits stay close to the float32-state ones."""
    ids, mask = _padded(_prompts(), "left")
    tokens = {mode: models[mode].generate(ids, attention_mask=mask, max_new_tokens=NEW, eos_token_id=[],
                                          ssm_state_dtype=torch.float16)
              for mode in ("w8a8", "fp32_ssm", "float_sim")}
    assert torch.equal(tokens["fp32_ssm"], tokens["w8a8"]) and torch.equal(tokens["float_sim"], tokens["w8a8"])
    qmodel = models["w8a8"]
    _, states = prefill(qmodel._generation_runtime()["step_graph"], list(ids))
    half, full = qmodel._decode_step(states, False, torch.float16), qmodel._decode_step(states, False)
    assert [s.dtype for s in half.states[1::2]] == [torch.float16] * (len(states) // 2)
    assert [s.dtype for s in half.states[0::2]] == [s.dtype for s in states[0::2]]
    torch.testing.assert_close(half(ids[:, -1:]), full(ids[:, -1:]), rtol=1e-2, atol=1e-2)


def test_modes_that_read_scales_on_the_host_are_captured_with_their_ops_called_directly(models):
    from mamba_qpass.runtime.direct_calls import cuda_graph_blockers

    blocked = {mode for mode, model in models.items() if cuda_graph_blockers(model.gm)}
    assert blocked == {"qdq", "fp32_ssm", "fp32_conv"}
    assert not [mode for mode, model in models.items() if cuda_graph_blockers(model._eager_graph())]


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["fp32_ssm", "fp32_conv", "qdq"])
def test_modes_with_dequantise_nodes_decode_as_cuda_graphs(mode):
    """Their step is captured with the scales as numbers: no warning, and the eager step's tokens; fp32_ssm's
    are also w8a8's."""
    model = random_mamba(**UNTIED).cuda()
    calibrated = qpass.calibrate(model, [b.cuda() for b in token_batches(97)], progress=False)
    qmodel = QuantizedMambaForCausalLM(qpass.apply_mode(calibrated, mode), model.config, mode)
    ids = torch.randint(1, 97, (2, 5), device="cuda")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        graphed = qmodel.generate(ids, max_new_tokens=4, eos_token_id=[])
    assert not [w for w in caught if "eagerly" in str(w.message)]
    assert torch.equal(graphed, qmodel.generate(ids, max_new_tokens=4, eos_token_id=[], use_cuda_graph=False))
    if mode == "fp32_ssm":
        w8a8 = QuantizedMambaForCausalLM(qpass.apply_mode(calibrated, "w8a8"), model.config, "w8a8")
        assert torch.equal(graphed, w8a8.generate(ids, max_new_tokens=4, eos_token_id=[]))


@pytest.mark.gpu
def test_a_graph_that_cannot_be_captured_decodes_eagerly_on_gpu_and_says_so(monkeypatch):
    import mamba_qpass.hf

    model = random_mamba(**UNTIED).cuda()
    calibrated = qpass.calibrate(model, [b.cuda() for b in token_batches(97)], progress=False)
    qmodel = QuantizedMambaForCausalLM(qpass.apply_mode(calibrated, "w8a8"), model.config, "w8a8")
    ids = torch.randint(1, 97, (2, 5), device="cuda")
    # a host-reading op left after direct calls (a scale that is not a constant of the graph)
    monkeypatch.setattr(mamba_qpass.hf, "cuda_graph_blockers", lambda graph: ["some_op_reading_on_the_host"])
    with pytest.warns(UserWarning, match="decode steps run eagerly"):
        out = qmodel.generate(ids, max_new_tokens=4, eos_token_id=[])
    assert torch.equal(out, qmodel.generate(ids, max_new_tokens=4, eos_token_id=[], use_cuda_graph=False))
    with pytest.raises(ValueError, match="cannot be captured as a CUDA graph"):
        qmodel.generate(ids, max_new_tokens=4, use_cuda_graph=True)


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["w8a8", "float_sim", "fp"])
@pytest.mark.parametrize("batch", [1, 16, 64])
def test_cuda_graph_decode_equals_eager_decode(mode, batch):
    """The captured step replays the eager step's kernels on the same buffers: identical logits and states
    every step; and generate() gives the same tokens either way."""
    model = random_mamba(**UNTIED).cuda()
    if mode == "fp":
        graph = qpass.capture(model)
    else:
        graph = qpass.apply_mode(qpass.calibrate(model, [b.cuda() for b in token_batches(97)], progress=False), mode)
    qmodel = QuantizedMambaForCausalLM(graph, model.config, mode)
    step_graph = qmodel._generation_runtime()["step_graph"]
    prompts = torch.randint(1, 97, (batch, 11), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    _, states = prefill(step_graph, list(prompts))
    eager, captured = EagerDecodeStep(step_graph), CudaGraphDecodeStep(step_graph, states)
    eager.start(states)
    captured.start(states)
    tokens = prompts[:, -1:]
    for _ in range(6):
        expected = eager(tokens)
        assert torch.equal(captured(tokens), expected)
        for mine, theirs in zip(captured.states, eager.states):
            assert torch.equal(mine, theirs)
        tokens = expected.argmax(-1, keepdim=True)
    with_graph = qmodel.generate(prompts, max_new_tokens=NEW, eos_token_id=[])
    without = qmodel.generate(prompts, max_new_tokens=NEW, eos_token_id=[], use_cuda_graph=False)
    assert torch.equal(with_graph, without)


@pytest.mark.gpu
def test_cuda_graph_decode_with_float16_ssm_states_equals_eager():
    """The in-place state update reads and writes the float16 state directly, with the eager step's
    roundings: identical logits and states every step."""
    model = random_mamba(**UNTIED).cuda()
    graph = qpass.apply_mode(qpass.calibrate(model, [b.cuda() for b in token_batches(97)], progress=False), "w8a8")
    qmodel = QuantizedMambaForCausalLM(graph, model.config, "w8a8")
    prompts = torch.randint(1, 97, (4, 11), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    _, states = prefill(qmodel._generation_runtime()["step_graph"], list(prompts))
    eager, captured = qmodel._decode_step(states, False, torch.float16), qmodel._decode_step(states, True, torch.float16)
    tokens = prompts[:, -1:]
    for _ in range(6):
        expected = eager(tokens)
        assert torch.equal(captured(tokens), expected)
        for mine, theirs in zip(captured.states, eager.states):
            assert mine.dtype == theirs.dtype and torch.equal(mine, theirs)
        tokens = expected.argmax(-1, keepdim=True)
