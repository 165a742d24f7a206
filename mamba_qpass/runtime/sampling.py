"""Choosing the next token from the last position's logits: greedy, or sampled with temperature, top-k and
top-p (nucleus) filtering, as transformers' ``generate`` defines them."""

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Sampling:
    """``do_sample=False`` is greedy (argmax; the other fields are not used)."""

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self):
        if not self.do_sample:
            return
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 when sampling, got {self.temperature}: use do_sample=False for greedy")
        if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < 1):
            raise ValueError(f"top_k must be a positive int (or None for no limit), got {self.top_k!r}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] (or None), got {self.top_p!r}")


def _filtered(scores: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """scores with -inf outside the top-k, then outside the smallest set of most likely tokens whose
    probability reaches top_p (the most likely token always stays)."""
    if top_k is not None and top_k < scores.shape[-1]:
        kth = torch.topk(scores, top_k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        ordered, order = torch.sort(scores, dim=-1, descending=True)
        before = ordered.softmax(dim=-1).cumsum(dim=-1) - ordered.softmax(dim=-1)  # mass of the tokens ahead
        drop = before >= top_p
        drop[..., 0] = False
        scores = scores.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return scores


def next_tokens(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None = None) -> torch.Tensor:
    """(batch,) token ids from (batch, vocab) logits."""
    if not sampling.do_sample:
        return logits.argmax(dim=-1)
    scores = _filtered(logits.float() / sampling.temperature, sampling.top_k, sampling.top_p)
    return torch.multinomial(scores.softmax(dim=-1), 1, generator=generator)[:, 0]
