"""A quantised graph as a HF-style causal LM: ``model(input_ids).logits``, ``.config``, ``.device``."""

import warnings

import torch
import torch.fx as fx
from torch import nn
from transformers.modeling_outputs import CausalLMOutput

from mamba_qpass.capture import ssm_state_positions, with_state
from mamba_qpass.exact_inductor import compile_exact
from mamba_qpass.graph_replay import CudaGraphReplay
from mamba_qpass.graph_utils import graph_device
from mamba_qpass.runtime.decode_step import CudaGraphDecodeStep, EagerDecodeStep
from mamba_qpass.runtime.direct_calls import cuda_graph_blockers, direct_calls
from mamba_qpass.runtime.generate import generate
from mamba_qpass.runtime.sampling import Sampling
from mamba_qpass.runtime.state_precision import check_ssm_state_dtype, stored


def _check_right_padded(attention_mask: torch.Tensor) -> None:
    """Right padding leaves every real token's logits unchanged (the model is causal); anything else
    would need the mask inside the layers, which the graph does not take."""
    mask = attention_mask.bool()
    if not torch.equal(mask, mask.cummin(dim=-1).values):
        raise ValueError(
            "attention_mask must be right-padded (each row ones then zeros): pad on the right "
            "(tokenizer.padding_side = 'right'); left padding is not supported"
        )


def _check_input_ids(input_ids: torch.Tensor, vocab_size: int) -> None:
    """Token ids the embedding can look up; otherwise a message with the fix instead of an IndexError
    from inside the graph (or a device-side assert on CUDA). Reads the ids' range: one host sync."""
    if not isinstance(input_ids, torch.Tensor) or input_ids.dtype not in (torch.int64, torch.int32):
        kind = f"{input_ids.dtype} tensor" if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
        raise ValueError(f"input_ids must be an integer tensor of token ids (torch.long), got a {kind}")
    if input_ids.dim() != 2:
        raise ValueError(
            f"input_ids must have shape (batch, seq), got {tuple(input_ids.shape)}: for one sequence use ids[None]"
        )
    if torch.compiler.is_compiling():
        # Reading the range back to the host would break the compiled graph in two; the assert stays in it.
        in_range = ((input_ids >= 0) & (input_ids < vocab_size)).all()
        torch._assert_async(in_range, f"input_ids hold token ids outside the model's vocabulary [0, {vocab_size}): "
                            "tokenise with the model's own tokenizer")
    elif input_ids.numel():
        low, high = torch.aminmax(input_ids)
        low, high = int(low), int(high)
        if low < 0 or high >= vocab_size:
            raise ValueError(
                f"input_ids hold token ids from {low} to {high}, outside the model's vocabulary [0, {vocab_size}): "
                "tokenise with the model's own tokenizer"
            )


# Arguments HF-style callers pass that change nothing here: forward keeps no cache (generate keeps its
# own states), and the output is always an object with .logits / generate's a tensor of token ids.
IGNORED_FORWARD_ARGS = frozenset({"use_cache", "return_dict"})
IGNORED_GENERATE_ARGS = frozenset({"use_cache", "return_dict_in_generate"})
# transformers' GenerationConfig default: at most 20 tokens in all, prompt included
DEFAULT_MAX_LENGTH = 20


def _token_ids(value, name: str) -> list[int]:
    if value is None:
        return []
    ids = [value] if isinstance(value, int) else list(value)
    if not all(isinstance(i, int) for i in ids):
        raise ValueError(f"{name} must be a token id or a list of them, got {value!r}")
    return ids


def _new_token_budget(max_new_tokens: int | None, max_length: int | None, prompt_length: int) -> int:
    if max_new_tokens is None:
        max_new_tokens = (max_length if max_length is not None else DEFAULT_MAX_LENGTH) - prompt_length
    if max_new_tokens < 1:
        raise ValueError(
            f"nothing to generate: max_new_tokens is {max_new_tokens} (prompt length {prompt_length}, max_length "
            f"{max_length}); pass max_new_tokens >= 1"
        )
    return max_new_tokens


