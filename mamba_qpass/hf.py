"""A quantised graph as a HF-style causal LM: ``model(input_ids).logits``, ``.config``, ``.device``."""

import itertools

import torch
import torch.fx as fx
from torch import nn
from transformers.modeling_outputs import CausalLMOutput


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
    if input_ids.numel():
        low, high = torch.aminmax(input_ids)
        low, high = int(low), int(high)
        if low < 0 or high >= vocab_size:
            raise ValueError(
                f"input_ids hold token ids from {low} to {high}, outside the model's vocabulary [0, {vocab_size}): "
                "tokenise with the model's own tokenizer"
            )


# Arguments HF-style callers pass that change nothing here: there is no cache, and the output is always
# an object with .logits.
IGNORED_FORWARD_ARGS = frozenset({"use_cache", "return_dict"})


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

    @property
    def device(self) -> torch.device:
        return next(itertools.chain(self.gm.parameters(), self.gm.buffers())).device

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
        return CausalLMOutput(logits=self.gm(input_ids))

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