class QuantizedMambaForCausalLM(nn.Module):
    """Wraps a lowered graph. ``forward(input_ids, attention_mask=None)`` returns an object with
    ``.logits`` (batch, seq, vocab) float; any batch size and length, 0 included (a (batch, 0) input gives
    (batch, 0, vocab) logits, as slicing would)."""

    main_input_name = "input_ids"

    def __init__(self, graph: fx.GraphModule, config, mode: str):
        super().__init__()
        self.gm = graph
        self.config = config
        self.mode = mode
        # generate's step graph and CUDA graphs, built on first use for the device the model is then on
        self._runtime: dict = {}
        self._eager: dict = {}  # gm with its ops called directly, for the device it was made on
        self._prefill_replay: CudaGraphReplay | None = None
        self._compiled = None  # gm through inductor, after compile()

    def compile(self, mode: str | None = None, dynamic: bool = True) -> None:
        """Run ``forward`` through inductor with every rounding of the graph kept (``qpass.compile_exact``):
        its elementwise ops fused into Triton kernels (C++ ones on a CPU), the same logits bit for bit
        (float_sim gains most: its epilogues are many small float ops). It compiles at the first
        call, and again for a new kind of shape (``dynamic``: one graph for every length and batch size
        but 1). Replaces ``nn.Module.compile``, whose inductor defaults may change a rounding. ``mode`` is
        an inductor mode ("reduce-overhead", "max-autotune"); ``generate``'s decode steps are not compiled."""
        self._compiled = compile_exact(self.gm, mode=mode, dynamic=dynamic)
        if self._prefill_replay is not None:
            self._prefill_replay = CudaGraphReplay(self._compiled, self._prefill_replay.max_graphs)

    def enable_cuda_graphs(self, max_graphs: int = 4) -> None:
        """Run ``forward`` as a CUDA graph captured per input shape (the ``max_graphs`` most recently used
        kept): the same kernels and outputs bit for bit, without the host's cost of launching about ten
        kernels a layer. Pays when one shape recurs (a server's fixed batch, a benchmark); each new shape
        costs three forwards to capture and holds its own activations. Call again after moving the model;
        ``disable_cuda_graphs()`` drops the graphs. After ``compile()`` the compiled forward is captured."""
        if self.device.type != "cuda":
            raise ValueError(f"CUDA graphs need the model on CUDA, it is on {self.device}: move it with .cuda() first")
        self._prefill_replay = CudaGraphReplay(self.gm if self._compiled is None else self._compiled, max_graphs)

    def disable_cuda_graphs(self) -> None:
        self._prefill_replay = None

    @property
    def device(self) -> torch.device:
        return graph_device(self.gm)

    @property
    def dtype(self) -> torch.dtype:
        return self.gm.meta.get("dtype", torch.float32)

    def tie_weights(self, *args, **kwargs) -> None:
        """Nothing to tie: the graph holds its own (possibly int8) head. Callers such as lm-eval call
        this on load; re-tying would overwrite a quantised head with the float embedding."""

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs) -> CausalLMOutput:
        unsupported = sorted(k for k, v in kwargs.items() if k not in IGNORED_FORWARD_ARGS and v is not None)
        if unsupported:
            raise ValueError(
                f"forward does not take {unsupported}: the quantised model computes logits from input_ids "
                "(and a right-padded attention_mask) only"
            )
        if isinstance(input_ids, torch.Tensor) and input_ids.device != self.device:  # before reading the ids
            raise ValueError(
                f"input_ids are on {input_ids.device} but the model is on {self.device}: move them with .to(model.device)"
            )
        _check_input_ids(input_ids, self.config.vocab_size)
        if attention_mask is not None:
            _check_right_padded(attention_mask)
        if self._prefill_replay is not None:
            return CausalLMOutput(logits=self._prefill_replay(input_ids))
        if torch.compiler.is_compiling():  # the graph keeps its ops, which Dynamo sees as single nodes
            return CausalLMOutput(logits=self.gm(input_ids))
        return CausalLMOutput(logits=(self._eager_graph() if self._compiled is None else self._compiled)(input_ids))

    def _eager_graph(self) -> fx.GraphModule:
        """``gm`` with its ops called directly (``runtime/direct_calls.py``: the same functions and outputs
        without torch's per-op dispatch cost), made again when ``gm`` or its device changes."""
        if self._eager.get("source") is not self.gm or self._eager.get("device") != self.device:
            self._eager = {"source": self.gm, "device": self.device, "graph": direct_calls(self.gm)}
        return self._eager["graph"]

    def _generation_runtime(self) -> dict:
        """The step graph (``with_state`` of ``gm``, sharing its tensors), the same with its ops called
        directly for the prefill and eager steps, and the CUDA graphs captured per batch size (from the
        step graph, whose ops the decode rewrites match); rebuilt when the model has moved, since a move
        replaces the tensors they hold."""
        device = self.device
        if self._runtime.get("device") != device:
            step_graph = with_state(self.gm, last_logits_only=True)
            self._runtime = {
                "device": device,
                "step_graph": step_graph,
                "eager_step_graph": direct_calls(step_graph),
                "cuda_graphs": {},
                "pool": torch.cuda.graph_pool_handle() if device.type == "cuda" else None,
            }
        return self._runtime

    def _decode_step(self, states: tuple[torch.Tensor, ...], use_cuda_graph: bool,
                     ssm_state_dtype: torch.dtype = torch.float32):
        runtime = self._generation_runtime()
        step_graph = runtime["step_graph"]
        if use_cuda_graph:
            states = stored(states, ssm_state_positions(step_graph), ssm_state_dtype)
            key = tuple((tuple(s.shape), s.dtype) for s in states)
            if key not in runtime["cuda_graphs"]:
                runtime["cuda_graphs"][key] = CudaGraphDecodeStep(step_graph, states, runtime["pool"])
            step = runtime["cuda_graphs"][key]
        else:
            step = EagerDecodeStep(runtime["eager_step_graph"], ssm_state_dtype)
        step.start(states)
        return step

    def _use_cuda_graph(self, asked: bool | None) -> bool:
        """Whether decode steps replay a CUDA graph: by default on CUDA when the mode's graph can be captured
        with its ops called directly (every mode's can, its per-tensor (de)quantise nodes given their
        constant scales as numbers); a graph that still reads a scale on the host runs its steps eagerly,
        with a warning saying why."""
        if asked and self.device.type != "cuda":
            raise ValueError(f"use_cuda_graph needs the model on CUDA, it is on {self.device}")
        if asked is False or self.device.type != "cuda":
            return False
        blockers = cuda_graph_blockers(self._eager_graph())
        if blockers and asked:
            raise ValueError(
                f"the {self.mode} graph cannot be captured as a CUDA graph: {', '.join(blockers)} read their scale "
                "on the host; pass use_cuda_graph=False"
            )
        if blockers:
            warnings.warn(
                f"{self.mode}: decode steps run eagerly, not as a CUDA graph, since {', '.join(blockers)} read their "
                "scale on the host (pass use_cuda_graph=False to silence this)",
                stacklevel=3,
            )
        return not blockers

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        max_new_tokens: int | None = None,
        max_length: int | None = None,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int | None = 50,
        top_p: float | None = 1.0,
        eos_token_id: int | list[int] | None = None,
        pad_token_id: int | None = None,
        streamer=None,
        generator: torch.Generator | None = None,
        stopping_criteria=None,
        use_cuda_graph: bool | None = None,
        ssm_state_dtype: torch.dtype = torch.float32,
        **kwargs,
    ) -> torch.Tensor:
        """Token ids (batch, prompt + new), continuing ``input_ids`` as transformers' ``generate`` does.

        Each prompt is prefilled over its real tokens (``attention_mask`` 1s, contiguous: left or right
        padding), then all rows decode together from their layers' states, one token a step: greedy, or with
        ``do_sample`` sampled after ``temperature``, ``top_k`` (transformers' default 50) and ``top_p``,
        drawing from ``generator`` (a ``torch.Generator`` on the model's device) for reproducible samples.
        ``max_new_tokens`` (or ``max_length``, prompt included; default 20 in all) bounds the new tokens; a
        row stops at ``eos_token_id`` (default: the config's; ``[]`` for none) or when ``stopping_criteria``
        (transformers' StoppingCriteriaList) says so, and is padded with ``pad_token_id`` (default: the
        config's, else the first eos) after. ``streamer`` (e.g. transformers' TextStreamer, batch 1) gets
        the prompt, then each new token. On CUDA each decode step replays a CUDA graph captured once per
        batch size (``use_cuda_graph=False`` runs it eagerly; qdq, fp32_ssm and fp32_conv, whose dequantise
        nodes read their scale on the host, always do, with a warning); sampling runs after the graph.
        ``ssm_state_dtype=torch.float16`` keeps the SSM states in float16 between decode steps: half their
        memory and traffic, at an accuracy cost measured in ``benchmarks/RESULTS.md``
        (``runtime/state_precision.py``); decoding then no longer equals re-running the prefix exactly.
        """
        unsupported = sorted(k for k, v in kwargs.items() if k not in IGNORED_GENERATE_ARGS and v is not None)
        if unsupported:
            raise ValueError(
                f"generate does not take {unsupported}: it takes max_new_tokens, max_length, do_sample, temperature, "
                "top_k, top_p, eos_token_id, pad_token_id, attention_mask, streamer, generator, stopping_criteria"
            )
        _check_input_ids(input_ids, self.config.vocab_size)
        if input_ids.device != self.device:
            raise ValueError(
                f"input_ids are on {input_ids.device} but the model is on {self.device}: move them with .to(model.device)"
            )
        if input_ids.shape[1] == 0:
            raise ValueError("input_ids hold no tokens: generation continues a prompt of at least one token")
        if generator is not None and generator.device.type != self.device.type:
            raise ValueError(
                f"generator is on {generator.device} but the model is on {self.device}: "
                f"use torch.Generator(device=model.device).manual_seed(seed)"
            )
        eos = _token_ids(self.config.eos_token_id if eos_token_id is None else eos_token_id, "eos_token_id")
        if pad_token_id is None:
            pad_token_id = self.config.pad_token_id if self.config.pad_token_id is not None else (eos[0] if eos else None)
        check_ssm_state_dtype(ssm_state_dtype)
        use_cuda_graph = self._use_cuda_graph(use_cuda_graph)
        return generate(
            self._generation_runtime()["eager_step_graph"],
            lambda states: self._decode_step(states, use_cuda_graph, ssm_state_dtype),
            input_ids,
            attention_mask,
            _new_token_budget(max_new_tokens, max_length, input_ids.shape[1]),
            Sampling(do_sample, temperature, top_k, top_p),
            eos,
            pad_token_id,
            generator,
            streamer,
            stopping_criteria,
        )

    def save_pretrained(self, save_directory, tokenizer=None):
        """``qpass.save(self, save_directory, tokenizer)``: a folder ``from_pretrained`` loads."""
        from mamba_qpass.serialize import save  # serialize imports this module, so not at the top

        return save(self, save_directory, tokenizer)

    @classmethod
    def from_pretrained(cls, directory, model=None, device=None) -> "QuantizedMambaForCausalLM":
        """The model ``save_pretrained`` (or ``qpass.save`` of a model) wrote; see ``qpass.load``."""
        from mamba_qpass.serialize import SavedModelError, load

        loaded = load(directory, model, device)
        if not isinstance(loaded, cls):
            raise SavedModelError(
                f"{directory} holds a graph (what qpass.apply_mode or qpass.calibrate return), not a model: "
                "load it with qpass.load"
            )
        return loaded

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"
